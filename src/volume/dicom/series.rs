//! Series assembly: frames sorted along the slice normal, grouped by position (time points),
//! the geometry (affine, spacing) and the voxels of one time point.
use std::collections::BTreeMap;
use std::path::Path;

use super::pixels::PixelReader;
use super::{cross, dot, mosaic, open, row_col, DicomFile, DicomSeries, FileKind, Frame};
use crate::volume::{norm, spacing_of, NiftiGeometry, Volume};
use crate::{Error, Result};

/// One 2-D image of a series and the file holding it.
#[derive(Clone, Copy)]
pub(super) struct Slot<'a> {
    pub file: &'a DicomFile,
    pub frame: &'a Frame,
}

/// A sorted series: the frames at each position (one per time point), in slice order.
pub(super) struct Sorted<'a> {
    /// `slices[k]` = the frames at the k-th position, in time order (InstanceNumber, then file
    /// path, then frame order).
    pub slices: Vec<Vec<Slot<'a>>>,
    /// The common ImageOrientationPatient.
    pub orientation: [f64; 6],
    /// The common PixelSpacing `[between rows, between columns]`.
    pub spacing: [f64; 2],
    /// Rows and columns of every frame.
    pub size: [usize; 2],
}

impl Sorted<'_> {
    /// The unit-less slice normal `row × col`.
    pub fn normal(&self) -> [f64; 3] {
        let (r, c) = row_col(self.orientation);
        cross(r, c)
    }
}

/// Where in its file a frame comes from, for messages.
fn frame_name(slot: &Slot) -> String {
    match slot.file.kind {
        FileKind::Single => String::new(),
        FileKind::Mosaic { .. } => format!(" (mosaic tile {})", slot.frame.index),
        FileKind::MultiFrame { .. } => format!(" (multi-frame, frame {})", slot.frame.index + 1),
    }
}

/// Checks one frame's geometry; returns its position, orientation and spacing.
fn frame_geometry(slot: &Slot) -> Result<([f64; 3], [f64; 6], [f64; 2])> {
    let (path, at) = (&slot.file.path, frame_name(slot));
    let pos = slot.frame.position.ok_or_else(|| {
        Error::invalid(
            path,
            format!("no ImagePositionPatient (0020,0032){at}: slices cannot be ordered"),
        )
    })?;
    if pos.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(
            path,
            format!("ImagePositionPatient (0020,0032){at} = {pos:?} is not finite: slices cannot be ordered"),
        ));
    }
    let o = slot.frame.orientation.ok_or_else(|| {
        Error::invalid(
            path,
            format!("no ImageOrientationPatient (0020,0037){at}: slice normal unknown"),
        )
    })?;
    let (r, c) = row_col(o);
    if o.iter().any(|v| !v.is_finite()) || norm(r) < 0.5 || norm(c) < 0.5 || norm(cross(r, c)) < 0.5
    {
        return Err(Error::invalid(
            path,
            format!("ImageOrientationPatient (0020,0037){at} = {o:?} is not two orthogonal unit vectors"),
        ));
    }
    let sp = slot
        .frame
        .spacing
        .ok_or_else(|| Error::invalid(path, format!("missing PixelSpacing (0028,0030){at}")))?;
    if sp.iter().any(|v| !v.is_finite() || *v <= 0.0) {
        return Err(Error::invalid(
            path,
            format!("PixelSpacing (0028,0030){at} = {sp:?} is not positive"),
        ));
    }
    Ok((pos, o, sp))
}

