//! NIfTI-1 reading and mask writing. The header is parsed with the `nifti` crate; voxels are
//! decoded here (all integer/float datatypes, either byte order), so gzip errors and
//! truncation are reported with the file name. Scaling: `v·scl_slope + scl_inter` unless the
//! slope is 0 (NIfTI-1 standard: "no scaling"). Affine: sform when `sform_code > 0`, else
//! qform (`qform_code > 0`), else the ANALYZE fallback diag(pixdim).
use std::io::{Read, Write};
use std::path::Path;

use super::{spacing_of, NiftiGeometry, Volume};
use crate::{Error, Result};

/// Reads a 3-D NIfTI volume (`.nii` or `.nii.gz`). A 4-D file with more than one time point is
/// an error (use [`read_nifti_timepoint`]). NaN/Inf voxels are accepted here; callers that
/// need finite data call [`Volume::check_finite`].
pub fn read_nifti(path: &Path) -> Result<Volume> {
    let raw = RawNifti::read(path)?;
    if raw.nt > 1 {
        return Err(Error::invalid(
            path,
            format!(
                "4-D NIfTI with {} time points; expected a 3-D volume",
                raw.nt
            ),
        ));
    }
    raw.timepoint(path, 0)
}

/// Reads time point `t` (0-based) of a 3-D or 4-D NIfTI file. The volume's header is 3-D
/// (a mask written with it has the 3-D geometry).
pub fn read_nifti_timepoint(path: &Path, t: usize) -> Result<Volume> {
    RawNifti::read(path)?.timepoint(path, t)
}

/// Time point `t` of a 4-D NIfTI file, or the volume of a 3-D one.
pub(crate) fn read_nifti_timepoint_or_3d(path: &Path, t: usize) -> Result<Volume> {
    let raw = RawNifti::read(path)?;
    let t = if raw.nt == 1 { 0 } else { t };
    raw.timepoint(path, t)
}

/// Reads a label map: like [`read_nifti`], but every value must be finite, a whole number and
/// within 0..=65535 (float label maps with whole values, as BraTS ships, are accepted).
pub fn read_nifti_label(path: &Path) -> Result<Volume> {
    let v = read_nifti(path)?;
    for (i, &x) in v.data.iter().enumerate() {
        if !x.is_finite() || x.fract() != 0.0 || !(0.0..=65535.0).contains(&x) {
            return Err(Error::invalid(
                path,
                format!(
                    "label map has a non-whole or out-of-range value {x} at voxel {i}; labels must be whole numbers 0..=65535"
                ),
            ));
        }
    }
    Ok(v)
}

/// Writes `mask` (uint8, one value per voxel of `reference`, same index order) as a NIfTI-1
/// file with the reference's dims, pixdim, qform/sform codes and parameters; datatype uint8,
/// `scl_slope` 1, `scl_inter` 0. Gzipped when `path` ends in `.gz`. Written to a temporary
/// name beside `path`, then renamed, so readers never see a partial file.
pub fn write_nifti_mask(path: &Path, mask: &[u8], reference: &Volume) -> Result<()> {
    if mask.len() != reference.len() {
        return Err(Error::Shape {
            path: path.to_path_buf(),
            case: reference.source.display().to_string(),
            expected: reference.dims.to_vec(),
            found: vec![mask.len()],
        });
    }
    let mut bytes = header_bytes(&reference.header, reference.dims);
    bytes.extend_from_slice(mask);
    let gz = path.extension().is_some_and(|e| e == "gz");
    crate::atomic::write_with(path, |w| {
        if gz {
            let mut enc = flate2::write::GzEncoder::new(w, flate2::Compression::new(6));
            enc.write_all(&bytes)?;
            enc.finish().map(|_| ())
        } else {
            w.write_all(&bytes)
        }
    })
}

/// A parsed NIfTI-1 header with the facts decoding needs.
struct Parsed {
    header: nifti::NiftiHeader,
    /// Big-endian file.
    big: bool,
    dims: [usize; 3],
    /// Product of dims 4..=7.
    nt: usize,
    /// Byte offset of the voxels.
    offset: usize,
}

/// A decoded NIfTI file: header + all voxels (all time points) as f32.
struct RawNifti {
    header: nifti::NiftiHeader,
    dims: [usize; 3],
    nt: usize,
    data: Vec<f32>,
}

