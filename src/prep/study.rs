//! One study → its shard rows: read the channels and labels (NIfTI or DICOM/SEG), check grids
//! and values, normalise, choose slices by protocol, resize, and fill [`SliceRecord`]s.
use rand::seq::IndexedRandom;

use super::config::{PrepConfig, Protocol};
use super::layout::{LabelSource, Study, StudyImages};
use super::split::{draw_paper, study_rng};
use crate::preprocess::{map_labels, prepare_volume, Normalization, PreparedVolume};
use crate::preprocess::{through_plane_axis, SliceAxis};
use crate::shard::schema::SliceRecord;
use crate::shard::{Role, Split};
use crate::volume::{
    dicom_series_geometry, read_dicom_at, read_dicom_seg, read_nifti_at, read_nifti_geometry,
    read_nifti_label, Volume,
};
use crate::{Error, Result};

/// How one study is used: its patient key, split, and whether its labels are used.
#[derive(Debug, Clone)]
pub(crate) struct StudyPlan {
    /// Pseudonymous patient key.
    pub key: String,
    /// The patient's split.
    pub split: Split,
    /// `all-slices`: whether this (training) patient's labels are kept.
    pub use_labels: bool,
    /// The study's `source_path` as written into the shard (a salted key when shareable).
    pub source: String,
}

/// Reads and preprocesses a study; returns the volume, its class mask (if labeled) and the
/// label names.
pub(crate) fn load_study(
    study: &Study,
    cfg: &PrepConfig,
) -> Result<(PreparedVolume, Option<Vec<u8>>, Vec<String>)> {
    if let Some(e) = &study.error {
        return Err(Error::invalid(&study.source_path, e.clone()));
    }
    let pp = &cfg.preprocess;
    let (vols, names, labels, seg_names): (Vec<Volume>, Vec<String>, Option<Volume>, Vec<String>) =
        match &study.images {
            StudyImages::Nifti(chans) => {
                let mut vols = Vec::new();
                for (_, p) in chans {
                    vols.push(read_nifti_at(p, cfg.timepoint)?);
                }
                let names = chans.iter().map(|(n, _)| n.clone()).collect();
                let labels = match &study.label {
                    LabelSource::Nifti(p) => Some(read_nifti_label(p)?),
                    _ => None,
                };
                (vols, names, labels, Vec::new())
            }
            StudyImages::H5(files) => {
                let (image, label) = crate::volume::h5::read_ssl4mis(files)?;
                (vec![image], vec!["mri".into()], Some(label), Vec::new())
            }
            StudyImages::Dicom(series) => {
                let v = read_dicom_at(series, cfg.timepoint)?;
                let (labels, seg_names) = match &study.label {
                    LabelSource::DicomSeg(p) => {
                        let l = read_dicom_seg(p, series, &v)?;
                        (Some(l.labels), l.names)
                    }
                    _ => (None, Vec::new()),
                };
                let name = series.modality.to_lowercase();
                (
                    vec![v],
                    vec![if name.is_empty() {
                        "image".into()
                    } else {
                        name
                    }],
                    labels,
                    seg_names,
                )
            }
        };
    let (vols, names) = select_channels(vols, names, &pp.channels, study)?;
    let label_names = if !pp.label_names.is_empty() {
        pp.label_names.clone()
    } else if !study.dataset_labels.is_empty() {
        study.dataset_labels.clone()
    } else if !seg_names.is_empty() {
        seg_names
    } else {
        vec!["background".into(), "foreground".into()]
    };
    let mask = match &labels {
        Some(l) => {
            vols[0].check_same_grid(l, &study.name, 0.01)?;
            Some(map_labels(l, pp, label_names.len())?)
        }
        None => None,
    };
    let prepared = prepare_volume(vols, names, pp, &study.name)?;
    Ok((prepared, mask, label_names))
}

