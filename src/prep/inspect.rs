//! `dmnet-prep inspect DIR`: counts per split and role, label statistics, and invariant checks
//! over every row (streamed one row group at a time; the full checks, where the readers of
//! `dmnet-train`/`dmnet-infer` rely on the footer statistics). A broken invariant is listed in
//! [`InspectReport::problems`] (the binary exits 1); an unreadable row group is one problem
//! naming its file, and inspection goes on with the next one.
//!
//! Invariants: a finished v2 folder (`_manifest.json` present, every part listed in it and
//! every listed part present); schema version 2 and one slice shape in every file; no patient
//! in two splits; `split` and `role` hold known values, `role` agrees with `labeled` and a mask
//! is present exactly on labeled rows;
//! unlabeled rows only in `train`; mask values < number of label names; finite image values;
//! `slice_index < num_slices`; no duplicate (patient, source, slice, role) row; counts equal
//! `_manifest.json`'s; one slice orientation (axial / coronal / sagittal, from each row's affine
//! and `slice_axis`) and one channel set (modality) for the whole folder, unless the pipeline's
//! `allow_mixed` lists `"orientation"` / `"modality"`. Orientations, modalities and source slice
//! sizes are reported.
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use serde::Serialize;

use super::config::Mixture;
use super::ingest::Manifest;
use crate::shard::folder;
use crate::shard::schema::check_record;
use crate::shard::{Part, Role, SliceRecord, Split};
use crate::Result;

/// What `inspect` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InspectReport {
    /// Rows per split and role.
    pub counts: BTreeMap<Split, BTreeMap<Role, u64>>,
    /// Patients per split.
    pub patients: BTreeMap<Split, usize>,
    /// Total rows.
    pub rows: u64,
    /// Mask pixels per class name (labeled rows).
    pub class_pixels: BTreeMap<String, u64>,
    /// Labeled rows whose mask has a non-zero pixel.
    pub labeled_with_foreground: u64,
    /// Channel names seen.
    pub channels: Vec<String>,
    /// Slice sizes seen (H×W).
    pub sizes: Vec<String>,
    /// Rows per slice orientation (`axial`, `coronal`, `sagittal`).
    pub orientations: BTreeMap<String, u64>,
    /// Rows per channel set (modality), e.g. `ct` or `flair+t1ce`.
    pub modalities: BTreeMap<String, u64>,
    /// Rows per source slice size before resizing (`orig_height`×`orig_width`).
    pub source_sizes: BTreeMap<String, u64>,
    /// Broken invariants (empty = all good).
    pub problems: Vec<String>,
}

/// Inspects a shard folder (see module docs).
pub fn inspect(dir: &Path) -> Result<InspectReport> {
    let mut t = Tally::default();
    let parts = open_parts(dir, &mut t.rep)?;
    let groups = parts
        .iter()
        .flat_map(|p| (0..p.num_row_groups()).map(move |rg| (p, rg)));
    for (part, rg) in groups {
        match part.read_row_group_unchecked(rg) {
            Ok(group) => group.iter().for_each(|r| t.row(r)),
            Err(e) => problem(&mut t.rep, format!("row group {rg}: {e}")),
        }
    }
    t.finish(dir)
}

/// The report so far and what the checks across rows remember.
#[derive(Default)]
struct Tally {
    rep: InspectReport,
    split_of: BTreeMap<String, Split>,
    seen: HashSet<(String, String, i32, Role)>,
    sizes: BTreeSet<String>,
}

impl Tally {
    fn row(&mut self, r: &SliceRecord) {
        let id = format!(
            "{} {} slice {}",
            r.patient_key, r.source_path, r.slice_index
        );
        self.count(r);
        self.check(r, &id);
        self.check_mask(r, &id);
    }

    /// Counts, and the channel sets, sizes and orientations seen.
    fn count(&mut self, r: &SliceRecord) {
        let rep = &mut self.rep;
        rep.rows += 1;
        *rep.counts
            .entry(r.split)
            .or_default()
            .entry(r.role)
            .or_default() += 1;
        for c in &r.channel_names {
            if !rep.channels.contains(c) {
                rep.channels.push(c.clone());
            }
        }
        self.sizes.insert(format!("{}x{}", r.height, r.width));
        *rep.orientations
            .entry(orientation(&r.affine, r.slice_axis))
            .or_default() += 1;
        *rep.modalities.entry(r.channel_names.join("+")).or_default() += 1;
        *rep.source_sizes
            .entry(format!("{}x{}", r.orig_height, r.orig_width))
            .or_default() += 1;
    }

