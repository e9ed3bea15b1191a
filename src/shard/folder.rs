//! The layout of a shard folder (`schemas/shard-v3.md`; v2 had the same layout): part files under `data/`,
//! side files prefixed with `_` (Arrow readers skip them, so `pq.read_table(DIR)` reads the
//! rows) and internal files prefixed with `.`. This module names every file, tells v1 from v2
//! folders, and refuses folders that are half-written, hold foreign files, or lack a part their
//! manifest lists: each refusal is one line naming the folder or file and the command that fixes
//! it.
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Subfolder holding the part files.
pub(crate) const DATA_DIR: &str = "data";
/// The folder's manifest, written last: a folder without it is unfinished.
pub(crate) const MANIFEST: &str = "_manifest.json";
/// The patient split.
pub(crate) const SPLITS: &str = "_splits.json";
/// The complete prep config.
pub(crate) const PREP_CONFIG: &str = "_prep-config.json";
/// Fingerprint of the patient-key salt (internal).
pub(crate) const SALT_FINGERPRINT: &str = ".salt-fingerprint";
/// The v1 manifest name (a v1 folder has it beside its `part-*.parquet`).
const V1_MANIFEST: &str = "manifest.json";

/// Manifest of worker `w` of a multi-worker ingest (`dmnet-prep merge` joins them).
pub(crate) fn worker_manifest(w: usize) -> String {
    format!("_manifest-w{w}.json")
}

/// Resume journal of worker `w` (internal).
pub(crate) fn journal_name(w: usize) -> String {
    format!(".journal-w{w}.jsonl")
}

/// The command line of the ingest that writes worker `w`'s share (internal; quoted in the
/// refusal of an unfinished folder).
pub(crate) fn command_name(w: usize) -> String {
    format!(".command-w{w}")
}

/// Part file name: worker `w` numbers its parts from `w · 10000`.
pub(crate) fn part_name(worker: usize, seq: usize) -> String {
    format!("part-{:05}.parquet", worker * 10000 + seq)
}

/// The number in a part file name.
pub(crate) fn part_number(name: &str) -> Option<usize> {
    name.strip_prefix("part-")?
        .strip_suffix(".parquet")?
        .parse()
        .ok()
}

/// Where part `name` lives.
pub(crate) fn part_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(DATA_DIR).join(name)
}

/// The hidden name a part is written under until it is complete.
pub(crate) fn temp_part_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(DATA_DIR).join(format!(".{name}.tmp"))
}

/// Which shard format a folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderKind {
    /// `data/part-*.parquet` (finished or not).
    V2,
    /// `part-*.parquet` beside `manifest.json`.
    V1,
    /// Neither.
    None,
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn is_part(name: &str) -> bool {
    part_number(name).is_some()
}

/// Tells a v2 folder (a `data/` folder or `_manifest.json`) from a v1 one (`manifest.json`,
/// also while `dmnet-prep upgrade` is converting it, or only top-level parts).
pub fn kind(dir: &Path) -> FolderKind {
    let top = names(dir);
    let started = |n: &String| n == MANIFEST || n == PREP_CONFIG || n.starts_with(".command-w");
    if top.iter().any(|n| n == V1_MANIFEST) {
        FolderKind::V1
    } else if dir.join(DATA_DIR).is_dir() || top.iter().any(started) {
        FolderKind::V2
    } else if top.iter().any(|n| is_part(n)) {
        FolderKind::V1
    } else {
        FolderKind::None
    }
}

/// The command that converts a v1 folder.
pub(crate) fn upgrade_command(dir: &Path) -> String {
    format!(
        "dmnet-prep upgrade {}",
        shell_quote(&dir.display().to_string())
    )
}

/// Quotes a word for a POSIX shell when it needs it.
pub(crate) fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The part files of a shard folder, sorted: `data/part-*.parquet` (v2) or `part-*.parquet`
/// (v1, so that the reader can refuse it with the upgrade command). Temporary files are skipped.
pub(crate) fn part_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let base = match kind(dir) {
        FolderKind::V2 => dir.join(DATA_DIR),
        FolderKind::V1 => dir.to_path_buf(),
        FolderKind::None => {
            return Err(Error::invalid(
                dir,
                "no shard part files (data/part-*.parquet): run `dmnet-prep ingest` first",
            ))
        }
    };
    let mut files: Vec<PathBuf> = names(&base)
        .into_iter()
        .filter(|n| is_part(n))
        .map(|n| base.join(n))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::invalid(
            dir,
            "no shard part files (data/part-*.parquet): run `dmnet-prep ingest` first",
        ));
    }
    Ok(files)
}

