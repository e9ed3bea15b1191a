//! Finding DICOM files and reading their headers: the folder walk (each file once, symlink
//! loops cut), the DICM marker test, and one [`DicomFile`] per file with its frames.
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::{
    f64_1, f64s, first_item, int, mosaic, multiframe, open, s, vec2, vec3, vec6, DicomFile,
    DicomSeries, FileKind, Frame, UnreadableFile,
};
use crate::{Error, Result};

/// SOP Class UID of the DICOM Segmentation Storage IOD.
const SEG_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.4";

/// Whether `path` has the DICOM Part 10 "DICM" marker at byte 128; otherwise why not (its
/// size, when too short to hold one).
fn dicm_marker(path: &Path) -> std::result::Result<(), String> {
    use std::io::Read;
    let mut b = [0u8; 132];
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        return Err("empty file (0 bytes), not a DICOM file".into());
    }
    if len < 132 {
        return Err(format!(
            "{len} bytes: too short for a DICOM Part-10 file (a truncated copy?)"
        ));
    }
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut b));
    match read {
        Err(e) => Err(format!("unreadable: {e}")),
        Ok(()) if &b[128..132] == b"DICM" => Ok(()),
        Ok(()) => Err("not a DICOM Part-10 file (no DICM marker at byte 128)".into()),
    }
}

