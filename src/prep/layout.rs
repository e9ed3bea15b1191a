//! Input layouts → a list of [`Study`] (one image volume, its channels, optional labels).
//! `kits19`, `brats` (channels chosen by the pipeline; a missing one is a per-case error),
//! `msd` / nnU-Net raw (`imagesTs/` = unlabeled), `dicom` (series by SeriesInstanceUID, labels
//! from a DICOM SEG referencing the series), `manifest` CSV, and `auto` detection.
use std::path::{Path, PathBuf};

use super::config::Layout;
use crate::volume::{scan_dicom_dir, DicomSeries};
use crate::{Error, Result};

/// Where a study's image channels come from.
#[derive(Debug, Clone)]
pub enum StudyImages {
    /// One NIfTI file per channel: (channel name, path).
    Nifti(Vec<(String, PathBuf)>),
    /// A DICOM series (one channel).
    Dicom(Box<DicomSeries>),
}

/// Where a study's labels come from.
#[derive(Debug, Clone)]
pub enum LabelSource {
    /// Unlabeled.
    None,
    /// A NIfTI label map.
    Nifti(PathBuf),
    /// A DICOM SEG file referencing the study's series.
    DicomSeg(PathBuf),
}

/// One study (one image volume of one patient).
#[derive(Debug, Clone)]
pub struct Study {
    /// Unique, stable id (relative path of its first image or series folder + UID); the resume
    /// key in the journal.
    pub name: String,
    /// Raw patient id (hashed before it reaches a shard unless ids are kept).
    pub patient: String,
    /// Image channels.
    pub images: StudyImages,
    /// Labels.
    pub label: LabelSource,
    /// First image file / series folder relative to the input.
    pub source_path: String,
    /// Label names known from the dataset (msd `dataset.json`, DICOM SEG), if any.
    pub dataset_labels: Vec<String>,
    /// A problem found while listing the study (e.g. a missing channel): the study fails.
    pub error: Option<String>,
}

fn rel(input: &Path, p: &Path) -> String {
    p.strip_prefix(input)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

fn strip_nii(name: &str) -> Option<&str> {
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
}

/// Detects the layout of `input` (a folder, or a `.csv` manifest).
pub fn detect(input: &Path) -> Result<Layout> {
    if input.is_file() {
        return if input.extension().is_some_and(|e| e == "csv") {
            Ok(Layout::Manifest)
        } else {
            Err(Error::invalid(
                input,
                "input is a file but not a .csv manifest",
            ))
        };
    }
    if input.join("dataset.json").exists() || input.join("imagesTr").is_dir() {
        return Ok(Layout::Msd);
    }
    let entries = sorted_dir(input)?;
    if entries.is_empty() {
        return Err(Error::invalid(input, "empty input folder"));
    }
    if entries
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "csv"))
    {
        return Ok(Layout::Manifest);
    }
    for d in entries.iter().filter(|p| p.is_dir()) {
        if d.join("imaging.nii.gz").exists() || d.join("imaging.nii").exists() {
            return Ok(Layout::Kits19);
        }
        let name = d.file_name().unwrap_or_default().to_string_lossy();
        if ["seg", "flair", "t1", "t1ce", "t2"]
            .iter()
            .any(|s| d.join(format!("{name}_{s}.nii.gz")).exists())
        {
            return Ok(Layout::Brats);
        }
    }
    Ok(Layout::Dicom)
}

/// Lists the studies of `input` for `layout` (`Auto` detects it and logs the choice).
/// `channels` = the pipeline's channel names (brats: file suffixes).
pub fn discover(input: &Path, layout: Layout, channels: &[String]) -> Result<(Layout, Vec<Study>)> {
    let layout = if layout == Layout::Auto {
        let l = detect(input)?;
        tracing::info!("layout: detected {l:?} in {}", input.display());
        l
    } else {
        layout
    };
    if input.is_dir() && sorted_dir(input)?.is_empty() {
        return Err(Error::invalid(input, "empty input folder"));
    }
    let mut studies = match layout {
        Layout::Kits19 => kits19(input)?,
        Layout::Brats => brats(input, channels)?,
        Layout::Msd => msd(input)?,
        Layout::Dicom => dicom(input)?,
        Layout::Manifest => manifest(input)?,
        Layout::Auto => unreachable!(),
    };
    studies.sort_by(|a, b| a.name.cmp(&b.name));
    if studies.is_empty() {
        return Err(Error::invalid(
            input,
            format!("no studies found for layout {layout:?}"),
        ));
    }
    Ok((layout, studies))
}

fn nifti_study(
    input: &Path,
    patient: String,
    imgs: Vec<(String, PathBuf)>,
    label: Option<PathBuf>,
) -> Study {
    let source_path = imgs.first().map(|(_, p)| rel(input, p)).unwrap_or_default();
    Study {
        name: source_path.clone(),
        patient,
        images: StudyImages::Nifti(imgs),
        label: label.map_or(LabelSource::None, LabelSource::Nifti),
        source_path,
        dataset_labels: Vec::new(),
        error: None,
    }
}

