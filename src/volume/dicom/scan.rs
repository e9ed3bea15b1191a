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

/// Whether `path` has the DICOM Part 10 "DICM" marker at byte 128.
fn has_dicm(path: &Path) -> bool {
    use std::io::Read;
    let mut b = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
        && &b[128..132] == b"DICM"
}

/// Recursively scans `dir` for DICOM Part-10 files (files without the `DICM` marker are
/// skipped) and groups them by SeriesInstanceUID. Every file is listed once, however many
/// symlinks lead to it, and a symlink loop is walked once. Returns the series (sorted by UID,
/// files in path order) and the files that carry the marker but cannot be used (unparsable,
/// no SeriesInstanceUID, an unreadable sub-folder), each with the reason.
pub fn scan_dicom_dir(dir: &Path) -> Result<(Vec<DicomSeries>, Vec<UnreadableFile>)> {
    let mut walk = Walk::default();
    walk.dir(dir, true)?;
    let Walk {
        mut files, mut bad, ..
    } = walk;
    files.sort();
    let mut series: BTreeMap<String, DicomSeries> = BTreeMap::new();
    // headers are read in parallel (rayon), then grouped in path order
    use rayon::prelude::*;
    let headers: Vec<Option<HeaderResult>> = files.into_par_iter().map(read_header).collect();
    for h in headers.into_iter().flatten() {
        let (uid, facts, file) = match h {
            Ok(v) => v,
            Err(b) => {
                bad.push(b);
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
            })
            .files
            .push(file);
    }
    Ok((series.into_values().collect(), bad))
}

/// The state of a folder walk: folders and files already seen (by canonical path).
#[derive(Default)]
struct Walk {
    seen_dirs: HashSet<PathBuf>,
    seen_files: HashSet<PathBuf>,
    files: Vec<PathBuf>,
    bad: Vec<UnreadableFile>,
}

impl Walk {
    /// Walks `dir`; an unreadable top folder is an error, an unreadable sub-folder is listed.
    fn dir(&mut self, dir: &Path, top: bool) -> Result<()> {
        let canon = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        if !self.seen_dirs.insert(canon) {
            tracing::debug!("{}: folder already walked (symlink loop?)", dir.display());
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

/// One header read: (series UID, series facts, file facts), or why the file is unusable.
type HeaderResult = std::result::Result<(String, SeriesFacts, DicomFile), UnreadableFile>;

/// Series-level facts read from one file.
struct SeriesFacts {
    patient: String,
    modality: String,
    is_seg: bool,
    referenced_series: Option<String>,
}

/// Reads one file's header: `None` without the DICM marker, `Err` when unusable.
fn read_header(p: PathBuf) -> Option<HeaderResult> {
    if !has_dicm(&p) {
        tracing::debug!("{}: no DICM marker, skipped", p.display());
        return None;
    }
    let obj = match open(&p, false) {
        Ok(o) => o,
        Err(e) => return Some(Err((p, strip_path(&e)))),
    };
    let uid = s(&obj, tags::SERIES_INSTANCE_UID).unwrap_or_default();
    if uid.is_empty() {
        return Some(Err((
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
    Some(Ok((uid, facts, file)))
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