/// Sorts the frames of a series along its slice normal and groups repeated positions.
/// Errors name the file: a file that cannot be part of a volume, a missing or non-finite
/// position, orientation or spacing, or frames that disagree in orientation, spacing or size.
pub(super) fn sort_series(series: &DicomSeries) -> Result<Sorted<'_>> {
    let first = series
        .files
        .first()
        .ok_or_else(|| Error::invalid(series.folder(), "empty DICOM series"))?;

    if let Some(f) = series.files.iter().find(|f| f.problem.is_some()) {
        let why = f.problem.clone().unwrap_or_default();
        return Err(Error::invalid(&f.path, why));
    }
    let mut keyed: Vec<(f64, Slot)> = Vec::new();
    let mut common: Option<([f64; 6], [f64; 2])> = None;
    for file in &series.files {
        let [r, c] = file.frame_size;
        if r == 0 || c == 0 {
            return Err(Error::invalid(
                &file.path,
                format!("Rows (0028,0010) = {r}, Columns (0028,0011) = {c}: an image needs at least one pixel"),
            ));
        }
        if file.frame_size != first.frame_size {
            return Err(Error::Shape {
                path: file.path.clone(),
                case: series.series_uid.clone(),
                expected: first.frame_size.to_vec(),
                found: file.frame_size.to_vec(),
            });
        }
        for frame in &file.frames {
            let slot = Slot { file, frame };
            let (pos, o, sp) = frame_geometry(&slot)?;
            let (o0, sp0) = *common.get_or_insert((o, sp));
            if o.iter().zip(o0.iter()).any(|(a, b)| (a - b).abs() > 1e-4) {
                return Err(Error::invalid(
                    &file.path,
                    format!(
                        "series {}: ImageOrientationPatient differs between files{}",
                        series.series_uid,
                        frame_name(&slot)
                    ),
                ));
            }
            if sp.iter().zip(sp0.iter()).any(|(a, b)| (a - b).abs() > 1e-4) {
                return Err(Error::invalid(
                    &file.path,
                    format!(
                        "series {}: PixelSpacing {sp:?} differs from {sp0:?}{}",
                        series.series_uid,
                        frame_name(&slot)
                    ),
                ));
            }
            let (r, c) = row_col(o);
            keyed.push((dot(pos, cross(r, c)), slot));
        }
    }
    let (orientation, spacing) =
        common.ok_or_else(|| Error::invalid(&first.path, "no image frames in the series"))?;
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut slices: Vec<Vec<Slot>> = Vec::new();
    let mut last = f64::NAN;
    for (d, slot) in keyed {
        match slices.last_mut() {
            Some(group) if (d - last).abs() < 1e-3 => group.push(slot),
            _ => {
                slices.push(vec![slot]);
                last = d;
            }
        }
    }
    for group in &mut slices {
        group.sort_by(|a, b| {
            (a.file.instance, &a.file.path, a.frame.index).cmp(&(
                b.file.instance,
                &b.file.path,
                b.frame.index,
            ))
        });
    }
    Ok(Sorted {
        slices,
        orientation,
        spacing,
        size: first.frame_size,
    })
}

/// Number of time points of a sorted series (1 for a 3-D series); uneven repeats are an error.
fn timepoints(sorted: &Sorted, series: &DicomSeries) -> Result<usize> {
    let t = sorted.slices.first().map_or(0, Vec::len);
    if t == 0 || sorted.slices.iter().any(|s| s.len() != t) {
        let frames: usize = sorted.slices.iter().map(Vec::len).sum();
        return Err(Error::invalid(
            series.folder(),
            format!(
                "series {}: positions repeat unevenly ({frames} images at {} positions)",
                series.series_uid,
                sorted.slices.len()
            ),
        ));
    }
    Ok(t)
}

/// Number of time points of a series (1 for a 3-D series). Errors when positions repeat
/// unevenly or a position/orientation tag is missing.
pub fn series_timepoints(series: &DicomSeries) -> Result<usize> {
    let sorted = sort_series(series)?;
    timepoints(&sorted, series)
}

/// Reads a 3-D series into a RAS [`Volume`]. A 4-D series (repeated ImagePositionPatient) is an
/// error naming the series and its number of time points; read those with
/// [`read_dicom_timepoint`].
pub fn read_dicom_series(series: &DicomSeries) -> Result<Volume> {
    let sorted = sort_series(series)?;
    let t = timepoints(&sorted, series)?;
    if t > 1 {
        let frames: usize = sorted.slices.iter().map(Vec::len).sum();
        return Err(Error::invalid(
            series.folder(),
            format!(
                "series {} is 4-D: {frames} images at {} positions = {t} time points (repeated ImagePositionPatient); refusing to stack it as one volume (choose one with --timepoint N)",
                series.series_uid,
                sorted.slices.len(),
            ),
        ));
    }
    read_sorted(series, &sorted, 0)
}