    /// One split per patient, role and mask agree with `labeled`, unlabeled rows only in
    /// train, the slice index in range, the row's values, no duplicate.
    fn check(&mut self, r: &SliceRecord, id: &str) {
        let rep = &mut self.rep;
        match self.split_of.get(&r.patient_key) {
            Some(&s) if s != r.split => problem(
                rep,
                format!("patient {} is in splits {s} and {}", r.patient_key, r.split),
            ),
            None => {
                self.split_of.insert(r.patient_key.clone(), r.split);
            }
            _ => {}
        }
        if r.role != Role::of(r.labeled) || r.labeled != r.mask.is_some() {
            let present = r.mask.is_some();
            let msg = format!(
                "{id}: role {}, labeled {}, mask present {present}",
                r.role, r.labeled
            );
            problem(rep, msg);
        }
        if !r.labeled && r.split != Split::Train {
            problem(rep, format!("{id}: unlabeled row in split {}", r.split));
        }
        if r.slice_index < 0 || r.slice_index >= r.num_slices {
            problem(
                rep,
                format!("{id}: slice_index outside 0..{}", r.num_slices),
            );
        }
        if let Err(e) = check_record(r, Path::new(&r.source_path)) {
            problem(rep, format!("{id}: {e}"));
        }
        let key = (
            r.patient_key.clone(),
            r.source_path.clone(),
            r.slice_index,
            r.role,
        );
        if !self.seen.insert(key) {
            problem(rep, format!("{id}: duplicate row"));
        }
    }

    /// Mask pixels per class (each value must name a class) and foreground slices.
    fn check_mask(&mut self, r: &SliceRecord, id: &str) {
        let Some(m) = &r.mask else { return };
        let rep = &mut self.rep;
        let mut fg = false;
        for &v in m {
            let Some(name) = r.label_names.get(v as usize) else {
                let n = r.label_names.len();
                problem(rep, format!("{id}: mask value {v} ≥ {n} label names"));
                break;
            };
            *rep.class_pixels.entry(name.clone()).or_default() += 1;
            fg |= v > 0;
        }
        rep.labeled_with_foreground += fg as u64;
    }

    /// Patients per split, the mixture checks and the counts against `_manifest.json`.
    fn finish(self, dir: &Path) -> Result<InspectReport> {
        let mut rep = self.rep;
        for &s in self.split_of.values() {
            *rep.patients.entry(s).or_default() += 1;
        }
        rep.sizes = self.sizes.into_iter().collect();
        let mp = dir.join(folder::MANIFEST);
        let manifest = if mp.exists() {
            Some(Manifest::load(&mp)?)
        } else {
            None
        };
        let allowed = manifest
            .as_ref()
            .map(|m| m.config.allow_mixed.clone())
            .unwrap_or_default();
        check_mixture(&mut rep, &allowed);
        if let Some(m) = manifest.filter(|m| m.counts != rep.counts) {
            let msg = format!(
                "{} counts {:?} differ from the rows {:?}",
                folder::MANIFEST,
                m.counts,
                rep.counts
            );
            problem(&mut rep, msg);
        }
        Ok(rep)
    }
}

/// The readable parts of `dir`; the folder checks and each unreadable part become problems.
fn open_parts(dir: &Path, rep: &mut InspectReport) -> Result<Vec<Part>> {
    let files = folder::part_files(dir)?;
    match folder::finished_manifest(dir) {
        Ok(m) => {
            if let Err(e) = folder::check_parts_listed(dir, &m, &files) {
                problem(rep, e.to_string());
            }
        }
        Err(e) if folder::kind(dir) == folder::FolderKind::V1 => return Err(e),
        Err(e) => problem(rep, e.to_string()),
    }
    let mut parts: Vec<Part> = Vec::new();
    for f in &files {
        match Part::open(f) {
            Ok(p) => match parts.first() {
                Some(first) if first.shape != p.shape => problem(
                    rep,
                    format!(
                        "{}: slices are {}, the first part holds {}",
                        f.display(),
                        p.shape,
                        first.shape
                    ),
                ),
                _ => parts.push(p),
            },
            Err(e) => problem(rep, e.to_string()),
        }
    }
    Ok(parts)
}

/// The orientation of slices through voxel axis `axis` of a row's affine (row-major 4×4): the
/// world axis that voxel axis is closest to (L–R sagittal, A–P coronal, S–I axial).
fn orientation(affine: &[f64; 16], axis: i32) -> String {
    let Ok(a) = usize::try_from(axis) else {
        return format!("slice_axis {axis}");
    };
    if a > 2 {
        return format!("slice_axis {axis}");
    }
    let d = [affine[a], affine[4 + a], affine[8 + a]];
    let w = (0..3)
        .max_by(|&i, &j| d[i].abs().total_cmp(&d[j].abs()))
        .unwrap_or(2);
    ["sagittal", "coronal", "axial"][w].to_string()
}

/// Several orientations or channel sets in one folder are a broken invariant unless allowed.
/// Reported first (a folder-level fact, never crowded out by per-row problems).
fn check_mixture(rep: &mut InspectReport, allowed: &[Mixture]) {
    let list = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, n)| format!("{k} ({n} rows)"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if rep.orientations.len() > 1 && !allowed.contains(&Mixture::Orientation) {
        let msg = format!(
            "slices of several orientations: {}; one slice axis per dataset (slice_axis in [prep.preprocess], or allow_mixed = [\"orientation\"])",
            list(&rep.orientations)
        );
        rep.problems.insert(0, msg);
    }
    if rep.modalities.len() > 1 && !allowed.contains(&Mixture::Modality) {
        let msg = format!(
            "several channel sets (modalities): {}; keep one with channels in [prep.preprocess], or allow_mixed = [\"modality\"]",
            list(&rep.modalities)
        );
        rep.problems.insert(0, msg);
    }
}

fn problem(rep: &mut InspectReport, m: String) {
    if rep.problems.len() < 50 {
        rep.problems.push(m);
    }
}