/// The file's bytes, gunzipped when it starts with the gzip magic; `limit` stops early (a
/// header-only read).
fn file_bytes(path: &Path, limit: Option<usize>) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(|e| Error::io(path, e))?;
    let head = std::io::Cursor::new(magic[..n].to_vec()).chain(f);
    let gz = n == 2 && magic == [0x1f, 0x8b];
    let mut reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(head))
    } else {
        Box::new(head)
    };
    if let Some(l) = limit {
        reader = Box::new(reader.take(l as u64));
    }
    let mut out = Vec::new();
    reader.read_to_end(&mut out).map_err(|e| {
        if gz {
            Error::invalid(path, format!("corrupt or truncated gzip: {e}"))
        } else {
            Error::io(path, e)
        }
    })?;
    Ok(out)
}

/// Parses and checks the header: magic, dims (as the signed shorts the file holds), offset,
/// and finite geometry (pixdim, and the sform or qform in use). Errors name the file and show
/// the values as stored.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    if bytes.len() < 348 {
        return Err(Error::invalid(
            path,
            format!("{} bytes: too short for a NIfTI-1 header", bytes.len()),
        ));
    }
    if &bytes[344..347] != b"n+1" && &bytes[344..347] != b"ni1" {
        return Err(Error::invalid(
            path,
            format!(
                "not a NIfTI-1 file: magic {:?} (expected \"n+1\")",
                String::from_utf8_lossy(&bytes[344..348])
            ),
        ));
    }
    let header = nifti::NiftiHeader::from_reader(bytes)
        .map_err(|e| Error::invalid(path, format!("bad NIfTI header: {e}")))?;
    let big = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) != 348;
    let dim = |i: usize| {
        let b = [bytes[40 + 2 * i], bytes[41 + 2 * i]];
        if big {
            i16::from_be_bytes(b)
        } else {
            i16::from_le_bytes(b)
        }
    };
    let nd = dim(0);
    if !(2..=7).contains(&nd) {
        return Err(Error::invalid(path, format!("dim[0] = {nd} is not 2..=7")));
    }
    let mut d = [1usize; 8];
    for (i, slot) in d.iter_mut().enumerate().skip(1).take(nd as usize) {
        let v = dim(i);
        // a 0 in dims 4..=7 is read as 1 (some writers leave it), anything else must be >= 1
        if v < 0 || (v == 0 && i <= 3) {
            return Err(Error::invalid(
                path,
                format!("dim[{i}] = {v}: every dimension in use must be at least 1"),
            ));
        }
        *slot = v.max(1) as usize;
    }
    let vox = header.vox_offset;
    if !vox.is_finite() || vox < 0.0 {
        return Err(Error::invalid(
            path,
            format!("vox_offset = {vox} is not a valid byte offset"),
        ));
    }
    // single-file NIfTI: data never starts inside the 348-byte header + 4 extension bytes
    let single = &bytes[344..347] == b"n+1";
    let offset = if single {
        (vox as usize).max(352)
    } else {
        vox as usize
    };
    check_geometry(path, &header)?;
    Ok(Parsed {
        header,
        big,
        dims: [d[1], d[2], d[3]],
        nt: d[4..].iter().product(),
        offset,
    })
}

/// Every geometry value the reader uses must be finite: pixdim[1..=3], and the sform (code
/// > 0) or else the qform (code > 0) parameters; the resulting affine must not be singular.
fn check_geometry(path: &Path, h: &nifti::NiftiHeader) -> Result<()> {
    let bad = |what: String| Err(Error::invalid(path, what));
    if let Some(i) = (1..=3).find(|&i| !h.pixdim[i].is_finite()) {
        return bad(format!(
            "pixdim[{i}] = {}: voxel sizes must be finite",
            h.pixdim[i]
        ));
    }
    if h.sform_code > 0 {
        let rows = [h.srow_x, h.srow_y, h.srow_z];
        if rows.iter().flatten().any(|v| !v.is_finite()) {
            return bad(format!(
                "sform (sform_code {}) has NaN/Inf: srow_x {:?}, srow_y {:?}, srow_z {:?}",
                h.sform_code, h.srow_x, h.srow_y, h.srow_z
            ));
        }
    } else if h.qform_code > 0 {
        let q = [
            h.quatern_b,
            h.quatern_c,
            h.quatern_d,
            h.quatern_x,
            h.quatern_y,
            h.quatern_z,
            h.pixdim[0],
        ];
        if q.iter().any(|v| !v.is_finite()) {
            return bad(format!(
                "qform (qform_code {}) has NaN/Inf: quatern_b/c/d {:?}, qoffset {:?}, qfac {}",
                h.qform_code,
                &q[0..3],
                &q[3..6],
                h.pixdim[0]
            ));
        }
    }
    let a = header_affine(h);
    let det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
        - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
    if !det.is_finite() || det.abs() < 1e-12 || a.iter().flatten().any(|v| !v.is_finite()) {
        return bad(format!(
            "the voxel-to-world affine ({}) is singular or not finite: {a:?}",
            if h.sform_code > 0 {
                "sform"
            } else if h.qform_code > 0 {
                "qform"
            } else {
                "pixdim"
            }
        ));
    }
    Ok(())
}