/// Reads time point `t` (0-based; the images at each position in InstanceNumber, then frame
/// order) of a series as a 3-D RAS [`Volume`].
pub fn read_dicom_timepoint(series: &DicomSeries, t: usize) -> Result<Volume> {
    let sorted = sort_series(series)?;
    let nt = timepoints(&sorted, series)?;
    if t >= nt {
        return Err(Error::invalid(
            series.folder(),
            format!(
                "time point {t} requested, series {} has {nt} (0..{})",
                series.series_uid,
                nt.saturating_sub(1)
            ),
        ));
    }
    read_sorted(series, &sorted, t)
}

/// The geometry of a series (dims, affine, spacing, header; no voxels) from its headers
/// alone, e.g. to choose a slicing axis before reading pixels.
pub(crate) fn dicom_series_geometry(series: &DicomSeries) -> Result<Volume> {
    let sorted = sort_series(series)?;
    timepoints(&sorted, series)?;
    geometry(series, &sorted, 0)
}

/// Dims, affine and header of time point `t` of a sorted series (data left empty).
fn geometry(series: &DicomSeries, sorted: &Sorted, t: usize) -> Result<Volume> {
    let slots: Vec<Slot> = sorted
        .slices
        .iter()
        .filter_map(|s| s.get(t).copied())
        .collect();
    let pos = |s: &Slot| s.frame.position.unwrap_or_default();
    let (Some(first), Some(last)) = (slots.first(), slots.last()) else {
        return Err(Error::invalid(
            series.folder(),
            "no image frames in the series",
        ));
    };
    let (rc, cc) = row_col(sorted.orientation);
    let px = sorted.spacing;
    let [rows, cols] = sorted.size;
    let p0 = pos(first);
    let nz = slots.len();
    let step = if nz > 1 {
        let pl = pos(last);
        [0, 1, 2].map(|i| (pl[i] - p0[i]) / (nz - 1) as f64)
    } else {
        cross(rc, cc).map(|v| v * px[0].max(px[1]))
    };
    check_even_gaps(&slots, series)?;
    // LPS columns: i0 along the row direction with column spacing px[1], i1 along the column
    // direction with row spacing px[0].
    let mut a = [[0.0; 4]; 4];
    for i in 0..3 {
        a[i][0] = rc[i] * px[1];
        a[i][1] = cc[i] * px[0];
        a[i][2] = step[i];
        a[i][3] = p0[i];
    }
    a[3][3] = 1.0;
    for row in a.iter_mut().take(2) {
        row.iter_mut().for_each(|v| *v = -*v);
    }
    let dims = [cols, rows, nz];
    if dims.iter().any(|&d| d == 0 || d > i16::MAX as usize) {
        return Err(Error::invalid(
            &first.file.path,
            format!("volume dims {dims:?}: every dimension must be in 1..=32767"),
        ));
    }
    let spacing = spacing_of(&a);
    Ok(Volume {
        spacing_known: true,
        data: Vec::new(),
        dims,
        header: NiftiGeometry::from_affine(dims, &a, spacing),
        affine: a,
        spacing,
        source: series.folder(),
    })
}

