//! `dmnet-prep inspect DIR`: counts per split and role, label statistics, and invariant checks
//! over every row (streamed one row group at a time; the full checks, where the readers of
//! `dmnet-train`/`dmnet-infer` rely on the footer statistics). A broken invariant is listed in
//! [`InspectReport::problems`] (the binary exits 1); an unreadable row group is one problem
//! naming its file, and inspection goes on with the next one.
//!
//! Invariants: a finished v3 folder (`_manifest.json` present, every part listed in it and
//! every listed part present); every part's bytes equal to the SHA-256 its manifest entry
//! recorded (a corrupt part is one problem naming it, and its rows are not read); schema
//! version 3 and one slice shape in every file; no patient in two splits; every row's split
//! is its patient's split in `_splits.json`; `split` and `role` hold known values, `role` agrees with `labeled` and a mask
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
    let mut t = Tally {
        splits: super::split::Splits::load(&dir.join(folder::SPLITS)).ok(),
        ..Default::default()
    };
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
    splits: Option<super::split::Splits>,
    mixtures: crate::shard::checks::Mixtures,
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
        self.mixtures.add(&r.channel_names, &r.affine, r.slice_axis);
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
        if let Some(want) = self.splits.as_ref().map(|s| s.split_of(&r.patient_key)) {
            match want {
                Some(w) if w != r.split => problem(
                    rep,
                    format!(
                        "{id}: row in split {}, {} puts patient {} in {w}",
                        r.split,
                        folder::SPLITS,
                        r.patient_key
                    ),
                ),
                None => problem(
                    rep,
                    format!(
                        "{id}: patient {} is not in {}",
                        r.patient_key,
                        folder::SPLITS
                    ),
                ),
                _ => {}
            }
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
        check_mixture(&mut rep, &self.mixtures, &allowed);
        if let Some(m) = manifest.filter(|m| m.counts != rep.counts) {
            let msg = format!(
                "{} counts ({}) differ from the rows ({})",
                folder::MANIFEST,
                super::ingest::counts_line(&m.counts),
                super::ingest::counts_line(&rep.counts)
            );
            problem(&mut rep, msg);
        }
        Ok(rep)
    }
}

/// The readable parts of `dir`; the folder checks and each unreadable part become problems.
fn open_parts(dir: &Path, rep: &mut InspectReport) -> Result<Vec<Part>> {
    let files = folder::part_files(dir)?;
    let manifest = match folder::finished_manifest(dir) {
        Ok(m) => {
            if let Err(e) = folder::check_parts_listed(dir, &m, &files) {
                problem(rep, e.to_string());
            }
            Some(m)
        }
        Err(e) if folder::kind(dir) == folder::FolderKind::V1 => return Err(e),
        Err(e) => {
            problem(rep, e.to_string());
            None
        }
    };
    let mut parts: Vec<Part> = Vec::new();
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(m) = &manifest {
            let verified =
                folder::part_entry(dir, m, name).and_then(|info| folder::verify_part(f, info));
            if let Err(e) = verified {
                problem(rep, e.to_string());
                continue;
            }
        }
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

/// Several orientations or channel sets in one folder are a broken invariant unless allowed
/// ([`crate::shard::checks::Mixtures::problems`], what every reader refuses). Reported first
/// (a folder-level fact, never crowded out by per-row problems).
fn check_mixture(
    rep: &mut InspectReport,
    mixtures: &crate::shard::checks::Mixtures,
    allowed: &[Mixture],
) {
    rep.orientations = mixtures.orientations.clone();
    rep.modalities = mixtures.modalities.clone();
    let allowed: Vec<String> = allowed
        .iter()
        .map(|m| {
            serde_json::to_value(m)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        })
        .collect();
    for (i, p) in mixtures.problems(&allowed).into_iter().enumerate() {
        rep.problems.insert(i, p);
    }
}

fn problem(rep: &mut InspectReport, m: String) {
    if rep.problems.len() < 50 {
        rep.problems.push(m);
    }
}