/// Reads the header of a NIfTI file (no voxels): a [`Volume`] with dims, affine, spacing and
/// header and empty data (time point 0 of a 4-D file).
pub(crate) fn read_nifti_geometry(path: &Path) -> Result<Volume> {
    let bytes = file_bytes(path, Some(352))?;
    let p = parse_header(path, &bytes)?;
    RawNifti {
        header: p.header,
        dims: p.dims,
        nt: 1,
        data: Vec::new(),
    }
    .timepoint(path, 0)
}

impl RawNifti {
    fn read(path: &Path) -> Result<Self> {
        let bytes = file_bytes(path, None)?;
        let p = parse_header(path, &bytes)?;
        let (size, conv) = converter(p.header.datatype).ok_or_else(|| {
            Error::invalid(path, format!("unsupported datatype {}", p.header.datatype))
        })?;
        // u128: a hostile header cannot wrap the arithmetic, so messages show real values
        let n = p.dims.iter().map(|&d| d as u128).product::<u128>() * p.nt as u128;
        let need = p.offset as u128 + n * size as u128;
        if (bytes.len() as u128) < need {
            return Err(Error::invalid(
                path,
                format!(
                    "truncated voxel data: {} bytes, the header needs {need} ({:?}×{} voxels of {size} bytes after offset {})",
                    bytes.len(),
                    p.dims,
                    p.nt,
                    p.offset
                ),
            ));
        }
        let (slope, inter) = (p.header.scl_slope, p.header.scl_inter);
        let scale = slope != 0.0 && slope.is_finite() && !(slope == 1.0 && inter == 0.0);
        let data: Vec<f32> = bytes[p.offset..need as usize]
            .chunks_exact(size)
            .map(|b| {
                let v = conv(b, p.big);
                if scale {
                    (v * slope as f64 + inter as f64) as f32
                } else {
                    v as f32
                }
            })
            .collect();
        Ok(RawNifti {
            header: p.header,
            dims: p.dims,
            nt: p.nt,
            data,
        })
    }

    fn timepoint(self, path: &Path, t: usize) -> Result<Volume> {
        if t >= self.nt {
            return Err(Error::invalid(
                path,
                format!("time point {t} requested, file has {}", self.nt),
            ));
        }
        let n3 = self.dims[0] * self.dims[1] * self.dims[2];
        let data = if self.nt == 1 || self.data.is_empty() {
            self.data
        } else {
            self.data[t * n3..(t + 1) * n3].to_vec()
        };
        let h = &self.header;
        let affine = header_affine(h);
        let mut dim = h.dim;
        dim[0] = dim[0].min(3);
        dim[4..].iter_mut().for_each(|d| *d = 1);
        let header = NiftiGeometry {
            dim,
            pixdim: h.pixdim,
            qform_code: h.qform_code,
            sform_code: h.sform_code,
            quatern: [
                h.quatern_b,
                h.quatern_c,
                h.quatern_d,
                h.quatern_x,
                h.quatern_y,
                h.quatern_z,
            ],
            srow: [h.srow_x, h.srow_y, h.srow_z],
            xyzt_units: h.xyzt_units,
        };
        Ok(Volume {
            spacing_known: true,
            data,
            dims: self.dims,
            spacing: spacing_of(&affine),
            affine,
            header,
            source: path.to_path_buf(),
        })
    }
}

type Conv = fn(&[u8], bool) -> f64;

macro_rules! conv_fn {
    ($t:ty, $n:expr) => {
        (|b: &[u8], big: bool| {
            let a: [u8; $n] = b.try_into().unwrap();
            (if big {
                <$t>::from_be_bytes(a)
            } else {
                <$t>::from_le_bytes(a)
            }) as f64
        }) as Conv
    };
}

/// Bytes per voxel and decoder for a NIfTI datatype code.
fn converter(datatype: i16) -> Option<(usize, Conv)> {
    Some(match datatype {
        2 => (1, (|b: &[u8], _| b[0] as f64) as Conv),
        256 => (1, (|b: &[u8], _| b[0] as i8 as f64) as Conv),
        4 => (2, conv_fn!(i16, 2)),
        512 => (2, conv_fn!(u16, 2)),
        8 => (4, conv_fn!(i32, 4)),
        768 => (4, conv_fn!(u32, 4)),
        16 => (4, conv_fn!(f32, 4)),
        64 => (8, conv_fn!(f64, 8)),
        1024 => (8, conv_fn!(i64, 8)),
        1280 => (8, conv_fn!(u64, 8)),
        _ => return None,
    })
}

