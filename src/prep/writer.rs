//! The single shard writer: rows → `part-NNNNN.parquet` (zstd, row groups of
//! `row_group_slices`, parts cut between studies once they reach `file_bytes`), written to a
//! hidden temporary name and renamed when complete, and the resume journal
//! (`.journal-wI.jsonl`): before a part is renamed, one line per study in it is appended and
//! synced. A study counts as finished only when its journal line names a part file that exists,
//! so after `kill -9` a rerun redoes exactly the studies whose rows are not in a complete part:
//! no partial part is ever visible and no row is written twice.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::config::PrepConfig;
use crate::shard::schema::{
    arrow_schema, records_to_batch, SliceRecord, META_PREP_CONFIG, META_SCHEMA_VERSION,
    SCHEMA_VERSION,
};
use crate::{Error, Result};

/// One study's outcome, as journaled and listed in `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyEntry {
    /// Study name (layout-specific, stable).
    pub study: String,
    /// Source path relative to the input.
    pub source_path: String,
    /// Patient key.
    pub patient_key: String,
    /// Split of the patient (empty when it failed before planning).
    pub split: String,
    /// "ok" or "failed".
    pub status: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Rows written.
    pub slices: u64,
    /// Rows per role ("labeled" / "unlabeled").
    #[serde(default)]
    pub roles: BTreeMap<String, u64>,
    /// Part file holding its rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
}

/// Journal file name of a worker.
pub fn journal_path(out: &Path, worker: usize) -> PathBuf {
    out.join(format!(".journal-w{worker}.jsonl"))
}

/// Reads a journal; a torn last line (kill during append) is ignored.
pub fn read_journal(path: &Path) -> Result<Vec<StudyEntry>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Part number range of a worker: `worker · 10000 + seq`.
pub fn part_name(worker: usize, seq: usize) -> String {
    format!("part-{:05}.parquet", worker * 10000 + seq)
}

struct OpenPart {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    name: String,
    studies: Vec<StudyEntry>,
}

/// Streams studies' rows into part files (see module docs).
pub struct ShardWriter {
    out: PathBuf,
    worker: usize,
    next_seq: usize,
    props: WriterProperties,
    row_group: usize,
    file_bytes: u64,
    journal: File,
    current: Option<OpenPart>,
    /// Parts completed by this writer.
    pub parts_written: Vec<String>,
}

impl ShardWriter {
    /// Opens the writer for `worker` in `out`; new parts are numbered after `first_seq`.
    pub fn new(out: &Path, worker: usize, first_seq: usize, cfg: &PrepConfig) -> Result<Self> {
        let level = ZstdLevel::try_new(cfg.zstd_level).map_err(|e| Error::Config {
            path: "<prep>".into(),
            msg: format!("zstd_level {}: {e}", cfg.zstd_level),
        })?;
        let json = serde_json::to_string(cfg).expect("config serialises");
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(cfg.row_group_slices))
            .set_key_value_metadata(Some(vec![
                KeyValue::new(META_SCHEMA_VERSION.into(), SCHEMA_VERSION.to_string()),
                KeyValue::new(META_PREP_CONFIG.into(), json),
            ]))
            .build();
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
            props,
            row_group: cfg.row_group_slices,
            file_bytes: cfg.file_bytes,
            journal,
            current: None,
            parts_written: Vec::new(),
        })
    }

    /// Journals a failed study (no rows).
    pub fn failed(&mut self, entry: StudyEntry) -> Result<()> {
        self.append_journal(&[entry])
    }

    /// Writes one study's rows; the part is completed when it reaches the target size.
    /// Returns the name of the part holding the rows.
    pub fn add(&mut self, mut entry: StudyEntry, records: Vec<SliceRecord>) -> Result<String> {
        if self.current.is_none() {
            self.open_part()?;
        }
        let part = self.current.as_mut().expect("open part");
        for chunk in records.chunks(self.row_group) {
            let batch = records_to_batch(chunk)?;
            part.writer
                .write(&batch)
                .map_err(|e| Error::invalid(&part.tmp, format!("writing Parquet: {e}")))?;
        }
        let name = part.name.clone();
        entry.part = Some(name.clone());
        part.studies.push(entry);
        let size = part.writer.bytes_written() + part.writer.in_progress_size();
        if size as u64 >= self.file_bytes {
            self.finish_part()?;
        }
        Ok(name)
    }

    fn open_part(&mut self) -> Result<()> {
        let name = part_name(self.worker, self.next_seq);
        self.next_seq += 1;
        let tmp = self.out.join(format!(".{name}.tmp"));
        let f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let writer = ArrowWriter::try_new(f, arrow_schema(), Some(self.props.clone()))
            .map_err(|e| Error::invalid(&tmp, format!("opening Parquet writer: {e}")))?;
        self.current = Some(OpenPart {
            writer,
            tmp,
            name,
            studies: Vec::new(),
        });
        Ok(())
    }

    /// Completes the open part: close, sync, journal its studies, rename.
    pub fn finish_part(&mut self) -> Result<()> {
        let Some(part) = self.current.take() else {
            return Ok(());
        };
        let f = part
            .writer
            .into_inner()
            .map_err(|e| Error::invalid(&part.tmp, format!("closing Parquet: {e}")))?;
        f.sync_all().map_err(|e| Error::io(&part.tmp, e))?;
        drop(f);
        self.append_journal(&part.studies)?;
        let dest = self.out.join(&part.name);
        std::fs::rename(&part.tmp, &dest).map_err(|e| Error::io(&dest, e))?;
        self.parts_written.push(part.name);
        Ok(())
    }

    fn append_journal(&mut self, entries: &[StudyEntry]) -> Result<()> {
        let mut buf = String::new();
        for e in entries {
            buf.push_str(&serde_json::to_string(e).expect("entry serialises"));
            buf.push('\n');
        }
        let jp = journal_path(&self.out, self.worker);
        self.journal
            .write_all(buf.as_bytes())
            .and_then(|_| self.journal.sync_data())
            .map_err(|e| Error::io(jp, e))
    }
}
