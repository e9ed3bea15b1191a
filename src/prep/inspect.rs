//! `dmnet-prep inspect DIR`: counts per split and role, label statistics, and invariant checks
//! over every row (streamed one row group at a time). A broken invariant is listed in
//! [`InspectReport::problems`] (the binary exits 1).
//!
//! Invariants: schema version 1 in every file; no patient in two splits; `role` agrees with
//! `labeled` and a mask is present exactly on labeled rows; unlabeled rows only in `train`;
//! mask values < number of label names; finite image values; `slice_index < num_slices`;
//! no duplicate (patient, source, slice, role) row; counts equal `manifest.json`'s; one slice
//! orientation (axial / coronal / sagittal, from each row's affine and `slice_axis`) and one
//! channel set (modality) for the whole folder, unless the pipeline's `allow_mixed` lists
//! `"orientation"` / `"modality"`. Orientations, modalities and source slice sizes are reported.
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use serde::Serialize;

use super::config::Mixture;
use super::ingest::Manifest;
use crate::shard::schema::read_shards;
use crate::Result;

/// What `inspect` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InspectReport {
    /// Rows per split and role.
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// Patients per split.
    pub patients: BTreeMap<String, usize>,
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
    let mut rep = InspectReport::default();
    let mut split_of: BTreeMap<String, String> = BTreeMap::new();
    let mut seen: HashSet<(String, String, i32, String)> = HashSet::new();
    let mut sizes = BTreeSet::new();
    for group in read_shards(dir)? {
        let group = match group {
            Ok(g) => g,
            Err(e) => {
                problem(&mut rep, e.to_string());
                continue;
            }
        };
        for r in group {
            rep.rows += 1;
            let id = format!(
                "{} {} slice {}",
                r.patient_key, r.source_path, r.slice_index
            );
            *rep.counts
                .entry(r.split.clone())
                .or_default()
                .entry(r.role.clone())
                .or_default() += 1;
            match split_of.get(&r.patient_key) {
                Some(s) if s != &r.split => problem(
                    &mut rep,
                    format!("patient {} is in splits {s} and {}", r.patient_key, r.split),
                ),
                None => {
                    split_of.insert(r.patient_key.clone(), r.split.clone());
                }
                _ => {}
            }
            let role_ok = (r.role == "labeled") == r.labeled
                && (r.role == "labeled" || r.role == "unlabeled");
            if !role_ok || r.labeled != r.mask.is_some() {
                problem(
                    &mut rep,
                    format!(
                        "{id}: role {:?}, labeled {}, mask present {}",
                        r.role,
                        r.labeled,
                        r.mask.is_some()
                    ),
                );
            }
            if !r.labeled && r.split != "train" {
                problem(
                    &mut rep,
                    format!("{id}: unlabeled row in split {}", r.split),
                );
            }
            if !["train", "val", "test"].contains(&r.split.as_str()) {
                problem(&mut rep, format!("{id}: unknown split {:?}", r.split));
            }
            if r.slice_index < 0 || r.slice_index >= r.num_slices {
                problem(
                    &mut rep,
                    format!("{id}: slice_index outside 0..{}", r.num_slices),
                );
            }
            if r.image.iter().any(|v| !v.is_finite()) {
                problem(&mut rep, format!("{id}: non-finite image value"));
            }
            if let Some(m) = &r.mask {
                let mut fg = false;
                for &v in m {
                    match r.label_names.get(v as usize) {
                        Some(name) => *rep.class_pixels.entry(name.clone()).or_default() += 1,
                        None => {
                            problem(
                                &mut rep,
                                format!(
                                    "{id}: mask value {v} ≥ {} label names",
                                    r.label_names.len()
                                ),
                            );
                            break;
                        }
                    }
                    fg |= v > 0;
                }
                rep.labeled_with_foreground += fg as u64;
            }
            if !seen.insert((
                r.patient_key.clone(),
                r.source_path.clone(),
                r.slice_index,
                r.role.clone(),
            )) {
                problem(&mut rep, format!("{id}: duplicate row"));
            }
            for c in &r.channel_names {
                if !rep.channels.contains(c) {
                    rep.channels.push(c.clone());
                }
            }
            sizes.insert(format!("{}x{}", r.height, r.width));
            *rep.orientations
                .entry(orientation(&r.affine, r.slice_axis))
                .or_default() += 1;
            *rep.modalities.entry(r.channel_names.join("+")).or_default() += 1;
            *rep.source_sizes
                .entry(format!("{}x{}", r.orig_height, r.orig_width))
                .or_default() += 1;
        }
    }
    for s in split_of.values() {
        *rep.patients.entry(s.clone()).or_default() += 1;
    }
    rep.sizes = sizes.into_iter().collect();
    let mp = dir.join("manifest.json");
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
    if let Some(m) = manifest {
        if m.counts != rep.counts {
            let msg = format!(
                "manifest.json counts {:?} differ from the rows {:?}",
                m.counts, rep.counts
            );
            problem(&mut rep, msg);
        }
    }
    Ok(rep)
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
