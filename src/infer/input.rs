//! What `dmnet-infer --input PATH` is: a shard folder (`part-*.parquet`), NIfTI cases, or
//! DICOM series. One-channel models take every NIfTI file as a case; multi-channel models
//! (e.g. BraTS `t1ce`, `flair`) group files named `<case>_<channel>.nii[.gz]` in the input
//! folder and its immediate sub-folders (the BraTS layout) into cases, channels in the
//! sidecar's `channel_names` order.
use crate::volume::DicomSeries;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One volume case: its name (output file stem) and one file per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiCase {
    /// Case name, used for `OUT/<name>.nii.gz`.
    pub name: String,
    /// One file per model channel, in channel order.
    pub files: Vec<PathBuf>,
}

/// The kind of input.
#[derive(Debug, Clone)]
pub enum InputKind {
    /// NIfTI cases.
    Nifti(Vec<NiftiCase>),
    /// DICOM series (by folder scan; SEG objects left out).
    Dicom(Vec<DicomSeries>),
    /// A shard folder.
    Shards(PathBuf),
}

impl InputKind {
    /// `nifti`, `dicom` or `shards`.
    pub fn name(&self) -> &'static str {
        match self {
            InputKind::Nifti(_) => "nifti",
            InputKind::Dicom(_) => "dicom",
            InputKind::Shards(_) => "shards",
        }
    }
}

fn is_nifti(p: &Path) -> bool {
    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    p.is_file() && (n.ends_with(".nii") || n.ends_with(".nii.gz"))
}

/// `scan.nii.gz` → `scan`.
pub fn stem(p: &Path) -> String {
    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("case");
    n.trim_end_matches(".gz")
        .trim_end_matches(".nii")
        .to_string()
}

fn nifti_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_nifti(p))
        .collect();
    v.sort();
    Ok(v)
}

/// Groups `<case>_<channel>` files into complete cases (channel order of `channels`).
fn group_channels(files: &[PathBuf], channels: &[String]) -> Vec<NiftiCase> {
    let mut cases: BTreeMap<(PathBuf, String), BTreeMap<usize, PathBuf>> = BTreeMap::new();
    for f in files {
        let s = stem(f);
        for (i, ch) in channels.iter().enumerate() {
            if let Some(case) = s.strip_suffix(&format!("_{ch}")) {
                let dir = f.parent().map(Path::to_path_buf).unwrap_or_default();
                cases
                    .entry((dir, case.to_string()))
                    .or_default()
                    .insert(i, f.clone());
            }
        }
    }
    cases
        .into_iter()
        .filter(|(_, m)| m.len() == channels.len())
        .map(|((_, name), m)| NiftiCase {
            name,
            files: m.into_values().collect(),
        })
        .collect()
}

/// Classifies `input` for a model with the given channel names.
pub fn detect_input(input: &Path, channels: &[String]) -> Result<InputKind> {
    let multi = channels.len() > 1;
    if input.is_file() {
        if !is_nifti(input) {
            return Err(Error::invalid(
                input,
                "not a NIfTI file (.nii/.nii.gz); pass a NIfTI file or a folder of NIfTI files, a DICOM series folder or a shard folder",
            ));
        }
        if multi {
            return Err(Error::invalid(
                input,
                format!(
                    "the model takes {} channels ({}): pass the folder holding <case>_<channel>.nii.gz files",
                    channels.len(),
                    channels.join(", ")
                ),
            ));
        }
        return Ok(InputKind::Nifti(vec![NiftiCase {
            name: stem(input),
            files: vec![input.to_path_buf()],
        }]));
    }
    if !input.is_dir() {
        return Err(Error::invalid(input, "input not found"));
    }
    if crate::shard::schema::shard_files(input).is_ok() {
        return Ok(InputKind::Shards(input.to_path_buf()));
    }
    let mut files = nifti_files(input)?;
    if multi {
        let subdirs = std::fs::read_dir(input)
            .map_err(|e| Error::io(input, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir());
        for d in subdirs {
            files.extend(nifti_files(&d)?);
        }
        let cases = group_channels(&files, channels);
        if !cases.is_empty() {
            return Ok(InputKind::Nifti(cases));
        }
        if !files.is_empty() {
            return Err(Error::invalid(
                input,
                format!(
                    "NIfTI files found, but no case has all channels: expected <case>_{{{}}}.nii.gz",
                    channels.join(",")
                ),
            ));
        }
    } else if !files.is_empty() {
        let cases = files
            .into_iter()
            .map(|f| NiftiCase {
                name: stem(&f),
                files: vec![f],
            })
            .collect();
        return Ok(InputKind::Nifti(cases));
    }
    let (series, _bad) = crate::volume::scan_dicom_dir(input)?;
    let series: Vec<_> = series.into_iter().filter(|s| !s.is_seg).collect();
    if !series.is_empty() {
        return Ok(InputKind::Dicom(series));
    }
    Err(Error::invalid(
        input,
        "no NIfTI files, DICOM series or part-*.parquet shards found",
    ))
}
