//! Input layouts → a list of [`Study`] (one image volume, its channels, optional labels) and
//! the dataset-level warnings recorded in the manifest.
//! `kits19`, `brats` (channels chosen by the pipeline; a missing one is a per-case error),
//! `msd` / nnU-Net raw v1 and v2 (`imagesTs/` = unlabeled; see [`msd`] for the naming rules),
//! `dicom` (series by SeriesInstanceUID, labels from a DICOM SEG referencing the series),
//! `manifest` CSV, and `auto` detection. A case that cannot be listed correctly (a missing
//! channel, a duplicate case ID, an empty `patient_id`) becomes a failed study with one line
//! naming its file(s); nothing is skipped without a word.
use std::path::{Path, PathBuf};

use super::config::Layout;
use crate::volume::{scan_dicom_dir, DicomSeries};
use crate::{Error, Result};

/// Where a study's image channels come from.
#[derive(Debug, Clone)]
pub(crate) enum StudyImages {
    /// One NIfTI file per channel: (channel name, path).
    Nifti(Vec<(String, PathBuf)>),
    /// A DICOM series (one channel).
    Dicom(Box<DicomSeries>),
    /// SSL4MIS h5 files with datasets `image` and `label`: one volume file (`D×H×W`), or the
    /// 2-D slice files of one volume, in slice order (see [`ssl4mis`]).
    H5(Vec<PathBuf>),
}

/// Where a study's labels come from.
#[derive(Debug, Clone)]
pub(crate) enum LabelSource {
    /// Unlabeled.
    None,
    /// The `label` dataset of the study's own h5 files.
    H5,
    /// A NIfTI label map.
    Nifti(PathBuf),
    /// A DICOM SEG file referencing the study's series.
    DicomSeg(PathBuf),
}