/// The fields of `_manifest.json` that readers check (the prep stage owns the full type).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ManifestSummary {
    /// Shard schema version.
    pub schema_version: String,
    /// Every study: its status, rows and part.
    pub studies: Vec<StudySummary>,
    /// Every part: rows, size, SHA-256 and the writer's value checks (schema v3).
    #[serde(default)]
    pub parts: Vec<super::writer::PartInfo>,
    /// The prep config (readers look only at `allow_mixed`).
    #[serde(default)]
    pub config: serde_json::Value,
}

impl ManifestSummary {
    /// The mixtures the prep config allows (`allow_mixed`).
    pub(crate) fn allowed_mixtures(&self) -> Vec<String> {
        self.config["allow_mixed"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// How a study ended (`_manifest.json` `studies[].status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StudyStatus {
    /// Its rows are in the folder.
    Ok,
    /// It failed (`reason` says why); the other studies went on.
    Failed,
}

/// One study of a [`ManifestSummary`].
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct StudySummary {
    /// How it ended.
    pub status: StudyStatus,
    /// Rows written.
    #[serde(default)]
    pub slices: u64,
    /// Part holding its rows.
    #[serde(default)]
    pub part: Option<String>,
}

impl ManifestSummary {
    /// Rows per part file, from the studies that are ok.
    pub(crate) fn rows_per_part(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for s in self.studies.iter().filter(|s| s.status == StudyStatus::Ok) {
            if let Some(p) = &s.part {
                *out.entry(p.clone()).or_default() += s.slices;
            }
        }
        out
    }
}

/// Why a v2 folder is not finished, with the command that finishes it.
fn unfinished(dir: &Path) -> Error {
    let top = names(dir);
    let workers: BTreeSet<&String> = top
        .iter()
        .filter(|n| n.starts_with("_manifest-w") && n.ends_with(".json"))
        .collect();
    let of_workers = workers
        .iter()
        .filter_map(|n| std::fs::read_to_string(dir.join(n)).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter_map(|v| v["worker"][1].as_u64())
        .max()
        .unwrap_or(0) as usize;
    let how = if !workers.is_empty() && workers.len() >= of_workers {
        format!(
            "its {} workers finished: join them with `dmnet-prep merge {}`",
            workers.len(),
            shell_quote(&dir.display().to_string())
        )
    } else if !workers.is_empty() {
        format!(
            "it holds the manifest of {} of {of_workers} workers: if each worker wrote its own folder, join them all with \
             `dmnet-prep merge --out MERGED W0 W1 …` (the folders of workers 0..{of_workers}, in order); \
             if they share this folder, wait for the others, then `dmnet-prep merge {}`",
            workers.len(),
            shell_quote(&dir.display().to_string())
        )
    } else {
        match std::fs::read_to_string(dir.join(command_name(0))) {
            Ok(cmd) if !cmd.trim().is_empty() => format!("finish it with `{}`", cmd.trim()),
            _ => format!(
                "finish it by rerunning the same `dmnet-prep ingest … --out {}`",
                shell_quote(&dir.display().to_string())
            ),
        }
    };
    Error::invalid(
        dir,
        format!("half-written shard folder: no {MANIFEST} (an ingest was interrupted or is still running); {how}"),
    )
}

/// Checks that `dir` is a finished v2 shard folder and returns its manifest. Refuses a v1
/// folder (with the upgrade command), an unfinished one (with the command that finishes it)
/// and a manifest of another version.
pub(crate) fn finished_manifest(dir: &Path) -> Result<ManifestSummary> {
    match kind(dir) {
        FolderKind::V1 => {
            let what = if dir.join(V1_MANIFEST).exists() {
                "shard schema version 1"
            } else {
                "half-written shard folder of schema version 1 (no manifest.json)"
            };
            return Err(Error::invalid(
                dir,
                format!(
                    "{what}; this dmnet reads version {}: upgrade it with `{}`",
                    super::schema::SCHEMA_VERSION,
                    upgrade_command(dir)
                ),
            ));
        }
        FolderKind::None => {
            return Err(Error::invalid(
                dir,
                "not a shard folder (no data/part-*.parquet): run `dmnet-prep ingest` first",
            ))
        }
        FolderKind::V2 => {}
    }
    let p = dir.join(MANIFEST);
    if !p.exists() {
        return Err(unfinished(dir));
    }
    if let Some(left) = names(dir).into_iter().find(|n| is_part(n)) {
        return Err(Error::invalid(
            dir.join(left),
            format!("a schema v1 part left beside the v2 data/ (an interrupted upgrade): finish it with `{}`", upgrade_command(dir)),
        ));
    }
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let m: ManifestSummary = serde_json::from_str(&text)
        .map_err(|e| Error::invalid(&p, format!("not a shard manifest: {e}")))?;
    if m.schema_version != super::schema::SCHEMA_VERSION {
        let fix = if ["1", super::schema::V2].contains(&m.schema_version.as_str()) {
            format!(": upgrade it with `{}`", upgrade_command(dir))
        } else {
            " (written by a newer dmnet?)".into()
        };
        return Err(Error::invalid(
            &p,
            format!(
                "shard schema version {}, this dmnet reads version {}{fix}",
                m.schema_version,
                super::schema::SCHEMA_VERSION
            ),
        ));
    }
    Ok(m)
}

/// The training patients of `_splits.json` in its order (empty when the file is absent or
/// unreadable).
pub(crate) fn train_order(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(SPLITS))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v["train"].as_array().map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The manifest entry of part `name`, or why there is none.
pub(crate) fn part_entry<'m>(
    dir: &Path,
    m: &'m ManifestSummary,
    name: &str,
) -> Result<&'m super::writer::PartInfo> {
    m.parts.iter().find(|p| p.name == name).ok_or_else(|| {
        Error::invalid(
            part_path(dir, name),
            format!("{MANIFEST} lists no hash for this part: re-ingest into a new folder"),
        )
    })
}

/// Checks that part `file` is byte for byte what the writer recorded in the manifest (size and
/// SHA-256 of the whole file: pages, page headers and footer). The error names the part.
pub(crate) fn verify_part(file: &Path, info: &super::writer::PartInfo) -> Result<()> {
    let (sha, bytes) = super::writer::file_sha256(file)?;
    if sha != info.sha256 || bytes != info.bytes {
        return Err(Error::invalid(
            file,
            format!(
                "corrupt shard part: its SHA-256 is {}… ({bytes} bytes) but {MANIFEST} recorded {}… ({} bytes) when it was written; \
                 the file changed since (disk or copy error, or an edit): restore it from a good copy or re-ingest",
                &sha[..12.min(sha.len())],
                &info.sha256[..12.min(info.sha256.len())],
                info.bytes
            ),
        ));
    }
    Ok(())
}

/// The part files of `dir` must be exactly those its manifest lists: a part it does not list
/// is foreign (or stale) and a listed part must exist.
pub(crate) fn check_parts_listed(dir: &Path, m: &ManifestSummary, files: &[PathBuf]) -> Result<()> {
    let listed = m.rows_per_part();
    let present: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.file_name()?.to_str().map(String::from))
        .collect();
    if let Some(foreign) = present.iter().find(|p| !listed.contains_key(*p)) {
        return Err(Error::invalid(
            part_path(dir, foreign),
            format!("not listed in {MANIFEST}: a foreign or stale part file; remove it (its rows would be read twice or read without a study)"),
        ));
    }
    if let Some(missing) = listed.keys().find(|p| !present.contains(*p)) {
        return Err(Error::invalid(
            part_path(dir, missing),
            format!("listed in {MANIFEST} but missing: re-ingest into a new folder"),
        ));
    }
    for name in &present {
        let info = part_entry(dir, m, name)?;
        let want = listed.get(name).copied().unwrap_or(0);
        if info.rows != want {
            return Err(Error::invalid(
                part_path(dir, name),
                format!(
                    "{MANIFEST} is inconsistent: its studies put {want} rows in this part, its parts list {}",
                    info.rows
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(part_name(2, 7), "part-20007.parquet");
        assert_eq!(part_number("part-20007.parquet"), Some(20007));
        assert_eq!(part_number(".part-00001.parquet.tmp"), None);
        assert_eq!(shell_quote("shards/la"), "shards/la");
        assert_eq!(shell_quote("my shards/it's"), r"'my shards/it'\''s'");
    }

    #[test]
    fn kinds_and_refusals() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        assert_eq!(kind(d), FolderKind::None);
        std::fs::write(d.join("part-00000.parquet"), b"x").unwrap();
        std::fs::write(d.join("manifest.json"), b"{}").unwrap();
        assert_eq!(kind(d), FolderKind::V1);
        let e = finished_manifest(d).unwrap_err().to_string();
        assert!(
            e.contains("schema version 1") && e.contains("dmnet-prep upgrade"),
            "{e}"
        );
        assert_eq!(part_files(d).unwrap().len(), 1);

        let v2 = d.join("v2");
        std::fs::create_dir_all(v2.join(DATA_DIR)).unwrap();
        std::fs::write(
            v2.join(command_name(0)),
            "dmnet-prep ingest --input a --out b",
        )
        .unwrap();
        let e = finished_manifest(&v2).unwrap_err().to_string();
        assert!(
            e.contains("half-written") && e.contains("`dmnet-prep ingest --input a --out b`"),
            "{e}"
        );
        std::fs::write(v2.join(worker_manifest(1)), "{}").unwrap();
        let e = finished_manifest(&v2).unwrap_err().to_string();
        assert!(e.contains("dmnet-prep merge"), "{e}");
    }
}
