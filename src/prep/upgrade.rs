//! `dmnet-prep upgrade DIR`: rewrites a shard folder of schema v1 (`part-*.parquet` beside
//! `manifest.json`) or v2 (`data/part-*.parquet`, float16 image column, no part hashes) as
//! schema v3 in place (`schemas/shard-v3.md`), through one path: every old row is read and
//! checked, each part is rewritten row group by row group as `data/part-NNNNN.parquet` (same
//! names, same rows, same row groups) with the v3 writer, which records the part's SHA-256, and
//! `_manifest.json` is written last with the parts' entries. v1 files are removed only after
//! it (`manifest.json` first). Killed at any point, readers refuse the folder with this
//! command, and rerunning it finishes the job.
//!
//! The old folder carried no hash, so nothing proves its bytes were intact before the upgrade:
//! the upgrade says so (printed, and in the manifest's `warnings`). It carried no source-grid
//! labels either: evaluations on it fall back to the shard grid until it is re-ingested. Image
//! values are kept exactly: a v2 float16 column stays float16-precise, v1 float32 values stay
//! exact unless `--image-dtype float16` asks for the smaller precision.
use std::path::{Path, PathBuf};

use super::ingest::Manifest;
use super::writer::part_options;
use crate::shard::folder::{self, FolderKind};
use crate::shard::schema::{ImageDtype, SliceRecord, SliceShape, SCHEMA_VERSION, V2};
use crate::shard::writer::{PartFile, PartInfo, PartOptions, RowGroupEncoder};
use crate::{Error, Result};

/// v1 file names.
const V1_MANIFEST: &str = "manifest.json";
const V1_SPLITS: &str = "splits.json";
const V1_PREP_CONFIG: &str = "prep-config.json";

/// The note recorded in an upgraded folder's manifest.
const NO_HASH_NOTE: &str = "upgraded from shard schema v{FROM}: the input carried no hash, so nothing proves its bytes were intact before the upgrade; it carried no source-grid labels either (source_mask), so evaluations use the shard grid until the folder is re-ingested";

/// What an upgrade did.
#[derive(Debug, Clone)]
pub struct UpgradeReport {
    /// The schema version upgraded from (`None`: already current).
    pub from: Option<String>,
    /// Part files rewritten.
    pub parts: usize,
    /// Rows rewritten.
    pub rows: u64,
    /// The v3 manifest.
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

/// Upgrades `dir` in place (see the module docs). `dtype` is the precision of v1 images (v2
/// folders keep theirs).
pub fn upgrade(dir: &Path, dtype: ImageDtype) -> Result<UpgradeReport> {
    match folder::kind(dir) {
        FolderKind::V1 => upgrade_v1(dir, dtype),
        FolderKind::V2 => {
            let mp = dir.join(folder::MANIFEST);
            if !mp.exists() {
                return Err(Error::invalid(
                    dir,
                    "an unfinished shard folder (no _manifest.json): finish its ingest first",
                ));
            }
            let manifest = Manifest::load(&mp)?;
            match manifest.schema_version.as_str() {
                SCHEMA_VERSION => finish_cleanup(dir, None),
                V2 => upgrade_v2(dir, manifest),
                v => Err(Error::invalid(
                    &mp,
                    format!("shard schema version {v}: this dmnet upgrades versions 1 and 2 to {SCHEMA_VERSION}"),
                )),
            }
        }
        FolderKind::None => Err(Error::invalid(dir, "not a shard folder")),
    }
}

fn upgrade_v1(dir: &Path, dtype: ImageDtype) -> Result<UpgradeReport> {
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
    let mut infos = Vec::new();
    for p in &parts {
        let groups = crate::shard::v1::read_part(p)?;
        infos.push(rewrite_part(dir, p, groups, Some(dtype), &opts)?);
    }
    let text = std::fs::read(dir.join(V1_SPLITS)).map_err(|e| Error::io(dir.join(V1_SPLITS), e))?;
    crate::atomic::write_bytes(&dir.join(folder::SPLITS), &text)?;
    let cfg = serde_json::to_string_pretty(&manifest.config).expect("config serialises");
    crate::atomic::write_bytes(&dir.join(folder::PREP_CONFIG), cfg.as_bytes())?;
    write_manifest(dir, &mut manifest, infos, "1")?;
    let mut report = finish_cleanup(dir, Some("1"))?;
    report.parts = parts.len();
    report.rows = report.manifest.parts.iter().map(|p| p.rows).sum();
    Ok(report)
}

fn upgrade_v2(dir: &Path, mut manifest: Manifest) -> Result<UpgradeReport> {
    let files = folder::part_files(dir)?;
    let opts = part_options(&manifest.config);
    let mut infos = Vec::new();
    for f in &files {
        let part = crate::shard::Part::open_for_upgrade(f)?;
        let groups = (0..part.num_row_groups())
            .map(|rg| part.read_row_group(rg))
            .collect::<Result<Vec<_>>>()?;
        infos.push(rewrite_part(dir, f, groups, None, &opts)?);
    }
    write_manifest(dir, &mut manifest, infos, V2)?;
    let mut report = finish_cleanup(dir, Some(V2))?;
    report.parts = files.len();
    report.rows = report.manifest.parts.iter().map(|p| p.rows).sum();
    Ok(report)
}

/// Writes the v3 manifest with the parts' entries and the no-hash note.
fn write_manifest(dir: &Path, m: &mut Manifest, parts: Vec<PartInfo>, from: &str) -> Result<()> {
    m.schema_version = SCHEMA_VERSION.into();
    m.parts = parts;
    let note = NO_HASH_NOTE.replace("{FROM}", from);
    if !m.warnings.contains(&note) {
        m.warnings.push(note);
    }
    let json = serde_json::to_string_pretty(m).expect("manifest serialises");
    crate::atomic::write_bytes(&dir.join(folder::MANIFEST), json.as_bytes())
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

/// Rewrites one old part's row groups as `data/<same name>` with the v3 writer (image
/// precision `dtype`, or the part's own). Returns its manifest entry.
fn rewrite_part(
    dir: &Path,
    src: &Path,
    groups: Vec<Vec<SliceRecord>>,
    dtype: Option<ImageDtype>,
    opts: &PartOptions,
) -> Result<PartInfo> {
    let name = src
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid(src, "not a part file name"))?;
    let Some(first) = groups.iter().flatten().next() else {
        return Err(Error::invalid(src, "a part without rows"));
    };
    let own = crate::shard::Part::open_for_upgrade(src)
        .map(|p| p.shape.dtype)
        .unwrap_or(ImageDtype::Float32);
    let shape = SliceShape::of(first, dtype.unwrap_or(own));
    let enc = RowGroupEncoder::new(&shape, opts)?;
    let tmp = folder::temp_part_path(dir, name);
    let mut part = PartFile::create(&tmp, &shape, opts)?;
    for g in groups.iter().filter(|g| !g.is_empty()) {
        part.append(
            enc.encode(g)
                .map_err(|e| Error::invalid(src, e.to_string()))?,
        )?;
    }
    let (tmp, info) = part.finish(name)?;
    let dest = folder::part_path(dir, name);
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    Ok(info)
}

/// Removes the v1 files of an upgraded folder (`manifest.json` first, so that a kill leaves a
/// v3 folder with leftovers that the next run removes).
fn finish_cleanup(dir: &Path, from: Option<&str>) -> Result<UpgradeReport> {
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
        from: from.map(String::from),
        parts: 0,
        rows: 0,
        manifest,
    })
}
