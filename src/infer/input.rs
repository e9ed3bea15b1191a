//! What `dmnet-infer --input PATH` holds, in the layouts `nnUNetv2_predict -i` accepts and a
//! few more:
//!
//! - a shard folder (`part-*.parquet`);
//! - an MSD / nnU-Net raw root (`dataset.json`, `imagesTs/`, `imagesTr/`): the images of
//!   `imagesTs/` when it holds any, else `imagesTr/`; labels from `labelsTs/` / `labelsTr/`;
//!   modality and class names from `dataset.json` (MSD `modality`/`labels`, nnU-Net v2
//!   `channel_names`/`labels`);
//! - a KiTS tree (`case_00000/imaging.nii.gz`, its `segmentation.nii.gz` as the label);
//! - a flat folder of NIfTI files, or a folder with one level of case sub-folders (BraTS);
//! - a single NIfTI file;
//! - DICOM series (any folder tree of Part-10 files; SEG objects left out).
//!
//! NIfTI files are grouped into cases by their name: nnU-Net channel suffixes
//! `<case>_0000.nii.gz`, `<case>_0001…` (channel i = model channel i), else the sidecar's
//! channel names (`<case>_flair.nii.gz`, BraTS), else one file = one case (one-channel models).
//! The output name is the case name (suffix dropped). Label files (`segmentation`, `*_seg*`,
//! `*_label`, `*_mask`) and AppleDouble / hidden files (`._x.nii.gz`) are skipped. Problems
//! with single cases (an incomplete case, `scan.nii` beside `scan.nii.gz`, an unreadable DICOM
//! file) are listed in [`Input::bad`] and the other cases go on; a folder mixing NIfTI and
//! DICOM files is refused as a whole.
use crate::artifact::compat::{DataFacts, Modality};
use crate::volume::DicomSeries;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One volume case: its name (output file stem), one file per channel, and its label map
/// when the layout has one.
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiCase {
    /// Case name, used for `OUT/<name>.nii.gz`.
    pub name: String,
    /// One file per model channel, in channel order.
    pub files: Vec<PathBuf>,
    /// The case's label map (MSD `labelsTr/`, KiTS `segmentation.nii.gz`), if present.
    pub label: Option<PathBuf>,
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

/// A detected input.
#[derive(Debug, Clone)]
pub struct Input {
    /// The cases.
    pub kind: InputKind,
    /// The layout found: `file`, `msd`, `kits`, `folder`, `dicom` or `shards`.
    pub layout: &'static str,
    /// Files that cannot become a case, with why (one line each in the run's report).
    pub bad: Vec<(PathBuf, String)>,
    /// What the input says about itself as a whole (dataset.json, shards).
    pub facts: DataFacts,
}

/// `scan.nii.gz` → `scan`.
pub fn stem(p: &Path) -> String {
    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("case");
    n.strip_suffix(".gz")
        .unwrap_or(n)
        .strip_suffix(".nii")
        .unwrap_or(n)
        .to_string()
}

/// AppleDouble (`._x`) and other hidden files.
fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn is_nifti(p: &Path) -> bool {
    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    p.is_file() && !is_hidden(p) && (n.ends_with(".nii") || n.ends_with(".nii.gz"))
}

/// Label maps lying beside images: `segmentation`, `label`, `*_seg`, `*_seg-manual`,
/// `*_label(s)`, `*_mask`, `*_gt`.
pub(crate) fn is_label_name(stem: &str) -> bool {
    let s = stem.to_ascii_lowercase();
    if ["segmentation", "label", "labels", "mask", "seg"].contains(&s.as_str()) {
        return true;
    }
    s.rsplit('_').next().is_some_and(|last| {
        last == "seg"
            || last.starts_with("seg-")
            || ["label", "labels", "mask", "gt", "segmentation"].contains(&last)
    })
}

fn nifti_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(crate::volume::sorted_dir(dir)?
        .into_iter()
        .filter(|p| is_nifti(p))
        .collect())
}

/// How a file names its case and channel.
enum Naming {
    /// `<case>_0000`: nnU-Net channel index.
    Index(String, usize),
    /// `<case>_<channel name>`.
    Named(String, usize),
    /// No channel suffix.
    Plain(String),
}

fn naming(stem: &str, channels: &[String]) -> Naming {
    if let Some((case, idx)) = stem.rsplit_once('_') {
        if idx.len() == 4 && idx.chars().all(|c| c.is_ascii_digit()) && !case.is_empty() {
            return Naming::Index(case.into(), idx.parse().unwrap_or(usize::MAX));
        }
        let lower = idx.to_ascii_lowercase();
        if let Some(i) = channels
            .iter()
            .position(|c| c.to_ascii_lowercase() == lower)
        {
            if !case.is_empty() {
                return Naming::Named(case.into(), i);
            }
        }
    }
    Naming::Plain(stem.into())
}