fn kits19(input: &Path) -> Result<Vec<Study>> {
    let mut out = Vec::new();
    for d in sorted_dir(input)?.into_iter().filter(|p| p.is_dir()) {
        let img = ["imaging.nii.gz", "imaging.nii"]
            .iter()
            .map(|n| d.join(n))
            .find(|p| p.exists());
        let case = d.file_name().unwrap().to_string_lossy().into_owned();
        let Some(img) = img else {
            let r = rel(input, &d);
            out.push(Study {
                name: r.clone(),
                patient: case,
                images: StudyImages::Nifti(Vec::new()),
                label: LabelSource::None,
                source_path: r,
                dataset_labels: Vec::new(),
                error: Some(format!(
                    "{}: case folder without imaging.nii.gz",
                    d.display()
                )),
            });
            continue;
        };
        let seg = ["segmentation.nii.gz", "segmentation.nii"]
            .iter()
            .map(|n| d.join(n))
            .find(|p| p.exists());
        let mut s = nifti_study(input, case, vec![("ct".into(), img)], seg);
        s.dataset_labels = vec!["background".into(), "kidney".into(), "tumour".into()];
        out.push(s);
    }
    Ok(out)
}

fn brats(input: &Path, channels: &[String]) -> Result<Vec<Study>> {
    let chans: Vec<String> = if channels.is_empty() {
        vec!["t1".into(), "t1ce".into(), "t2".into()]
    } else {
        channels.to_vec()
    };
    let mut out = Vec::new();
    for d in sorted_dir(input)?.into_iter().filter(|p| p.is_dir()) {
        let case = d.file_name().unwrap().to_string_lossy().into_owned();
        let find = |suffix: &str| {
            [".nii.gz", ".nii"]
                .iter()
                .map(|e| d.join(format!("{case}_{suffix}{e}")))
                .find(|p| p.exists())
        };
        let mut imgs = Vec::new();
        let mut missing = Vec::new();
        for c in &chans {
            match find(c) {
                Some(p) => imgs.push((c.clone(), p)),
                None => missing.push(c.clone()),
            }
        }
        if imgs.is_empty() && missing.len() == chans.len() && find("seg").is_none() {
            continue; // not a case folder
        }
        let mut s = nifti_study(input, case.clone(), imgs, find("seg"));
        s.name = rel(input, &d);
        s.source_path = rel(input, &d.join(format!("{case}_{}.nii.gz", chans[0])));
        if !missing.is_empty() {
            s.error = Some(format!(
                "{}: case {case}: missing channel(s) {} (looked for {case}_<channel>.nii.gz; the pipeline asks for {})",
                d.display(),
                missing.join(", "),
                chans.join(", ")
            ));
        }
        out.push(s);
    }
    Ok(out)
}

/// Label names from an MSD (`{"0": "background"}`) or nnU-Net v2 (`{"background": 0}`) map.
fn dataset_labels(v: &serde_json::Value) -> Vec<String> {
    let Some(m) = v.get("labels").and_then(|l| l.as_object()) else {
        return Vec::new();
    };
    let mut pairs: Vec<(usize, String)> = m
        .iter()
        .filter_map(|(k, v)| {
            if let Ok(i) = k.parse::<usize>() {
                v.as_str().map(|s| (i, s.to_string()))
            } else {
                v.as_u64().map(|i| (i as usize, k.clone()))
            }
        })
        .collect();
    pairs.sort();
    let mut names = Vec::new();
    for (i, n) in pairs {
        if names.len() <= i {
            names.resize(i + 1, String::new());
        }
        names[i] = n;
    }
    names
}

/// Channel names from `modality` (MSD) or `channel_names` (nnU-Net v2).
fn dataset_channels(v: &serde_json::Value) -> Vec<String> {
    let m = v
        .get("channel_names")
        .or_else(|| v.get("modality"))
        .and_then(|m| m.as_object());
    let mut pairs: Vec<(usize, String)> = m
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_lowercase())))
        .collect();
    pairs.sort();
    pairs.into_iter().map(|(_, n)| n).collect()
}

/// Image files of an MSD/nnU-Net case: `<case>_0000.nii.gz…` (nnU-Net) or `<case>.nii.gz`.
fn msd_images(dir: &Path, case: &str, names: &[String]) -> Vec<(String, PathBuf)> {
    let single = dir.join(format!("{case}.nii.gz"));
    if single.exists() {
        let n = names.first().cloned().unwrap_or_else(|| "image".into());
        return vec![(n, single)];
    }
    let mut out = Vec::new();
    for i in 0.. {
        let p = dir.join(format!("{case}_{i:04}.nii.gz"));
        if !p.exists() {
            break;
        }
        let n = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("channel{i}"));
        out.push((n, p));
    }
    out
}

