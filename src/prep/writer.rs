//! The single shard writer of `dmnet-prep`: each study's row groups, already encoded and
//! compressed by the worker that prepared it ([`crate::shard::writer::RowGroupEncoder`]), are
//! appended to `data/part-NNNNN.parquet` (parts cut between studies once they reach
//! `file_bytes`), written to a hidden temporary name and renamed when complete, and the resume
//! journal (`.journal-wI.jsonl`): before a part is renamed, one line per study in it is appended
//! and synced. A study counts as finished only when its journal line names a part file that
//! exists, so after `kill -9` a rerun redoes exactly the studies whose rows are not in a complete
//! part: no partial part is ever visible and no row is written twice. A part file that no
//! journal line names was not written by this ingest.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::PrepConfig;
use crate::shard::folder::{self, StudyStatus};
use crate::shard::schema::SliceShape;
use crate::shard::writer::{EncodedRowGroup, PartFile, PartInfo, PartOptions};
use crate::shard::{Role, Split};
use crate::{Error, Result};

/// One study's outcome, as journaled and listed in `_manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyEntry {
    /// Study name (layout-specific, stable).
    pub study: String,
    /// Source path relative to the input.
    pub source_path: String,
    /// Patient key.
    pub patient_key: String,
    /// Split of the patient (`None`, stored as `""`, when it failed before planning).
    #[serde(with = "split_or_empty")]
    pub split: Option<Split>,
    /// How it ended.
    pub status: StudyStatus,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Rows written.
    pub slices: u64,
    /// Rows per role.
    #[serde(default)]
    pub roles: BTreeMap<Role, u64>,
    /// Part file holding its rows (under `data/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
}

/// Journal file of a worker.
pub(crate) fn journal_path(out: &Path, worker: usize) -> PathBuf {
    out.join(folder::journal_name(worker))
}

/// The journal line of a completed part (written before the part is renamed).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartLine {
    part_info: PartInfo,
}

/// Reads a journal's study lines; a torn last line (kill during append) is ignored.
pub(crate) fn read_journal(path: &Path) -> Result<Vec<StudyEntry>> {
    Ok(journal_lines(path)
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Reads a journal's part lines (their hashes and value checks).
pub(crate) fn read_journal_parts(path: &Path) -> Vec<PartInfo> {
    journal_lines(path)
        .iter()
        .filter_map(|l| serde_json::from_str::<PartLine>(l).ok())
        .map(|p| p.part_info)
        .collect()
}

fn journal_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(String::from).collect())
        .unwrap_or_default()
}

/// The prep config as the part writer needs it.
pub(crate) fn part_options(cfg: &PrepConfig) -> PartOptions {
    PartOptions {
        zstd_level: cfg.zstd_level,
        prep_config: serde_json::to_string(cfg).expect("config serialises"),
    }
}

struct OpenPart {
    file: PartFile,
    name: String,
    studies: Vec<StudyEntry>,
}

/// Streams studies' encoded row groups into part files (see module docs).
pub(crate) struct ShardWriter {
    out: PathBuf,
    worker: usize,
    next_seq: usize,
    opts: PartOptions,
    file_bytes: u64,
    journal: File,
    current: Option<OpenPart>,
    /// The slice shape of the folder (from its first part).
    pub shape: Option<SliceShape>,
    /// Parts completed by this writer, with their manifest entries.
    pub parts_written: Vec<PartInfo>,
}