/// A case being assembled: channel index → files claiming it.
type Slots = BTreeMap<usize, Vec<PathBuf>>;

/// Groups image files into cases (see the module docs); returns the cases and the problems.
fn group(files: &[PathBuf], channels: &[String]) -> (Vec<NiftiCase>, Vec<(PathBuf, String)>) {
    let c = channels.len();
    let names: Vec<(PathBuf, Naming)> = files
        .iter()
        .filter(|f| !is_label_name(&stem(f)))
        .map(|f| (f.clone(), naming(&stem(f), channels)))
        .collect();
    let indexed = names.iter().any(|(_, n)| matches!(n, Naming::Index(..)));
    let named = !indexed && names.iter().any(|(_, n)| matches!(n, Naming::Named(..)));
    let mut cases: BTreeMap<String, Slots> = BTreeMap::new();
    let mut bad = Vec::new();
    for (f, n) in names {
        let (case, i) = match n {
            Naming::Index(case, i) if indexed => (case, i),
            Naming::Named(case, i) if named => (case, i),
            Naming::Plain(case) if !indexed && !named && c == 1 => (case, 0),
            _ if indexed => {
                bad.push((
                    f,
                    "not named <case>_XXXX.nii.gz like the other files".into(),
                ));
                continue;
            }
            _ => continue,
        };
        cases.entry(case).or_default().entry(i).or_default().push(f);
    }
    let mut out = Vec::new();
    for (name, slots) in cases {
        match complete(&name, slots, channels) {
            Ok(files) => out.push(NiftiCase {
                name,
                files,
                label: None,
            }),
            Err(e) => bad.push(e),
        }
    }
    (out, bad)
}

/// A case's files in channel order, or the problem naming its files.
fn complete(
    name: &str,
    slots: Slots,
    channels: &[String],
) -> std::result::Result<Vec<PathBuf>, (PathBuf, String)> {
    let first = slots
        .values()
        .flatten()
        .next()
        .cloned()
        .unwrap_or_else(|| PathBuf::from(name));
    if let Some(dup) = slots.values().find(|v| v.len() > 1) {
        let list: Vec<String> = dup.iter().map(|p| p.display().to_string()).collect();
        return Err((
            first,
            format!(
                "case {name}: {} would all be written as {name}.nii.gz; rename or remove all but one",
                list.join(" and ")
            ),
        ));
    }
    let have: Vec<usize> = slots.keys().copied().collect();
    if have != (0..channels.len()).collect::<Vec<_>>() {
        return Err((
            first,
            format!(
                "case {name}: has channel(s) {have:?}, the model takes {} ({}): expected \
                 {name}_0000.nii.gz … or {name}_<channel>.nii.gz for each",
                channels.len(),
                channels.join(", ")
            ),
        ));
    }
    Ok(slots.into_values().flatten().collect())
}

/// Classifies `input` for a model with the given channel names (see the module docs).
pub fn detect_input(input: &Path, channels: &[String]) -> Result<Input> {
    let facts = DataFacts {
        source: input.to_path_buf(),
        ..Default::default()
    };
    if input.is_file() {
        return single_file(input, channels, facts);
    }
    if !input.is_dir() {
        return Err(Error::invalid(input, "input not found"));
    }
    if crate::shard::schema::shard_files(input).is_ok() {
        return Ok(Input {
            kind: InputKind::Shards(input.to_path_buf()),
            layout: "shards",
            bad: Vec::new(),
            facts: crate::artifact::compat::shard_facts(input)?,
        });
    }
    if input.join("imagesTs").is_dir() || input.join("imagesTr").is_dir() {
        return msd(input, channels, facts);
    }
    let subdirs: Vec<PathBuf> = crate::volume::sorted_dir(input)?
        .into_iter()
        .filter(|p| p.is_dir() && !is_hidden(p))
        .collect();
    if subdirs.iter().any(|d| kits_image(d).is_some()) {
        return kits(input, &subdirs, channels, facts);
    }
    folder(input, &subdirs, channels, facts)
}