/// Reads the voxels of time point `t` into the series geometry.
fn read_sorted(series: &DicomSeries, sorted: &Sorted, t: usize) -> Result<Volume> {
    let mut vol = geometry(series, sorted, t)?;
    let [rows, cols] = sorted.size;
    let n = rows * cols;
    let mut by_file: BTreeMap<&Path, Vec<(usize, Slot)>> = BTreeMap::new();
    for (k, s) in sorted.slices.iter().enumerate() {
        if let Some(slot) = s.get(t) {
            by_file
                .entry(slot.file.path.as_path())
                .or_default()
                .push((k, *slot));
        }
    }
    let mut data = vec![0f32; n * vol.dims[2]];
    for (path, slots) in by_file {
        let file = slots[0].1.file;
        let obj = open(path, true)?;
        let px = PixelReader::new(&obj, path)?;
        check_grayscale(&px, file, series)?;
        let mut mosaic_values: Option<Vec<i64>> = None;
        for (k, slot) in slots {
            let values = match file.kind {
                FileKind::Single => px.frame(0)?,
                FileKind::MultiFrame { .. } => px.frame(slot.frame.index)?,
                FileKind::Mosaic { grid, .. } => {
                    if mosaic_values.is_none() {
                        mosaic_values = Some(px.frame(0)?);
                    }
                    let m = mosaic_values.as_deref().unwrap_or_default();
                    mosaic::untile(m, px.fmt.cols, grid, sorted.size, slot.frame.index)
                }
            };
            let [slope, inter] = slot.frame.rescale;
            for (dst, v) in data[k * n..(k + 1) * n].iter_mut().zip(values) {
                *dst = (v as f64 * slope + inter) as f32;
            }
        }
    }
    vol.data = data;
    Ok(vol)
}

/// The decoded file must be one-sample grayscale with the frame size its header promised.
fn check_grayscale(px: &PixelReader, file: &DicomFile, series: &DicomSeries) -> Result<()> {
    let f = &px.fmt;
    if f.spp != 1 || f.photometric.starts_with("PALETTE") {
        return Err(Error::invalid(
            &file.path,
            format!(
                "SamplesPerPixel = {}, PhotometricInterpretation {}: only grayscale images are supported",
                f.spp, f.photometric
            ),
        ));
    }
    let expected = match file.kind {
        FileKind::Mosaic { grid, .. } => [file.frame_size[0] * grid, file.frame_size[1] * grid],
        _ => file.frame_size,
    };
    if [f.rows, f.cols] != expected {
        return Err(Error::Shape {
            path: file.path.clone(),
            case: series.series_uid.clone(),
            expected: expected.to_vec(),
            found: vec![f.rows, f.cols],
        });
    }
    let need = match file.kind {
        FileKind::MultiFrame { frames } => frames,
        _ => 1,
    };
    if f.frames < need {
        return Err(Error::invalid(
            &file.path,
            format!(
                "NumberOfFrames = {} but {need} frames are described",
                f.frames
            ),
        ));
    }
    Ok(())
}

/// Uneven gaps (> 1 % of the mean step, or a missing slice) are reported as an error.
fn check_even_gaps(slots: &[Slot], series: &DicomSeries) -> Result<()> {
    if slots.len() < 3 {
        return Ok(());
    }
    let pos = |s: &Slot| s.frame.position.unwrap_or_default();
    let d: Vec<f64> = slots
        .windows(2)
        .map(|w| {
            let (a, b) = (pos(&w[0]), pos(&w[1]));
            norm([b[0] - a[0], b[1] - a[1], b[2] - a[2]])
        })
        .collect();
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    if d.iter()
        .any(|x| (x - mean).abs() > 0.01 * mean.max(1e-6) + 1e-3)
    {
        return Err(Error::invalid(
            series.folder(),
            format!(
                "series {}: uneven slice gaps {:.3}..{:.3} mm (missing slice?){}",
                series.series_uid,
                d.iter().cloned().fold(f64::INFINITY, f64::min),
                d.iter().cloned().fold(0.0, f64::max),
                unreadable_note(series)
            ),
        ));
    }
    Ok(())
}

/// The unreadable files of a series' folder, for a message that says a slice is missing: the
/// likely culprit, named (empty when there are none).
fn unreadable_note(series: &DicomSeries) -> String {
    let names: Vec<String> = series
        .unreadable
        .iter()
        .take(3)
        .map(|(p, why)| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("{name} ({why})")
        })
        .collect();
    match names.len() {
        0 => String::new(),
        _ => format!(
            "; the folder holds {} unreadable file(s), the missing slice's likely copy: {}",
            series.unreadable.len(),
            names.join(", ")
        ),
    }
}