/// The geometry (no voxels) of a study's first image, read from headers only.
fn study_geometry(study: &Study) -> Result<Volume> {
    match &study.images {
        StudyImages::Nifti(chans) => match chans.first() {
            Some((_, p)) => read_nifti_geometry(p),
            None => Err(Error::invalid(&study.source_path, "no image")),
        },
        StudyImages::Dicom(series) => dicom_series_geometry(series),
        StudyImages::H5(files) => crate::volume::h5::read_ssl4mis(files).map(|(v, _)| v),
    }
}

/// Resolves `slice_axis = "auto"` once for the whole dataset: the orientation (axial, coronal,
/// sagittal) that most volumes' own through-plane axis has (ties: axial, then coronal),
/// from headers only; logged with the counts. Other settings are returned as they are.
/// Studies whose header cannot be read are left out here (they fail later by name).
pub(crate) fn resolve_slice_axis(studies: &[Study], axis: SliceAxis) -> SliceAxis {
    if axis != SliceAxis::Auto {
        return axis;
    }
    let mut counts = [0usize; 3];
    for s in studies.iter().filter(|s| s.error.is_none()) {
        if let Ok(g) = study_geometry(s) {
            let o = SliceAxis::of_voxel_axis(&g, through_plane_axis(&g));
            counts[o.world_axis().unwrap_or(2)] += 1;
        }
    }
    // ties → axial (world 2), then coronal (1), then sagittal (0)
    let w = [2, 1, 0]
        .into_iter()
        .max_by_key(|&w| (counts[w], w))
        .unwrap_or(2);
    let chosen = SliceAxis::from_world_axis(w);
    tracing::info!(
        "slice axis: auto → {chosen} for the whole dataset (volumes whose own through-plane axis is axial {}, coronal {}, sagittal {})",
        counts[2],
        counts[1],
        counts[0]
    );
    chosen
}

/// Whether a study's (first) image is CT: the DICOM Modality, or the channel name an MSD /
/// nnU-Net `dataset.json` or the KiTS layout gives.
fn is_ct(s: &Study) -> bool {
    match &s.images {
        StudyImages::Dicom(series) => series.modality.eq_ignore_ascii_case("CT"),
        StudyImages::Nifti(chans) => chans
            .first()
            .is_some_and(|(n, _)| n.eq_ignore_ascii_case("ct")),
        StudyImages::H5(_) => false,
    }
}

/// Resolves `normalization = "auto"` once for the whole dataset: `ct` when every listed study
/// is CT, else `mri` (logged with the counts). Other settings are returned as they are.
pub(crate) fn resolve_normalization(studies: &[Study], n: Normalization) -> Normalization {
    if n != Normalization::Auto {
        return n;
    }
    let usable: Vec<&Study> = studies.iter().filter(|s| s.error.is_none()).collect();
    let ct = usable.iter().filter(|s| is_ct(s)).count();
    let chosen = if ct > 0 && ct == usable.len() {
        Normalization::Ct
    } else {
        Normalization::Mri
    };
    let name = serde_json::to_value(chosen)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    tracing::info!(
        "normalization: auto → {name} for the whole dataset ({ct} of {} studies are CT); set normalization in [prep.preprocess] to choose",
        usable.len()
    );
    if ct > 0 && ct < usable.len() {
        tracing::warn!(
            "the input mixes CT ({ct} studies) and other modalities ({}): they are normalised as MR; \
             keep one modality per shard folder (channels in [prep.preprocess])",
            usable.len() - ct
        );
    }
    chosen
}

/// Keeps the pipeline's channels, in its order (empty = all). A missing one is an error.
fn select_channels(
    vols: Vec<Volume>,
    names: Vec<String>,
    want: &[String],
    study: &Study,
) -> Result<(Vec<Volume>, Vec<String>)> {
    if want.is_empty() || want == names.as_slice() {
        return Ok((vols, names));
    }
    let mut slots: Vec<Option<Volume>> = vols.into_iter().map(Some).collect();
    let mut out = Vec::new();
    for w in want {
        let i = names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(w))
            .ok_or_else(|| {
                Error::invalid(
                    &study.source_path,
                    format!(
                        "case {}: channel {w:?} not found (has {})",
                        study.name,
                        names.join(", ")
                    ),
                )
            })?;
        let v = slots[i].take().ok_or_else(|| Error::Config {
            path: "<pipeline>".into(),
            msg: format!("channel {w:?} is listed twice in channels"),
        })?;
        out.push(v);
    }
    Ok((out, want.to_vec()))
}