fn single_file(input: &Path, channels: &[String], facts: DataFacts) -> Result<Input> {
    if !is_nifti(input) {
        return Err(Error::invalid(
            input,
            "not a NIfTI file (.nii/.nii.gz); pass a NIfTI file, a folder of NIfTI files, an \
             MSD/nnU-Net or KiTS folder, a DICOM folder or a shard folder",
        ));
    }
    if channels.len() > 1 {
        return Err(Error::invalid(
            input,
            format!(
                "the model takes {} channels ({}): pass the folder holding <case>_0000.nii.gz … \
                 or <case>_<channel>.nii.gz files",
                channels.len(),
                channels.join(", ")
            ),
        ));
    }
    let name = match naming(&stem(input), channels) {
        Naming::Index(case, 0) => case,
        _ => stem(input),
    };
    Ok(Input {
        kind: InputKind::Nifti(vec![NiftiCase {
            name,
            files: vec![input.to_path_buf()],
            label: None,
        }]),
        layout: "file",
        bad: Vec::new(),
        facts,
    })
}

/// The label file of `case` in `dir` (`case.nii.gz` or `case.nii`), if any.
fn label_in(dir: &Path, case: &str) -> Option<PathBuf> {
    [".nii.gz", ".nii"]
        .iter()
        .map(|ext| dir.join(format!("{case}{ext}")))
        .find(|p| p.is_file())
}

fn msd(input: &Path, channels: &[String], mut facts: DataFacts) -> Result<Input> {
    let (images, labels) = match input.join("imagesTs") {
        ts if ts.is_dir() && !nifti_files(&ts)?.is_empty() => (ts, input.join("labelsTs")),
        _ => (input.join("imagesTr"), input.join("labelsTr")),
    };
    tracing::info!("MSD/nnU-Net folder: predicting {}", images.display());
    read_dataset_json(&input.join("dataset.json"), &mut facts)?;
    let (mut cases, bad) = group(&nifti_files(&images)?, channels);
    for c in &mut cases {
        c.label = label_in(&labels, &c.name);
    }
    finish(input, "msd", cases, bad, facts)
}

/// Modality (all channels agreeing), number of channels and class names of a dataset.json.
fn read_dataset_json(path: &Path, facts: &mut DataFacts) -> Result<()> {
    if !path.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid(path, format!("invalid JSON: {e}")))?;
    let by_index = |m: &serde_json::Map<String, serde_json::Value>| -> Vec<(usize, String)> {
        let mut pairs: Vec<(usize, String)> = m
            .iter()
            .filter_map(|(k, v)| match (k.parse::<usize>(), v) {
                (Ok(i), serde_json::Value::String(s)) => Some((i, s.clone())),
                (Err(_), v) => v.as_u64().map(|i| (i as usize, k.clone())),
                _ => None,
            })
            .collect();
        pairs.sort();
        pairs
    };
    let chans = v.get("channel_names").or_else(|| v.get("modality"));
    if let Some(m) = chans.and_then(|m| m.as_object()) {
        let names: Vec<String> = by_index(m).into_iter().map(|(_, n)| n).collect();
        facts.num_channels = Some(names.len());
        let mods: Vec<Option<Modality>> = names.iter().map(|n| Modality::from_name(n)).collect();
        facts.modality = mods
            .first()
            .cloned()
            .flatten()
            .filter(|m| mods.iter().all(|x| x.as_ref() == Some(m)));
    }
    if let Some(m) = v.get("labels").and_then(|m| m.as_object()) {
        let pairs = by_index(m);
        if pairs.iter().enumerate().all(|(i, (k, _))| i == *k) && !pairs.is_empty() {
            facts.classes = Some(pairs.into_iter().map(|(_, n)| n).collect());
        }
    }
    Ok(())
}

/// `imaging.nii.gz` (or `.nii`) of a KiTS case folder.
fn kits_image(dir: &Path) -> Option<PathBuf> {
    label_in(dir, "imaging")
}

fn kits(input: &Path, dirs: &[PathBuf], channels: &[String], facts: DataFacts) -> Result<Input> {
    if channels.len() != 1 {
        return Err(Error::invalid(
            input,
            format!(
                "a KiTS tree holds one image per case; the model takes {} channels",
                channels.len()
            ),
        ));
    }
    let cases = dirs
        .iter()
        .filter_map(|d| {
            Some(NiftiCase {
                name: d.file_name()?.to_string_lossy().into_owned(),
                files: vec![kits_image(d)?],
                label: label_in(d, "segmentation"),
            })
        })
        .collect();
    finish(input, "kits", cases, Vec::new(), facts)
}