impl ShardWriter {
    /// Opens the writer for `worker` in `out`; new parts are numbered after `first_seq`.
    /// `shape` is the slice shape of the parts already in the folder, if any.
    pub fn new(
        out: &Path,
        worker: usize,
        first_seq: usize,
        cfg: &PrepConfig,
        shape: Option<SliceShape>,
    ) -> Result<Self> {
        let data = out.join(folder::DATA_DIR);
        std::fs::create_dir_all(&data).map_err(|e| Error::io(&data, e))?;
        let jp = journal_path(out, worker);
        let journal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&jp)
            .map_err(|e| Error::io(&jp, e))?;
        Ok(ShardWriter {
            out: out.to_path_buf(),
            worker,
            next_seq: first_seq,
            opts: part_options(cfg),
            file_bytes: cfg.file_bytes,
            journal,
            current: None,
            shape,
            parts_written: Vec::new(),
        })
    }

    /// Journals a study without rows (failed, or nothing to write).
    pub(crate) fn journal_only(&mut self, entry: StudyEntry) -> Result<()> {
        self.append_journal(&[entry])
    }

    /// Whether slices of `shape` may join this folder; the message says why not.
    pub(crate) fn check_shape(&self, shape: &SliceShape) -> std::result::Result<(), String> {
        match self.shape {
            Some(s) if s != *shape => Err(format!(
                "slices are {shape}, the shard folder holds {s} (one channel set and size per folder)"
            )),
            _ => Ok(()),
        }
    }

    /// Appends one study's row groups; the part is completed when it reaches the target size.
    /// Returns the name of the part holding the rows.
    pub fn add(&mut self, mut entry: StudyEntry, groups: Vec<EncodedRowGroup>) -> Result<String> {
        let Some(shape) = groups.first().map(|g| g.shape) else {
            return Err(Error::invalid(
                &self.out,
                format!("study {}: no rows to add", entry.study),
            ));
        };
        if self.current.is_none() {
            self.open_part(&shape)?;
        }
        let part = self
            .current
            .as_mut()
            .ok_or_else(|| Error::invalid(&self.out, "no open part"))?;
        for g in groups {
            part.file.append(g)?;
        }
        self.shape = Some(shape);
        let name = part.name.clone();
        entry.part = Some(name.clone());
        part.studies.push(entry);
        if part.file.bytes_written() >= self.file_bytes {
            self.finish_part()?;
        }
        Ok(name)
    }

    fn open_part(&mut self, shape: &SliceShape) -> Result<()> {
        let name = folder::part_name(self.worker, self.next_seq);
        self.next_seq += 1;
        let tmp = folder::temp_part_path(&self.out, &name);
        let file = PartFile::create(&tmp, shape, &self.opts)?;
        self.current = Some(OpenPart {
            file,
            name,
            studies: Vec::new(),
        });
        Ok(())
    }

    /// Completes the open part: close, sync, journal its studies, rename.
    pub(crate) fn finish_part(&mut self) -> Result<()> {
        let Some(part) = self.current.take() else {
            return Ok(());
        };
        let (tmp, info) = part.file.finish(&part.name)?;
        let line = PartLine {
            part_info: info.clone(),
        };
        let mut lines: Vec<String> = part
            .studies
            .iter()
            .map(|e| serde_json::to_string(e).expect("entry serialises"))
            .collect();
        lines.push(serde_json::to_string(&line).expect("part line serialises"));
        self.append_lines(&lines)?;
        let dest = folder::part_path(&self.out, &part.name);
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
        self.parts_written.push(info);
        Ok(())
    }

    fn append_journal(&mut self, entries: &[StudyEntry]) -> Result<()> {
        let lines: Vec<String> = entries
            .iter()
            .map(|e| serde_json::to_string(e).expect("entry serialises"))
            .collect();
        self.append_lines(&lines)
    }

    fn append_lines(&mut self, lines: &[String]) -> Result<()> {
        let mut buf = String::new();
        for l in lines {
            buf.push_str(l);
            buf.push('\n');
        }
        let jp = journal_path(&self.out, self.worker);
        self.journal
            .write_all(buf.as_bytes())
            .and_then(|_| self.journal.sync_data())
            .map_err(|e| Error::io(jp, e))
    }
}

/// A study's split as `_manifest.json` stores it: the name, or `""` when there is none.
mod split_or_empty {
    use crate::shard::Split;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Split>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.map_or("", Split::as_str))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Split>, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "" => Ok(None),
            _ => serde_json::from_value(serde_json::Value::String(text))
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}