/// Processes one study into shard rows according to the protocol and its plan.
pub(crate) fn process_study(
    study: &Study,
    plan: &StudyPlan,
    cfg: &PrepConfig,
) -> Result<Vec<SliceRecord>> {
    let (vol, mask, label_names) = load_study(study, cfg)?;
    let n = vol.num_slices();
    let picks = pick_slices(study, plan, cfg, &vol, mask.as_deref())?;
    let s = cfg.preprocess.size;
    let (h, w) = vol.plane();
    let g = &vol.geometry;
    let affine: [f64; 16] = std::array::from_fn(|i| g.affine[i / 4][i % 4]);
    let spacing_known = g.spacing_known;
    Ok(picks
        .into_iter()
        .map(|(k, labeled)| SliceRecord {
            patient_key: plan.key.clone(),
            source_path: plan.source.clone(),
            slice_index: k as i32,
            slice_axis: vol.axis as i32,
            slice_position: vol.slice_position(k),
            num_slices: n as i32,
            split: plan.split,
            labeled,
            role: Role::of(labeled),
            height: s as i32,
            width: s as i32,
            orig_height: h as i32,
            orig_width: w as i32,
            channel_names: vol.channel_names.clone(),
            image: vol.slice_image(k, s),
            mask: if labeled {
                mask.as_ref().map(|m| vol.slice_mask(m, k, s))
            } else {
                None
            },
            source_mask: if labeled {
                mask.as_ref()
                    .map(|m| crate::preprocess::extract_slice(m, g.dims, vol.axis, k))
            } else {
                None
            },
            spacing_known,
            label_names: label_names.clone(),
            spacing: g.spacing,
            pixel_spacing: vol.pixel_spacing(s),
            affine,
            volume_shape: g.dims.map(|d| d as i32),
        })
        .collect())
}

/// The slices a study contributes and whether each keeps its label (the protocol: every slice,
/// or the paper's one labeled + `unlabeled_per_patient` drawn among foreground slices).
fn pick_slices(
    study: &Study,
    plan: &StudyPlan,
    cfg: &PrepConfig,
    vol: &PreparedVolume,
    mask: Option<&[u8]>,
) -> Result<Vec<(usize, bool)>> {
    let n = vol.num_slices();
    let mut rng = study_rng(cfg.seed, &study.name);
    Ok(match (cfg.protocol, mask) {
        (Protocol::AllSlices, m) => (0..n)
            .map(|k| (k, m.is_some() && plan.use_labels))
            .collect(),
        (Protocol::Paper, Some(m)) => {
            let fg: Vec<usize> = (0..n).filter(|&k| has_foreground(vol, m, k)).collect();
            if fg.is_empty() {
                return Err(Error::invalid(
                    &study.source_path,
                    format!("case {}: label map has no foreground slice (paper protocol draws among foreground slices)", study.name),
                ));
            }
            let n_unl = if plan.split == Split::Train {
                cfg.unlabeled_per_patient
            } else {
                0
            };
            let (l, u) = draw_paper(&fg, n_unl, &mut rng);
            let mut v: Vec<(usize, bool)> = l.into_iter().map(|k| (k, true)).collect();
            v.extend(u.into_iter().map(|k| (k, false)));
            v
        }
        (Protocol::Paper, None) => {
            let all: Vec<usize> = (0..n).collect();
            let mut u: Vec<usize> = all
                .choose_multiple(&mut rng, cfg.unlabeled_per_patient)
                .copied()
                .collect();
            u.sort();
            u.into_iter().map(|k| (k, false)).collect()
        }
    })
}

/// Whether slice `k` of the full-resolution mask has a non-zero voxel.
fn has_foreground(vol: &PreparedVolume, mask: &[u8], k: usize) -> bool {
    crate::preprocess::extract_slice(mask, vol.geometry.dims, vol.axis, k)
        .iter()
        .any(|&v| v > 0)
}