fn msd(input: &Path) -> Result<Vec<Study>> {
    let dj = input.join("dataset.json");
    let meta: serde_json::Value = if dj.exists() {
        let t = std::fs::read_to_string(&dj).map_err(|e| Error::io(&dj, e))?;
        serde_json::from_str(&t).map_err(|e| Error::invalid(&dj, format!("bad JSON: {e}")))?
    } else {
        serde_json::Value::Null
    };
    let labels = dataset_labels(&meta);
    let chans = dataset_channels(&meta);
    let mut out = Vec::new();
    for (sub, labeled) in [("imagesTr", true), ("imagesTs", false)] {
        let dir = input.join(sub);
        if !dir.is_dir() {
            continue;
        }
        let mut cases: Vec<String> = sorted_dir(&dir)?
            .iter()
            .filter_map(|p| {
                p.file_name()?
                    .to_str()
                    .and_then(strip_nii)
                    .map(str::to_string)
            })
            .filter(|n| !n.starts_with('.'))
            .map(|n| match n.rsplit_once('_') {
                Some((c, idx))
                    if idx.len() == 4
                        && idx.chars().all(|c| c.is_ascii_digit())
                        && !dir.join(format!("{n}.nii.gz")).exists() =>
                {
                    c.to_string()
                }
                _ => n,
            })
            .collect();
        cases.dedup();
        for case in cases {
            let imgs = msd_images(&dir, &case, &chans);
            if imgs.is_empty() {
                continue;
            }
            let label = labeled
                .then(|| input.join("labelsTr").join(format!("{case}.nii.gz")))
                .filter(|p| p.exists());
            let mut s = nifti_study(input, case, imgs, label);
            s.dataset_labels = labels.clone();
            out.push(s);
        }
    }
    Ok(out)
}

fn dicom(input: &Path) -> Result<Vec<Study>> {
    let (series, bad) = scan_dicom_dir(input)?;
    let mut out = Vec::new();
    for (path, why) in bad {
        let r = rel(input, &path);
        out.push(Study {
            name: r.clone(),
            patient: r.clone(),
            images: StudyImages::Nifti(Vec::new()),
            label: LabelSource::None,
            source_path: r,
            dataset_labels: Vec::new(),
            error: Some(why),
        });
    }
    for s in series.iter().filter(|s| !s.is_seg) {
        let seg = series
            .iter()
            .find(|g| g.is_seg && g.referenced_series.as_deref() == Some(s.series_uid.as_str()));
        let folder = rel(input, &s.folder());
        out.push(Study {
            name: format!("{folder}#{}", s.series_uid),
            patient: s.patient.clone(),
            images: StudyImages::Dicom(Box::new(s.clone())),
            label: seg.map_or(LabelSource::None, |g| {
                LabelSource::DicomSeg(g.files[0].path.clone())
            }),
            source_path: folder,
            dataset_labels: Vec::new(),
            error: None,
        });
    }
    if out.is_empty() {
        return Err(Error::invalid(input, "no DICOM files found"));
    }
    // one class list for the whole tree (labeled and unlabeled series alike): the first SEG's
    let names = series
        .iter()
        .find(|s| s.is_seg)
        .and_then(|s| crate::volume::read_seg_names(&s.files[0].path).ok())
        .unwrap_or_default();
    for s in &mut out {
        s.dataset_labels = names.clone();
    }
    Ok(out)
}

fn manifest(input: &Path) -> Result<Vec<Study>> {
    let csv_path = if input.is_file() {
        input.to_path_buf()
    } else {
        sorted_dir(input)?
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "csv"))
            .ok_or_else(|| Error::invalid(input, "no .csv manifest"))?
    };
    let base = csv_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut rdr = csv::Reader::from_path(&csv_path)
        .map_err(|e| Error::invalid(&csv_path, format!("reading CSV: {e}")))?;
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| Error::invalid(&csv_path, format!("CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if headers.len() < 3 || headers[0] != "patient_id" || headers.last().unwrap() != "label" {
        return Err(Error::invalid(
            &csv_path,
            format!("header {headers:?}: expected patient_id,<image columns…>,label"),
        ));
    }
    let mut out = Vec::new();
    for (i, row) in rdr.records().enumerate() {
        let row = row.map_err(|e| Error::invalid(&csv_path, format!("row {}: {e}", i + 2)))?;
        let get = |j: usize| row.get(j).unwrap_or("").trim().to_string();
        let imgs: Vec<(String, PathBuf)> = (1..headers.len() - 1)
            .map(|j| (headers[j].clone(), base.join(get(j))))
            .collect();
        let label = get(headers.len() - 1);
        let label = (!label.is_empty()).then(|| base.join(label));
        let mut s = nifti_study(&base, get(0), imgs, label);
        s.name = format!("{}#{}", get(0), s.source_path);
        out.push(s);
    }
    Ok(out)
}