/// Whether a file without the DICM marker is reported (a `.dcm`/`.ima`/`.dicom` name, or a
/// name without extension or with a numeric one, as scanners write them, lying beside the
/// files of an image series) rather than skipped (`notes.txt`, `liver_seg.nrrd`, …).
fn dicom_like_name(p: &Path) -> bool {
    match p.extension().and_then(|e| e.to_str()) {
        None => true,
        Some(e) => {
            ["dcm", "ima", "dicom"].contains(&e.to_ascii_lowercase().as_str())
                || e.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

fn has_dicom_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["dcm", "ima", "dicom"].contains(&e.to_ascii_lowercase().as_str()))
}

/// Recursively scans `dir` for DICOM Part-10 files and groups them by SeriesInstanceUID.
/// Every file is listed once, however many symlinks lead to it; a symlink to the input, to
/// one of its ancestors or to a folder already walked is skipped with a warning naming it.
/// Returns the series (sorted by UID, files in path order) and the files that cannot be used,
/// each with the reason: files that carry the marker but do not parse (or lack a
/// SeriesInstanceUID), unreadable sub-folders, and files without the marker that look like
/// DICOM (a `.dcm` name, or a scanner-style name beside an image series: an empty or
/// truncated copy). Such a file is also attached to the series in its folder
/// ([`DicomSeries::unreadable`]), which then refuses to be read as a whole.
pub fn scan_dicom_dir(dir: &Path) -> Result<(Vec<DicomSeries>, Vec<UnreadableFile>)> {
    let mut walk = Walk {
        root: std::fs::canonicalize(dir).ok(),
        ..Default::default()
    };
    walk.dir(dir, true)?;
    let Walk {
        mut files, mut bad, ..
    } = walk;
    files.sort();
    let mut series: BTreeMap<String, DicomSeries> = BTreeMap::new();
    let mut unmarked: Vec<UnreadableFile> = Vec::new();
    // headers are read in parallel (rayon), then grouped in path order
    use rayon::prelude::*;
    let headers: Vec<HeaderResult> = files.into_par_iter().map(read_header).collect();
    for h in headers {
        let (uid, facts, file) = match h {
            Ok(v) => v,
            Err(Unusable::Bad(b)) => {
                bad.push(b);
                continue;
            }
            Err(Unusable::Unmarked(b)) => {
                unmarked.push(b);
                continue;
            }
        };
        series
            .entry(uid.clone())
            .or_insert_with(|| DicomSeries {
                series_uid: uid,
                patient: facts.patient,
                modality: facts.modality,
                is_seg: facts.is_seg,
                referenced_series: facts.referenced_series,
                files: Vec::new(),
                unreadable: Vec::new(),
            })
            .files
            .push(file);
    }
    let mut series: Vec<DicomSeries> = series.into_values().collect();
    for (path, why) in unmarked {
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let beside = series.iter().any(|s| !s.is_seg && s.folder() == parent);
        if has_dicom_extension(&path) || (beside && dicom_like_name(&path)) {
            bad.push((path, why));
        } else {
            tracing::debug!("{}: {why}; skipped", path.display());
        }
    }
    for (path, why) in &bad {
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if let Some(s) = series
            .iter_mut()
            .find(|s| !s.is_seg && s.folder() == parent)
        {
            s.unreadable.push((path.clone(), why.clone()));
        }
    }
    Ok((series, bad))
}

/// The state of a folder walk: folders and files already seen (by canonical path).
#[derive(Default)]
struct Walk {
    root: Option<PathBuf>,
    seen_dirs: HashSet<PathBuf>,
    seen_files: HashSet<PathBuf>,
    files: Vec<PathBuf>,
    bad: Vec<UnreadableFile>,
}

impl Walk {
    /// Walks `dir`; an unreadable top folder is an error, an unreadable sub-folder is listed.
    fn dir(&mut self, dir: &Path, top: bool) -> Result<()> {
        let canon = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let outside = self
            .root
            .as_ref()
            .is_some_and(|root| !top && root.starts_with(&canon));
        if outside {
            tracing::warn!(
                "{}: a link to the input folder or one of its parents ({}); skipped, nothing outside the input is read",
                dir.display(),
                canon.display()
            );
            return Ok(());
        }
        if !self.seen_dirs.insert(canon.clone()) {
            tracing::warn!(
                "{}: a link to a folder already read ({}); skipped",
                dir.display(),
                canon.display()
            );
            return Ok(());
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(r) => r,
            Err(e) if !top => {
                self.bad
                    .push((dir.to_path_buf(), format!("unreadable folder: {e}")));
                return Ok(());
            }
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if p.is_dir() {
                if let Err(e) = self.dir(&p, false) {
                    self.bad.push((p.clone(), e.to_string()));
                }
            } else if p.is_file() {
                let canon = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
                if self.seen_files.insert(canon) {
                    self.files.push(p);
                }
            }
        }
        Ok(())
    }
}

/// Why a file is not part of a series: it carries the marker but is unusable, or it lacks
/// the marker (reported only when it looks like a DICOM file, see [`scan_dicom_dir`]).
enum Unusable {
    Bad(UnreadableFile),
    Unmarked(UnreadableFile),
}

/// One header read: (series UID, series facts, file facts), or why the file is unusable.
type HeaderResult = std::result::Result<(String, SeriesFacts, DicomFile), Unusable>;

/// Series-level facts read from one file.
struct SeriesFacts {
    patient: String,
    modality: String,
    is_seg: bool,
    referenced_series: Option<String>,
}

/// Reads one file's header, or says why the file is not usable.
fn read_header(p: PathBuf) -> HeaderResult {
    if let Err(why) = dicm_marker(&p) {
        return Err(Unusable::Unmarked((p, why)));
    }
    let obj = match open(&p, false) {
        Ok(o) => o,
        Err(e) => return Err(Unusable::Bad((p, strip_path(&e)))),
    };
    let uid = s(&obj, tags::SERIES_INSTANCE_UID).unwrap_or_default();
    if uid.is_empty() {
        return Err(Unusable::Bad((
            p,
            "no SeriesInstanceUID (0020,000E): the file cannot be assigned to a series".into(),
        )));
    }
    let sop_class = s(&obj, tags::SOP_CLASS_UID).unwrap_or_default();
    let modality = s(&obj, tags::MODALITY).unwrap_or_default();
    let facts = SeriesFacts {
        is_seg: sop_class == SEG_SOP_CLASS || modality == "SEG",
        modality,
        referenced_series: first_item(&obj, tags::REFERENCED_SERIES_SEQUENCE)
            .and_then(|item| s(item, tags::SERIES_INSTANCE_UID)),
        patient: s(&obj, tags::PATIENT_ID)
            .filter(|v| !v.is_empty())
            .or_else(|| s(&obj, tags::STUDY_INSTANCE_UID))
            .unwrap_or_default(),
    };
    let file = file_facts(&obj, p, facts.is_seg);
    Ok((uid, facts, file))
}

/// The message of an error without its leading `path: ` (the caller names the file).
fn strip_path(e: &Error) -> String {
    match e {
        Error::InvalidInput { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

/// The per-file facts: kind, frame size and frames (none for a SEG).
fn file_facts(obj: &InMemDicomObject, path: PathBuf, is_seg: bool) -> DicomFile {
    let rows = int(obj, tags::ROWS).unwrap_or(0).max(0) as usize;
    let cols = int(obj, tags::COLUMNS).unwrap_or(0).max(0) as usize;
    let n_frames = s(obj, tags::NUMBER_OF_FRAMES)
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(1);
    let mut problem = None;
    let (kind, frame_size, frames) = if is_seg {
        (FileKind::Single, [rows, cols], Vec::new())
    } else if n_frames > 1
        || obj
            .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .is_some()
    {
        match multiframe::frames(obj, n_frames) {
            Ok(fr) => (FileKind::MultiFrame { frames: fr.len() }, [rows, cols], fr),
            Err(why) => {
                problem = Some(why);
                (
                    FileKind::MultiFrame {
                        frames: n_frames.max(0) as usize,
                    },
                    [rows, cols],
                    vec![top_level_frame(obj)],
                )
            }
        }
    } else if mosaic::is_mosaic(obj) {
        match mosaic::frames(obj, [rows, cols]) {
            Ok((m, fr)) => (
                FileKind::Mosaic {
                    tiles: m.tiles,
                    grid: m.grid,
                },
                m.tile_size,
                fr,
            ),
            Err(why) => {
                problem = Some(why);
                (
                    FileKind::Mosaic { tiles: 0, grid: 0 },
                    [rows, cols],
                    vec![top_level_frame(obj)],
                )
            }
        }
    } else {
        (FileKind::Single, [rows, cols], vec![top_level_frame(obj)])
    };
    let first = frames.first();
    DicomFile {
        sop_uid: s(obj, tags::SOP_INSTANCE_UID).unwrap_or_default(),
        position: first.and_then(|f| f.position),
        orientation: first.and_then(|f| f.orientation),
        instance: s(obj, tags::INSTANCE_NUMBER)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        kind,
        frame_size,
        frames,
        problem,
        path,
    }
}

/// The frame described by the top-level tags of a single-frame image.
pub(super) fn top_level_frame(obj: &InMemDicomObject) -> Frame {
    Frame {
        position: f64s(obj, tags::IMAGE_POSITION_PATIENT).and_then(vec3),
        orientation: f64s(obj, tags::IMAGE_ORIENTATION_PATIENT).and_then(vec6),
        spacing: f64s(obj, tags::PIXEL_SPACING).and_then(vec2),
        rescale: top_level_rescale(obj),
        index: 0,
    }
}

/// `[RescaleSlope, RescaleIntercept]` of the top level (`[1, 0]` when absent).
pub(super) fn top_level_rescale(obj: &InMemDicomObject) -> [f64; 2] {
    [
        f64_1(obj, tags::RESCALE_SLOPE).unwrap_or(1.0),
        f64_1(obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0),
    ]
}