/// Voxel→RAS affine: sform if `sform_code > 0`, else qform if `qform_code > 0`, else
/// diag(pixdim) (the NIfTI-1 "method 1" fallback).
fn header_affine(h: &nifti::NiftiHeader) -> [[f64; 4]; 4] {
    if h.sform_code > 0 {
        let r = |s: [f32; 4]| s.map(|v| v as f64);
        return [r(h.srow_x), r(h.srow_y), r(h.srow_z), [0.0, 0.0, 0.0, 1.0]];
    }
    let p = |i: usize| {
        let v = h.pixdim[i] as f64;
        if v > 0.0 {
            v
        } else {
            1.0
        }
    };
    if h.qform_code > 0 {
        return qform_affine(
            [h.quatern_b, h.quatern_c, h.quatern_d].map(|v| v as f64),
            [h.quatern_x, h.quatern_y, h.quatern_z].map(|v| v as f64),
            [p(1), p(2), p(3)],
            if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 },
        );
    }
    [
        [p(1), 0.0, 0.0, 0.0],
        [0.0, p(2), 0.0, 0.0],
        [0.0, 0.0, p(3), 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// The NIfTI-1 quaternion formula (nifti1.h, method 2).
pub(crate) fn qform_affine(
    bcd: [f64; 3],
    offset: [f64; 3],
    d: [f64; 3],
    qfac: f64,
) -> [[f64; 4]; 4] {
    let [b, c, dd] = bcd;
    let a2 = 1.0 - (b * b + c * c + dd * dd);
    let (a, b, c, dd) = if a2 < 1e-7 {
        let s = (b * b + c * c + dd * dd).sqrt();
        (0.0, b / s, c / s, dd / s)
    } else {
        (a2.sqrt(), b, c, dd)
    };
    let r = [
        [
            a * a + b * b - c * c - dd * dd,
            2.0 * (b * c - a * dd),
            2.0 * (b * dd + a * c),
        ],
        [
            2.0 * (b * c + a * dd),
            a * a + c * c - b * b - dd * dd,
            2.0 * (c * dd - a * b),
        ],
        [
            2.0 * (b * dd - a * c),
            2.0 * (c * dd + a * b),
            a * a + dd * dd - c * c - b * b,
        ],
    ];
    let s = [d[0], d[1], d[2] * qfac];
    let mut m = [[0.0; 4]; 4];
    for i in 0..3 {
        for j in 0..3 {
            m[i][j] = r[i][j] * s[j];
        }
        m[i][3] = offset[i];
    }
    m[3][3] = 1.0;
    m
}

/// A little-endian NIfTI-1 single-file header (348 bytes + 4 extension bytes) for a uint8
/// volume of `dims` with `g`'s geometry.
fn header_bytes(g: &NiftiGeometry, dims: [usize; 3]) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    let put = |h: &mut Vec<u8>, off: usize, b: &[u8]| h[off..off + b.len()].copy_from_slice(b);
    put(&mut h, 0, &348i32.to_le_bytes());
    h[38] = b'r';
    let dim: [i16; 8] = [
        3,
        dims[0] as i16,
        dims[1] as i16,
        dims[2] as i16,
        1,
        1,
        1,
        1,
    ];
    for (i, d) in dim.iter().enumerate() {
        put(&mut h, 40 + 2 * i, &d.to_le_bytes());
    }
    put(&mut h, 70, &2i16.to_le_bytes()); // datatype uint8
    put(&mut h, 72, &8i16.to_le_bytes()); // bitpix
    let mut pixdim = g.pixdim;
    if pixdim[0] != -1.0 {
        pixdim[0] = 1.0;
    }
    for (i, p) in pixdim.iter().enumerate() {
        let v = if i >= 4 { 0.0 } else { *p };
        put(&mut h, 76 + 4 * i, &v.to_le_bytes());
    }
    put(&mut h, 108, &352f32.to_le_bytes()); // vox_offset
    put(&mut h, 112, &1f32.to_le_bytes()); // scl_slope
    put(&mut h, 116, &0f32.to_le_bytes()); // scl_inter
    h[123] = g.xyzt_units;
    put(&mut h, 148, b"dmnet mask");
    put(&mut h, 252, &g.qform_code.to_le_bytes());
    put(&mut h, 254, &g.sform_code.to_le_bytes());
    for (i, q) in g.quatern.iter().enumerate() {
        put(&mut h, 256 + 4 * i, &q.to_le_bytes());
    }
    for (r, row) in g.srow.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put(&mut h, 280 + 16 * r + 4 * c, &v.to_le_bytes());
        }
    }
    put(&mut h, 344, b"n+1\0");
    h
}