fn folder(input: &Path, dirs: &[PathBuf], channels: &[String], facts: DataFacts) -> Result<Input> {
    let top = nifti_files(input)?;
    let mut all = top.clone();
    if channels.len() > 1 || top.is_empty() {
        for d in dirs {
            all.extend(nifti_files(d)?);
        }
    }
    let dicom = dicom_files(input)?;
    if !top.is_empty() && !dicom.is_empty() {
        return Err(Error::invalid(
            input,
            format!(
                "the folder holds NIfTI files ({}) and {} DICOM file(s) (e.g. {}): refusing to \
                 guess which to segment; move one kind out, or pass the NIfTI file itself",
                top.iter()
                    .map(|p| stem(p) + ".nii*")
                    .collect::<Vec<_>>()
                    .join(", "),
                dicom.len(),
                dicom[0].display()
            ),
        ));
    }
    if all.is_empty() {
        return dicom_input(input, facts);
    }
    if channels.len() > 1
        && top.iter().chain(&all).all(|f| {
            !matches!(
                naming(&stem(f), channels),
                Naming::Index(..) | Naming::Named(..)
            )
        })
    {
        return Err(Error::invalid(
            input,
            format!(
                "NIfTI files found, but none is named for a channel: expected <case>_0000.nii.gz \
                 … or <case>_{{{}}}.nii.gz",
                channels.join(",")
            ),
        ));
    }
    let mut bad = Vec::new();
    let mut cases: Vec<NiftiCase> = Vec::new();
    // Group per folder, so that one case's channels never mix with another folder's.
    let mut by_dir: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for f in all {
        by_dir
            .entry(f.parent().map(Path::to_path_buf).unwrap_or_default())
            .or_default()
            .push(f);
    }
    for files in by_dir.values() {
        let (c, b) = group(files, channels);
        cases.extend(c);
        bad.extend(b);
    }
    finish(input, "folder", cases, bad, facts)
}

/// Files in `dir` (not below) with the DICOM Part-10 `DICM` marker.
fn dicom_files(dir: &Path) -> Result<Vec<PathBuf>> {
    use std::io::Read;
    let has_dicm = |p: &Path| {
        let mut b = [0u8; 132];
        std::fs::File::open(p)
            .and_then(|mut f| f.read_exact(&mut b))
            .is_ok()
            && b.get(128..132) == Some(b"DICM".as_slice())
    };
    Ok(crate::volume::sorted_dir(dir)?
        .into_iter()
        .filter(|p| p.is_file() && !is_nifti(p) && has_dicm(p))
        .collect())
}

fn dicom_input(input: &Path, facts: DataFacts) -> Result<Input> {
    let (series, unreadable) = crate::volume::scan_dicom_dir(input)?;
    let series: Vec<_> = series.into_iter().filter(|s| !s.is_seg).collect();
    if series.is_empty() && unreadable.is_empty() {
        return Err(Error::invalid(
            input,
            "no NIfTI files, DICOM series or part-*.parquet shards found",
        ));
    }
    Ok(Input {
        kind: InputKind::Dicom(series),
        layout: "dicom",
        bad: unreadable,
        facts,
    })
}

/// Case names must be unique (they are the output file names).
fn finish(
    input: &Path,
    layout: &'static str,
    cases: Vec<NiftiCase>,
    mut bad: Vec<(PathBuf, String)>,
    facts: DataFacts,
) -> Result<Input> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for c in &cases {
        *seen.entry(c.name.clone()).or_default() += 1;
    }
    let (ok, dup): (Vec<NiftiCase>, Vec<NiftiCase>) = cases
        .into_iter()
        .partition(|c| seen.get(&c.name) == Some(&1));
    for c in dup {
        let file = c.files.first().cloned().unwrap_or_default();
        bad.push((
            file,
            format!(
                "case {} appears in more than one folder; its outputs would overwrite each other",
                c.name
            ),
        ));
    }
    if ok.is_empty() && bad.is_empty() {
        return Err(Error::invalid(
            input,
            "no image files found (label files and hidden files are skipped)",
        ));
    }
    Ok(Input {
        kind: InputKind::Nifti(ok),
        layout,
        bad,
        facts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_and_channel_suffixes_are_recognised() {
        for l in [
            "segmentation",
            "case_seg",
            "sub-unf01_T2w_seg-manual",
            "x_label",
            "x_mask",
        ] {
            assert!(is_label_name(l), "{l}");
        }
        for i in ["la_001_0000", "case_flair", "imaging", "seg_case_0000"] {
            assert!(!is_label_name(i), "{i}");
        }
        let ch = ["flair".to_string(), "t1ce".to_string()];
        assert!(matches!(naming("la_001_0001", &ch), Naming::Index(c, 1) if c == "la_001"));
        assert!(matches!(naming("p1_T1CE", &ch), Naming::Named(c, 1) if c == "p1"));
        assert!(matches!(naming("scan", &ch), Naming::Plain(c) if c == "scan"));
        assert_eq!(stem(Path::new("a/scan.nii")), "scan");
        assert_eq!(stem(Path::new("a/scan.nii.gz")), "scan");
    }
}