/// One study (one image volume of one patient).
#[derive(Debug, Clone)]
pub(crate) struct Study {
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

fn strip_nii(name: &str) -> Option<&str> {
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
}

/// Detects the layout of `input` (a folder, or a `.csv` manifest).
pub(crate) fn detect(input: &Path) -> Result<Layout> {
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
    if input.join("train_slices.list").is_file() && input.join("data").is_dir() {
        return Ok(Layout::Ssl4mis);
    }
    let entries = crate::volume::sorted_dir(input)?;
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

/// What [`discover`] found: the layout used, the studies (sorted by name) and dataset-level
/// warnings (a case without its label, a SEG referencing no series of the input, …), each
/// naming the file(s) concerned.
#[derive(Debug, Clone)]
pub(crate) struct Discovery {
    /// The layout used (after detection).
    pub layout: Layout,
    /// The studies, sorted by name.
    pub studies: Vec<Study>,
    /// Warnings to record in the manifest (also logged).
    pub warnings: Vec<String>,
    /// The split the layout itself defines (SSL4MIS lists): raw patient ids per split, in
    /// list order. Nothing is re-drawn then.
    pub lists: Option<ListSplit>,
}

/// A split given by the input's own lists (raw patient ids, in list order).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ListSplit {
    /// Training patients, in the order of `train_slices.list` (the labeled budget takes the
    /// first N, as SSL4MIS's `patients_to_slices` does).
    pub train: Vec<String>,
    /// Validation patients.
    pub val: Vec<String>,
    /// Test patients.
    pub test: Vec<String>,
}

/// Lists the studies of `input` for `layout` (`Auto` detects it and logs the choice).
/// `channels` = the pipeline's channel names (brats: file suffixes).
pub(crate) fn discover(input: &Path, layout: Layout, channels: &[String]) -> Result<Discovery> {
    let layout = if layout == Layout::Auto {
        let l = detect(input)?;
        tracing::info!("layout: detected {} in {}", l.name(), input.display());
        l
    } else {
        layout
    };
    if input.is_dir() && crate::volume::sorted_dir(input)?.is_empty() {
        return Err(Error::invalid(input, "empty input folder"));
    }
    let mut lists = None;
    let (mut studies, warnings) = match layout {
        Layout::Kits19 => (kits19(input)?, Vec::new()),
        Layout::Brats => (brats(input, channels)?, Vec::new()),
        Layout::Msd => msd(input)?,
        Layout::Dicom => dicom(input)?,
        Layout::Manifest => (manifest(input)?, Vec::new()),
        Layout::Ssl4mis => {
            let (studies, split) = ssl4mis(input)?;
            lists = Some(split);
            (studies, Vec::new())
        }
        Layout::Auto => unreachable!("resolved above"),
    };
    studies.sort_by(|a, b| a.name.cmp(&b.name));
    if studies.is_empty() {
        return Err(Error::invalid(
            input,
            format!("no studies found for layout {}", layout.name()),
        ));
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(Discovery {
        layout,
        studies,
        warnings,
        lists,
    })
}

/// The ACDC class names of SSL4MIS's h5 release (label 1 RV, 2 myocardium, 3 LV).
pub(crate) const ACDC_LABELS: [&str; 4] = ["background", "RV", "Myo", "LV"];

/// An SSL4MIS folder (ACDC as SSL4MIS, UniMatch and BCP distribute it): `train_slices.list`
/// names the 2-D training slices `data/slices/<frame>_slice_<z>.h5` (grouped here into one
/// study per frame `patientXXX_frameYY`, slices in `z` order), `val.list` and `test.list` name
/// the volumes `data/<frame>.h5`. The lists are the split (patient = `patientXXX`), in list
/// order; nothing is re-drawn. A listed file that is missing fails its study by name.
fn ssl4mis(input: &Path) -> Result<(Vec<Study>, ListSplit)> {
    let read_list = |name: &str| -> Result<Vec<String>> {
        let p = input.join(name);
        if !p.exists() && name != "train_slices.list" {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    };
    let patient_of = |frame: &str| frame.split('_').next().unwrap_or(frame).to_string();
    let mut split = ListSplit::default();
    let mut frames: Vec<(String, Vec<(usize, PathBuf)>)> = Vec::new();
    let mut bad = Vec::new();
    for line in read_list("train_slices.list")? {
        let Some((frame, z)) = line.rsplit_once("_slice_") else {
            bad.push(failed_study(
                line.clone(),
                line.clone(),
                format!("train_slices.list: {line}"),
                format!("train_slices.list: {line:?} is not <patient>_<frame>_slice_<z>"),
            ));
            continue;
        };
        let Ok(z) = z.parse::<usize>() else {
            bad.push(failed_study(
                line.clone(),
                line.clone(),
                format!("train_slices.list: {line}"),
                format!("train_slices.list: slice number {z:?} in {line:?} is not a number"),
            ));
            continue;
        };
        let p = patient_of(frame);
        if !split.train.contains(&p) {
            split.train.push(p);
        }
        let file = input.join("data/slices").join(format!("{line}.h5"));
        match frames.iter_mut().find(|(f, _)| f == frame) {
            Some((_, v)) => v.push((z, file)),
            None => frames.push((frame.to_string(), vec![(z, file)])),
        }
    }
    let mut out = bad;
    for (frame, mut slices) in frames {
        slices.sort();
        let files: Vec<PathBuf> = slices.iter().map(|(_, f)| f.clone()).collect();
        // consecutive slice numbers (the release numbers them from 1); the volume's slice k is
        // the k-th listed
        let first = slices.first().map_or(0, |(z, _)| *z);
        let gap = slices
            .iter()
            .enumerate()
            .find(|(i, (z, _))| *z != first + *i)
            .map(|(i, _)| first + i);
        let mut s = h5_study(input, &frame, patient_of(&frame), files);
        if let Some(z) = gap {
            s.error = Some(format!(
                "train_slices.list lists the slices of {frame} without slice {z}: a volume's slices must be consecutive"
            ));
        }
        out.push(s);
    }
    for (list, dest) in [("val.list", &mut split.val), ("test.list", &mut split.test)] {
        for frame in read_list(list)? {
            let p = patient_of(&frame);
            if !dest.contains(&p) {
                dest.push(p.clone());
            }
            let file = input.join("data").join(format!("{frame}.h5"));
            out.push(h5_study(input, &frame, p, vec![file]));
        }
    }
    for s in out.iter_mut().filter(|s| s.error.is_none()) {
        if let StudyImages::H5(files) = &s.images {
            if let Some(missing) = files.iter().find(|f| !f.is_file()) {
                s.error = Some(format!("{}: listed but not found", missing.display()));
            }
        }
    }
    Ok((out, split))
}

fn h5_study(input: &Path, frame: &str, patient: String, files: Vec<PathBuf>) -> Study {
    Study {
        name: frame.to_string(),
        patient,
        source_path: files.first().map(|f| rel(input, f)).unwrap_or_default(),
        images: StudyImages::H5(files),
        label: LabelSource::H5,
        dataset_labels: ACDC_LABELS.iter().map(|s| s.to_string()).collect(),
        error: None,
    }
}

/// A study that fails with `error` (listed so that the failure is reported, never skipped).
fn failed_study(name: String, patient: String, source_path: String, error: String) -> Study {
    Study {
        name,
        patient,
        images: StudyImages::Nifti(Vec::new()),
        label: LabelSource::None,
        source_path,
        dataset_labels: Vec::new(),
        error: Some(error),
    }
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
    for d in crate::volume::sorted_dir(input)?
        .into_iter()
        .filter(|p| p.is_dir())
    {
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
    for d in crate::volume::sorted_dir(input)?
        .into_iter()
        .filter(|p| p.is_dir())
    {
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

/// Label names from an MSD (`{"0": "background"}`) or nnU-Net v2 (`{"background": 0}`) map;
/// region-based v2 labels (a list of values) are not supported and produce a warning.
fn dataset_labels(v: &serde_json::Value, dj: &Path, warnings: &mut Vec<String>) -> Vec<String> {
    let Some(m) = v.get("labels").and_then(|l| l.as_object()) else {
        return Vec::new();
    };
    let mut pairs: Vec<(usize, String)> = Vec::new();
    for (k, v) in m {
        if let Ok(i) = k.parse::<usize>() {
            if let Some(s) = v.as_str() {
                pairs.push((i, s.to_string()));
            }
        } else if let Some(i) = v.as_u64().filter(|&i| i < 256) {
            pairs.push((i as usize, k.clone()));
        } else {
            warnings.push(format!(
                "{}: label {k:?} = {v} is not a class number (nnU-Net region labels are not supported); ignored",
                dj.display()
            ));
        }
    }
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

/// Channel names from `modality` (MSD, nnU-Net v1) or `channel_names` (nnU-Net v2).
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

/// How the image files of an MSD-style folder are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// MSD: `imagesTr/<case>.nii.gz` (all channels in one file).
    Msd,
    /// nnU-Net raw (v1 and v2): `imagesTr/<case>_<XXXX>.nii.gz`, one file per channel XXXX.
    NnUnet,
}

/// `name_0003` → `("name", 3)`.
fn split_channel(stem: &str) -> Option<(&str, usize)> {
    let (case, idx) = stem.rsplit_once('_')?;
    (idx.len() == 4 && idx.bytes().all(|b| b.is_ascii_digit()) && !case.is_empty())
        .then(|| (case, idx.parse().unwrap_or(0)))
}

/// The NIfTI files of a folder as (stem, path), hidden files (`._x`, `.x`) left out; other
/// files are listed in `others`.
fn nifti_stems(dir: &Path, others: &mut Vec<PathBuf>) -> Result<Vec<(String, PathBuf)>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for p in crate::volume::sorted_dir(dir)? {
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            others.push(p);
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        match strip_nii(name) {
            Some(stem) if p.is_file() => out.push((stem.to_string(), p.clone())),
            _ => others.push(p),
        }
    }
    Ok(out)
}

/// Decides the naming of an MSD-style folder: nnU-Net when `dataset.json` is v2
/// (`channel_names` / `file_ending`); else nnU-Net when every image ends in `_XXXX` and the
/// labels are named after the stripped names (v1), or there are no labels and every stripped
/// case has a `_0000` file; else MSD.
fn detect_naming(v2: bool, images: &[&(String, PathBuf)], labels: &[(String, PathBuf)]) -> Naming {
    if v2 {
        return Naming::NnUnet;
    }
    if images.is_empty() || images.iter().any(|(s, _)| split_channel(s).is_none()) {
        return Naming::Msd;
    }
    let label: std::collections::BTreeSet<&str> = labels.iter().map(|(s, _)| s.as_str()).collect();
    let stripped = images
        .iter()
        .filter(|(s, _)| split_channel(s).is_some_and(|(c, _)| label.contains(c)))
        .count();
    let full = images
        .iter()
        .filter(|(s, _)| label.contains(s.as_str()))
        .count();
    if !label.is_empty() {
        return if stripped > full {
            Naming::NnUnet
        } else {
            Naming::Msd
        };
    }
    let stems: std::collections::BTreeSet<&str> = images.iter().map(|(s, _)| s.as_str()).collect();
    let all_have_0000 = images.iter().all(|(s, _)| {
        split_channel(s).is_some_and(|(c, _)| stems.contains(format!("{c}_0000").as_str()))
    });
    if all_have_0000 {
        Naming::NnUnet
    } else {
        Naming::Msd
    }
}

/// One case of an MSD-style folder: its channel files by index.
#[derive(Default)]
struct MsdCase {
    channels: std::collections::BTreeMap<usize, PathBuf>,
    /// Problems found while grouping (duplicate files, a name that breaks the naming).
    problems: Vec<String>,
}

/// Groups the image files of one folder into cases under `naming`.
fn group_cases(
    files: &[(String, PathBuf)],
    naming: Naming,
) -> std::collections::BTreeMap<String, MsdCase> {
    let mut cases: std::collections::BTreeMap<String, MsdCase> = Default::default();
    for (stem, path) in files {
        let (case, ch) = match naming {
            Naming::Msd => (stem.as_str(), 0),
            Naming::NnUnet => match split_channel(stem) {
                Some(v) => v,
                None => {
                    cases.entry(stem.clone()).or_default().problems.push(format!(
                        "{}: nnU-Net raw names images <case>_<XXXX>.nii.gz (XXXX = 4-digit channel)",
                        path.display()
                    ));
                    continue;
                }
            },
        };
        let c = cases.entry(case.to_string()).or_default();
        if let Some(prev) = c.channels.insert(ch, path.clone()) {
            c.problems.push(format!(
                "duplicate case ID {case}: {} and {} are the same case and channel",
                prev.display(),
                path.display()
            ));
        }
    }
    cases
}

/// The channel files of a case in order, or why they are incomplete: nnU-Net channels must be
/// `0..n` (n from `dataset.json` when it lists channels).
fn case_channels(
    case: &str,
    c: &MsdCase,
    naming: Naming,
    names: &[String],
) -> std::result::Result<Vec<(String, PathBuf)>, String> {
    if let Some(p) = c.problems.first() {
        return Err(p.clone());
    }
    let want = match naming {
        Naming::Msd => 1,
        Naming::NnUnet if !names.is_empty() => names.len(),
        Naming::NnUnet => c.channels.keys().max().map_or(1, |m| m + 1),
    };
    let missing: Vec<String> = (0..want)
        .filter(|i| !c.channels.contains_key(i))
        .map(|i| format!("{case}_{i:04}"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "case {case}: missing channel file(s) {} (expected {want} channel(s) {case}_0000…)",
            missing.join(", ")
        ));
    }
    if let Some(extra) = c.channels.keys().find(|&&i| i >= want) {
        return Err(format!(
            "case {case}: channel file {case}_{extra:04} but dataset.json lists {want} channel(s)"
        ));
    }
    Ok(c.channels
        .iter()
        .map(|(&i, p)| {
            let n = names.get(i).cloned().unwrap_or_else(|| match naming {
                Naming::Msd => "image".into(),
                Naming::NnUnet => format!("channel{i}"),
            });
            (n, p.clone())
        })
        .collect())
}

/// Reads `dataset.json` (Null when absent) and checks a v2 `file_ending`.
fn read_dataset_json(input: &Path) -> Result<serde_json::Value> {
    let dj = input.join("dataset.json");
    if !dj.exists() {
        return Ok(serde_json::Value::Null);
    }
    let t = std::fs::read_to_string(&dj).map_err(|e| Error::io(&dj, e))?;
    let meta: serde_json::Value =
        serde_json::from_str(&t).map_err(|e| Error::invalid(&dj, format!("bad JSON: {e}")))?;
    if let Some(end) = meta.get("file_ending").and_then(|v| v.as_str()) {
        if end != ".nii.gz" && end != ".nii" {
            return Err(Error::invalid(
                &dj,
                format!("file_ending {end:?}: only NIfTI (.nii.gz, .nii) is supported"),
            ));
        }
    }
    Ok(meta)
}

/// MSD and nnU-Net raw (v1, v2) folders: `dataset.json`, `imagesTr/`, `labelsTr/`, optional
/// `imagesTs/` (unlabeled). Naming: see [`detect_naming`]; nnU-Net channels `_0000…` are
/// grouped into one study with channel names from `channel_names` (v2) / `modality`, labels
/// are `labelsTr/<case>.nii.gz` (or `.nii`). Warnings: no `labelsTr/` (per dataset), an
/// `imagesTr` case without a label or a label without an image (per case), non-NIfTI files.
/// A case ID found twice (imagesTr and imagesTs, `.nii` and `.nii.gz`) fails every copy,
/// naming the files.
fn msd(input: &Path) -> Result<(Vec<Study>, Vec<String>)> {
    let meta = read_dataset_json(input)?;
    let mut warnings = Vec::new();
    let labels = dataset_labels(&meta, &input.join("dataset.json"), &mut warnings);
    let v2 = meta.get("channel_names").is_some() || meta.get("file_ending").is_some();
    let mut others = Vec::new();
    let tr = nifti_stems(&input.join("imagesTr"), &mut others)?;
    let ts = nifti_stems(&input.join("imagesTs"), &mut others)?;
    let label_dir = input.join("labelsTr");
    let label_files = nifti_stems(&label_dir, &mut others)?;
    for p in &others {
        let p = p.display();
        warnings.push(format!("{p}: not a NIfTI file (.nii.gz, .nii); skipped"));
    }
    let all: Vec<&(String, PathBuf)> = tr.iter().chain(&ts).collect();
    let naming = detect_naming(v2, &all, &label_files);
    tracing::info!(
        "msd layout: {} naming{}",
        if naming == Naming::NnUnet {
            "nnU-Net raw (<case>_<XXXX> channels)"
        } else {
            "MSD (<case>.nii.gz)"
        },
        if v2 { " (dataset.json v2)" } else { "" }
    );
    if !tr.is_empty() && !label_dir.is_dir() {
        warnings.push(format!(
            "{}: no labelsTr/ folder: every imagesTr case is ingested unlabeled",
            input.display()
        ));
    }
    let mut scan = MsdScan {
        input,
        naming,
        channels: dataset_channels(&meta),
        labels,
        label_dir: label_dir.is_dir(),
        label_of: Default::default(),
        used_labels: Default::default(),
        out: Vec::new(),
        warnings,
    };
    for (s, p) in &label_files {
        scan.label_of.entry(s.clone()).or_default().push(p.clone());
    }
    for (case, c) in group_cases(&tr, naming) {
        scan.case(case, c, true);
    }
    for (case, c) in group_cases(&ts, naming) {
        scan.case(case, c, false);
    }
    for (s, p) in &label_files {
        if !scan.used_labels.contains(s) {
            let p = p.display();
            let msg = format!("{p}: label without an image in imagesTr/; ignored");
            scan.warnings.push(msg);
        }
    }
    fail_duplicate_cases(&mut scan.out);
    Ok((scan.out, scan.warnings))
}

/// What the walk of an MSD / nnU-Net raw folder has found so far.
struct MsdScan<'a> {
    input: &'a Path,
    naming: Naming,
    channels: Vec<String>,
    labels: Vec<String>,
    /// Whether `labelsTr/` exists.
    label_dir: bool,
    label_of: std::collections::BTreeMap<String, Vec<PathBuf>>,
    used_labels: std::collections::BTreeSet<String>,
    out: Vec<Study>,
    warnings: Vec<String>,
}

impl MsdScan<'_> {
    /// One case of `imagesTr/` (`labeled`) or `imagesTs/`: a study, or a failed one.
    fn case(&mut self, case: String, c: MsdCase, labeled: bool) {
        let input = self.input;
        let first = c.channels.values().next().cloned();
        let imgs = case_channels(&case, &c, self.naming, &self.channels);
        let label = if labeled {
            match self.label(&case, &first) {
                Ok(label) => label,
                Err(e) => {
                    let (name, rel) = (
                        case_name(input, &first, &case),
                        rel_or(input, &first, &case),
                    );
                    self.out.push(failed_study(name, case, rel, e));
                    return;
                }
            }
        } else {
            None
        };
        match imgs {
            Ok(imgs) => {
                let mut s = nifti_study(input, case, imgs, label);
                s.dataset_labels = self.labels.clone();
                self.out.push(s);
            }
            Err(e) => {
                let (name, rel) = (
                    case_name(input, &first, &case),
                    rel_or(input, &first, &case),
                );
                self.out.push(failed_study(name, case, rel, e));
            }
        }
    }

    /// The label file of an `imagesTr/` case: none (with a warning when `labelsTr/` exists),
    /// one, or an error naming the duplicates.
    fn label(
        &mut self,
        case: &str,
        first: &Option<PathBuf>,
    ) -> std::result::Result<Option<PathBuf>, String> {
        self.used_labels.insert(case.to_string());
        match self.label_of.get(case).map(Vec::as_slice) {
            Some([one]) => Ok(Some(one.clone())),
            Some(many) => {
                let names: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
                Err(format!(
                    "duplicate label for case {case}: {}",
                    names.join(" and ")
                ))
            }
            None => {
                if self.label_dir {
                    self.warnings.push(format!(
                        "case {case}: {} has no label in labelsTr/ (looked for {case}.nii.gz / {case}.nii); ingested unlabeled",
                        first.as_deref().map(|p| rel(self.input, p)).unwrap_or_default()
                    ));
                }
                Ok(None)
            }
        }
    }
}

/// A study's name from its first file (relative), else the case.
fn case_name(input: &Path, first: &Option<PathBuf>, case: &str) -> String {
    rel_or(input, first, case)
}

fn rel_or(input: &Path, first: &Option<PathBuf>, case: &str) -> String {
    first
        .as_deref()
        .map(|p| rel(input, p))
        .unwrap_or_else(|| case.to_string())
}

/// The same case ID (patient) in several studies of an MSD folder (imagesTr and imagesTs):
/// every copy fails, naming all the files.
fn fail_duplicate_cases(studies: &mut [Study]) {
    let mut by_case: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, s) in studies.iter().enumerate() {
        by_case.entry(s.patient.clone()).or_default().push(i);
    }
    for (case, idx) in by_case.into_iter().filter(|(_, v)| v.len() > 1) {
        let files: Vec<String> = idx
            .iter()
            .map(|&i| studies[i].source_path.clone())
            .collect();
        for &i in &idx {
            if studies[i].error.is_none() {
                studies[i].error = Some(format!(
                    "duplicate case ID {case}: {} (a case must appear once; remove the extra copies)",
                    files.join(" and ")
                ));
            }
        }
    }
}

/// DICOM trees: one study per image series; its label is the DICOM SEG that references it.
/// Warnings: a SEG that references no image series of the input (naming both), a series
/// referenced by several SEGs, and a tree that mixes modalities.
fn dicom(input: &Path) -> Result<(Vec<Study>, Vec<String>)> {
    let (series, bad) = scan_dicom_dir(input)?;
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for (path, why) in bad {
        let r = rel(input, &path);
        out.push(failed_study(r.clone(), r.clone(), r, why));
    }
    let images: Vec<&DicomSeries> = series.iter().filter(|s| !s.is_seg).collect();
    warn_orphan_segs(input, &series, &images, &mut warnings);
    for s in &images {
        out.push(dicom_study(input, s, &series, &mut warnings));
    }
    if out.is_empty() {
        return Err(Error::invalid(input, "no DICOM files found"));
    }
    warn_mixed_modalities(input, &images, &mut warnings);
    // one class list for the whole tree (labeled and unlabeled series alike): the first SEG's
    let names = series
        .iter()
        .find(|s| s.is_seg)
        .and_then(|s| s.files.first())
        .and_then(|f| crate::volume::read_seg_names(&f.path).ok())
        .unwrap_or_default();
    for s in &mut out {
        s.dataset_labels = names.clone();
    }
    Ok((out, warnings))
}

/// A warning for each DICOM SEG whose referenced series is not in the input.
fn warn_orphan_segs(
    input: &Path,
    series: &[DicomSeries],
    images: &[&DicomSeries],
    warnings: &mut Vec<String>,
) {
    for seg in series.iter().filter(|s| s.is_seg) {
        let refs = seg.referenced_series.as_deref();
        if !images.iter().any(|s| Some(s.series_uid.as_str()) == refs) {
            let file = seg
                .files
                .first()
                .map(|f| rel(input, &f.path))
                .unwrap_or_default();
            warnings.push(format!(
                "DICOM SEG {file} references series {}, which is not in the input; ignored",
                refs.unwrap_or("(none: no ReferencedSeriesSequence)")
            ));
        }
    }
}

/// The study of one image series, labeled by the (first) DICOM SEG that references it.
fn dicom_study(
    input: &Path,
    s: &DicomSeries,
    series: &[DicomSeries],
    warnings: &mut Vec<String>,
) -> Study {
    let segs: Vec<&DicomSeries> = series
        .iter()
        .filter(|g| g.is_seg && g.referenced_series.as_deref() == Some(s.series_uid.as_str()))
        .collect();
    let seg_file = segs
        .first()
        .and_then(|g| g.files.first())
        .map(|f| f.path.clone());
    if segs.len() > 1 {
        warnings.push(format!(
            "series {} is referenced by {} DICOM SEGs; using {}",
            s.series_uid,
            segs.len(),
            seg_file
                .as_deref()
                .map(|p| rel(input, p))
                .unwrap_or_default()
        ));
    }
    let folder = rel(input, &s.folder());
    Study {
        name: format!("{folder}#{}", s.series_uid),
        patient: s.patient.clone(),
        images: StudyImages::Dicom(Box::new(s.clone())),
        label: seg_file.map_or(LabelSource::None, LabelSource::DicomSeg),
        source_path: folder,
        dataset_labels: Vec::new(),
        error: None,
    }
}

/// A warning when the image series are of several modalities.
fn warn_mixed_modalities(input: &Path, images: &[&DicomSeries], warnings: &mut Vec<String>) {
    let mut modalities: std::collections::BTreeMap<&str, usize> = Default::default();
    for s in images {
        *modalities.entry(s.modality.as_str()).or_default() += 1;
    }
    if modalities.len() > 1 {
        let list: Vec<String> = modalities
            .iter()
            .map(|(m, n)| format!("{m} ({n} series)"))
            .collect();
        warnings.push(format!(
            "{}: the DICOM tree mixes modalities {}; set channels = [\"<modality>\"] in [prep.preprocess] to keep one (the others then fail by name)",
            input.display(),
            list.join(", ")
        ));
    }
}

/// A CSV manifest `patient_id,<image columns…>,label` (paths relative to the CSV). A row with
/// an empty `patient_id` or image cell fails naming the row; rows listing the same image fail
/// naming both rows.
fn manifest(input: &Path) -> Result<Vec<Study>> {
    let csv_path = if input.is_file() {
        input.to_path_buf()
    } else {
        crate::volume::sorted_dir(input)?
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
    if headers.len() < 3
        || headers.first().map(String::as_str) != Some("patient_id")
        || headers.last().map(String::as_str) != Some("label")
    {
        return Err(Error::invalid(
            &csv_path,
            format!("header {headers:?}: expected patient_id,<image columns…>,label"),
        ));
    }
    let csv_name = csv_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out: Vec<Study> = Vec::new();
    let mut first_row: std::collections::BTreeMap<PathBuf, (usize, usize)> = Default::default();
    for (i, row) in rdr.records().enumerate() {
        let line = i + 2;
        let row = row.map_err(|e| Error::invalid(&csv_path, format!("row {line}: {e}")))?;
        let get = |j: usize| row.get(j).unwrap_or("").trim().to_string();
        let imgs: Vec<(String, PathBuf)> = (1..headers.len() - 1)
            .map(|j| (headers[j].clone(), base.join(get(j))))
            .collect();
        let label = get(headers.len() - 1);
        let label = (!label.is_empty()).then(|| base.join(label));
        let mut s = nifti_study(&base, get(0), imgs, label);
        s.name = format!("{}#{}", get(0), s.source_path);
        if get(0).is_empty() {
            s.error = Some(format!("{csv_name} row {line}: empty patient_id"));
        } else if let Some(j) = (1..headers.len() - 1).find(|&j| get(j).is_empty()) {
            s.error = Some(format!(
                "{csv_name} row {line}: empty image column {:?}",
                headers[j]
            ));
        }
        let image = base.join(get(1));
        let key = std::fs::canonicalize(&image).unwrap_or(image.clone());
        if let Some(&(line0, idx0)) = first_row.get(&key) {
            let e = format!(
                "{csv_name} rows {line0} and {line} list the same image {} (duplicate case)",
                image.display()
            );
            s.name = format!("{}#row{line}", s.name);
            s.error = Some(e.clone());
            out[idx0].error.get_or_insert(e);
        } else if !get(1).is_empty() {
            first_row.insert(key, (line, out.len()));
        }
        out.push(s);
    }
    Ok(out)
}
