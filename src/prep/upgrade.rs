//! `dmnet-prep upgrade DIR`: rewrites a shard folder of schema v1 (`part-*.parquet` beside
//! `manifest.json`) as schema v2 in place (`schemas/shard-v2.md`). Every v1 row is read and
//! checked, each part is rewritten row group by row group as `data/part-NNNNN.parquet` (same
//! names, same rows, same row groups), then `_splits.json`, `_prep-config.json` and, last,
//! `_manifest.json` are written; only then are the v1 files removed (`manifest.json` first).
//! Killed at any point, the folder is refused by readers with this command, and rerunning it
//! finishes the job. The image values are kept exactly (`float32`) unless `--image-dtype
//! float16` asks for the smaller encoding.
use std::path::{Path, PathBuf};

use super::ingest::Manifest;
use super::writer::part_options;
use crate::shard::folder::{self, FolderKind};
use crate::shard::schema::{ImageDtype, SliceShape, SCHEMA_VERSION};
use crate::shard::writer::{PartFile, RowGroupEncoder};
use crate::{Error, Result};

/// v1 file names.
const V1_MANIFEST: &str = "manifest.json";
const V1_SPLITS: &str = "splits.json";
const V1_PREP_CONFIG: &str = "prep-config.json";

/// What an upgrade did.
#[derive(Debug, Clone)]
pub struct UpgradeReport {
    /// Part files rewritten.
    pub parts: usize,
    /// Rows rewritten.
    pub rows: u64,
    /// The v2 manifest.
    pub manifest: Manifest,
}

fn top_level_parts(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(folder::part_number)
                .is_some()
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Upgrades `dir` in place (see the module docs).
pub fn upgrade(dir: &Path, dtype: ImageDtype) -> Result<UpgradeReport> {
    match folder::kind(dir) {
        FolderKind::V1 => {}
        FolderKind::V2 if dir.join(folder::MANIFEST).exists() => return finish_cleanup(dir),
        FolderKind::V2 => {
            return Err(Error::invalid(
                dir,
                "already a schema v2 folder, but unfinished: finish its ingest instead",
            ))
        }
        FolderKind::None => return Err(Error::invalid(dir, "not a shard folder")),
    }
    let mp = dir.join(V1_MANIFEST);
    if !mp.exists() {
        return Err(Error::invalid(
            dir,
            "a half-written v1 shard folder (no manifest.json): re-ingest it with this dmnet",
        ));
    }
    let mut manifest = Manifest::load(&mp)?;
    manifest.config.image_dtype = dtype;
    let parts = top_level_parts(dir)?;
    check_listed(&manifest, &parts)?;
    let opts = part_options(&manifest.config);
    let data = dir.join(folder::DATA_DIR);
    std::fs::create_dir_all(&data).map_err(|e| Error::io(&data, e))?;
    let mut rows = 0u64;
    for p in &parts {
        rows += upgrade_part(dir, p, dtype, &opts)?;
    }
    let text = std::fs::read(dir.join(V1_SPLITS)).map_err(|e| Error::io(dir.join(V1_SPLITS), e))?;
    crate::atomic::write_bytes(&dir.join(folder::SPLITS), &text)?;
    let cfg = serde_json::to_string_pretty(&manifest.config).expect("config serialises");
    crate::atomic::write_bytes(&dir.join(folder::PREP_CONFIG), cfg.as_bytes())?;
    manifest.schema_version = SCHEMA_VERSION.into();
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    crate::atomic::write_bytes(&dir.join(folder::MANIFEST), json.as_bytes())?;
    let mut report = finish_cleanup(dir)?;
    report.parts = parts.len();
    report.rows = rows;
    Ok(report)
}

/// The v1 manifest must list exactly the v1 parts present.
fn check_listed(m: &Manifest, parts: &[PathBuf]) -> Result<()> {
    let listed: std::collections::BTreeSet<&str> =
        m.studies.iter().filter_map(|s| s.part.as_deref()).collect();
    for p in parts {
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !listed.contains(n) {
            return Err(Error::invalid(
                p,
                "not listed in manifest.json: a foreign part file; remove it, then upgrade",
            ));
        }
    }
    Ok(())
}

/// Rewrites one v1 part as `data/<same name>`, row group by row group. Returns its rows.
fn upgrade_part(
    dir: &Path,
    src: &Path,
    dtype: ImageDtype,
    opts: &crate::shard::writer::PartOptions,
) -> Result<u64> {
    let name = src
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid(src, "not a part file name"))?;
    let groups = crate::shard::v1::read_part(src)?;
    let Some(first) = groups.iter().flatten().next() else {
        return Err(Error::invalid(src, "a v1 part without rows"));
    };
    let shape = SliceShape::of(first, dtype);
    let enc = RowGroupEncoder::new(&shape, opts)?;
    let tmp = folder::temp_part_path(dir, name);
    let mut part = PartFile::create(&tmp, &shape, opts)?;
    let mut rows = 0;
    for g in groups.iter().filter(|g| !g.is_empty()) {
        part.append(
            enc.encode(g)
                .map_err(|e| Error::invalid(src, e.to_string()))?,
        )?;
        rows += g.len() as u64;
    }
    part.finish()?;
    let dest = folder::part_path(dir, name);
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    Ok(rows)
}

/// Removes the v1 files of an upgraded folder (`manifest.json` first, so that a kill leaves a
/// v2 folder with leftovers that the next run removes).
fn finish_cleanup(dir: &Path) -> Result<UpgradeReport> {
    let manifest = Manifest::load(&dir.join(folder::MANIFEST))?;
    let mut v1: Vec<PathBuf> = vec![dir.join(V1_MANIFEST)];
    v1.extend(top_level_parts(dir)?);
    v1.extend(
        std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("manifest-w") && n.ends_with(".json"))
            }),
    );
    v1.extend([V1_SPLITS, V1_PREP_CONFIG].map(|n| dir.join(n)));
    for p in v1.iter().filter(|p| p.exists()) {
        std::fs::remove_file(p).map_err(|e| Error::io(p, e))?;
    }
    Ok(UpgradeReport {
        parts: 0,
        rows: 0,
        manifest,
    })
}
