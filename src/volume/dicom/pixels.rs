//! Pixel data → stored values, as pydicom's `pixel_array` and dcm2niix read them.
//!
//! - Native syntaxes (implicit/explicit VR little endian, deflated, explicit VR big endian up
//!   to 16 bits) are decoded here; encapsulated ones (RLE Lossless, JPEG baseline / extended /
//!   lossless, JPEG-LS, JPEG 2000) through dicom-rs `dicom-pixeldata`, frame by frame.
//! - Every sample is masked to BitsStored (0028,0101) (stray high bits, e.g. overlays, are
//!   dropped) and, when PixelRepresentation (0028,0103) = 1, sign-extended from bit
//!   `BitsStored − 1` = HighBit (0028,0102). Pixel data not in the low bits (HighBit ≠
//!   BitsStored − 1) is refused by name.
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use super::{int, open, s};
use crate::{Error, Result};

/// Transfer syntaxes whose pixel data is native (not encapsulated).
const NATIVE_TS: [&str; 4] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
];
/// Explicit VR Big Endian (retired).
const BIG_ENDIAN_TS: &str = "1.2.840.10008.1.2.2";

/// The pixel values of one DICOM file, see [`read_dicom_pixels`].
#[derive(Debug, Clone, PartialEq)]
pub struct DicomPixels {
    /// Rows (0028,0010).
    pub rows: usize,
    /// Columns (0028,0011).
    pub cols: usize,
    /// NumberOfFrames (1 when absent).
    pub frames: usize,
    /// SamplesPerPixel (0028,0002).
    pub samples_per_pixel: usize,
    /// BitsStored.
    pub bits_stored: u32,
    /// PixelRepresentation = 1.
    pub signed: bool,
    /// The transfer syntax UID.
    pub transfer_syntax: String,
    /// Stored values (masked to BitsStored, sign-extended; no rescale), frame by frame, rows
    /// top to bottom, samples of a pixel interleaved.
    pub values: Vec<i64>,
}

/// Reads every frame's stored values of one DICOM file (native or compressed), the way
/// pydicom's `pixel_array` does (before any rescale or colour/LUT step besides the codec's own
/// YCbCr→RGB conversion). Errors name the file and what is unsupported.
pub fn read_dicom_pixels(path: &Path) -> Result<DicomPixels> {
    let obj = open(path, true)?;
    let px = PixelReader::new(&obj, path)?;
    let f = &px.fmt;
    let mut values = Vec::with_capacity(f.frames * f.frame_samples());
    for k in 0..f.frames {
        values.extend(px.frame(k)?);
    }
    Ok(DicomPixels {
        rows: f.rows,
        cols: f.cols,
        frames: f.frames,
        samples_per_pixel: f.spp,
        bits_stored: f.bits_stored,
        signed: f.signed,
        transfer_syntax: px.ts.clone(),
        values,
    })
}

/// What decoding needs to know about a file's pixel data.
#[derive(Debug, Clone)]
pub(super) struct PixelFormat {
    pub rows: usize,
    pub cols: usize,
    pub frames: usize,
    pub spp: usize,
    pub bits_allocated: u32,
    pub bits_stored: u32,
    pub signed: bool,
    pub photometric: String,
}

impl PixelFormat {
    /// Samples per frame.
    pub(crate) fn frame_samples(&self) -> usize {
        self.rows * self.cols * self.spp
    }
    /// Bytes per frame of native data.
    fn frame_bytes(&self) -> usize {
        self.frame_samples() * (self.bits_allocated as usize / 8)
    }

    /// Reads and checks the Image Pixel module; errors name the file.
    fn read(obj: &InMemDicomObject, path: &Path) -> Result<Self> {
        let get = |tag, what: &str| -> Result<i64> {
            int(obj, tag).ok_or_else(|| Error::invalid(path, format!("missing {what}")))
        };
        let rows = get(tags::ROWS, "Rows (0028,0010)")?;
        let cols = get(tags::COLUMNS, "Columns (0028,0011)")?;
        if rows <= 0 || cols <= 0 {
            return Err(Error::invalid(
                path,
                format!("Rows (0028,0010) = {rows}, Columns (0028,0011) = {cols}: an image needs at least one pixel"),
            ));
        }
        let bits_allocated = get(tags::BITS_ALLOCATED, "BitsAllocated (0028,0100)")?;
        if ![8, 16, 32].contains(&bits_allocated) {
            return Err(Error::invalid(
                path,
                format!(
                    "BitsAllocated (0028,0100) = {bits_allocated} is not supported (8, 16 or 32)"
                ),
            ));
        }
        let bits_stored = int(obj, tags::BITS_STORED).unwrap_or(bits_allocated);
        if !(1..=bits_allocated).contains(&bits_stored) {
            return Err(Error::invalid(
                path,
                format!("BitsStored (0028,0101) = {bits_stored} is not in 1..={bits_allocated} (BitsAllocated)"),
            ));
        }
        let high_bit = int(obj, tags::HIGH_BIT).unwrap_or(bits_stored - 1);
        if high_bit != bits_stored - 1 {
            return Err(Error::invalid(
                path,
                format!("HighBit (0028,0102) = {high_bit} with BitsStored = {bits_stored}: pixel data not in the low bits is not supported"),
            ));
        }
        let frames = s(obj, tags::NUMBER_OF_FRAMES)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(1);
        let spp = int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
        if frames < 1 || !(1..=4).contains(&spp) {
            return Err(Error::invalid(
                path,
                format!("NumberOfFrames = {frames}, SamplesPerPixel = {spp}: not an image"),
            ));
        }
        Ok(PixelFormat {
            rows: rows as usize,
            cols: cols as usize,
            frames: frames as usize,
            spp: spp as usize,
            bits_allocated: bits_allocated as u32,
            bits_stored: bits_stored as u32,
            signed: int(obj, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1,
            photometric: s(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default(),
        })
    }
}

/// Decodes the frames of one opened file.
pub(super) struct PixelReader<'a> {
    obj: &'a DefaultDicomObject,
    path: &'a Path,
    /// The file's pixel format.
    pub fmt: PixelFormat,
    ts: String,
    /// Native pixel data as little-endian bytes (None = encapsulated).
    native: Option<Vec<u8>>,
}

impl<'a> PixelReader<'a> {
    /// Reads the pixel format and, for native syntaxes, the pixel bytes (checked for length).
    pub fn new(obj: &'a DefaultDicomObject, path: &'a Path) -> Result<Self> {
        let fmt = PixelFormat::read(obj, path)?;
        let ts = obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        let native = if NATIVE_TS.contains(&ts.as_str()) {
            if ts == BIG_ENDIAN_TS && fmt.bits_allocated > 16 {
                return Err(Error::invalid(
                    path,
                    format!("Explicit VR Big Endian with BitsAllocated {} is not supported (convert to little endian first)", fmt.bits_allocated),
                ));
            }
            let raw = native_bytes(obj, path)?;
            let need = fmt.frames * fmt.frame_bytes();
            if raw.len() < need {
                return Err(Error::invalid(
                    path,
                    format!(
                        "pixel data has {} bytes; {} frame(s) of {}×{}×{} samples of {} bits need {need}",
                        raw.len(),
                        fmt.frames,
                        fmt.rows,
                        fmt.cols,
                        fmt.spp,
                        fmt.bits_allocated
                    ),
                ));
            }
            Some(raw)
        } else {
            None
        };
        Ok(PixelReader {
            obj,
            path,
            fmt,
            ts,
            native,
        })
    }

    /// Stored values of frame `k` (0-based), masked and sign-extended.
    pub fn frame(&self, k: usize) -> Result<Vec<i64>> {
        let fb = self.fmt.frame_bytes();
        if k >= self.fmt.frames {
            return Err(Error::invalid(
                self.path,
                format!("frame {k} requested, the file has {}", self.fmt.frames),
            ));
        }
        match &self.native {
            Some(raw) => Ok(to_values(&raw[k * fb..(k + 1) * fb], &self.fmt)),
            None => {
                let bytes = self.decode_encapsulated(k)?;
                if bytes.len() < fb {
                    return Err(Error::invalid(
                        self.path,
                        format!(
                            "frame {k} decodes to {} bytes, {}×{}×{} samples of {} bits need {fb}",
                            bytes.len(),
                            self.fmt.rows,
                            self.fmt.cols,
                            self.fmt.spp,
                            self.fmt.bits_allocated
                        ),
                    ));
                }
                Ok(to_values(&bytes[..fb], &self.fmt))
            }
        }
    }

    /// Decompresses frame `k` with dicom-pixeldata.
    fn decode_encapsulated(&self, k: usize) -> Result<Vec<u8>> {
        use dicom_pixeldata::PixelDecoder;
        let name = ts_name(&self.ts);
        let fail = |why: String| {
            Error::invalid(
                self.path,
                format!(
                    "cannot decode pixel data of transfer syntax {} ({name}), frame {k}: {why}",
                    self.ts
                ),
            )
        };
        // a codec that panics on a malformed stream is an error for this file, not a crash
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.obj
                .decode_pixel_data_frame(k as u32)
                .map(|d| d.data().to_vec())
        }))
        .map_err(|_| fail("the decoder panicked on malformed data".into()))?;
        decoded.map_err(|e| fail(error_chain(&e)))
    }
}

/// An error and its sources, joined by `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    s
}

/// Native PixelData (7FE0,0010) as little-endian bytes (16-bit words parsed from a big-endian
/// file are written back little endian).
fn native_bytes(obj: &InMemDicomObject, path: &Path) -> Result<Vec<u8>> {
    use dicom_core::value::{PrimitiveValue, Value};
    let e = obj
        .get(tags::PIXEL_DATA)
        .ok_or_else(|| Error::invalid(path, "no PixelData (7FE0,0010)"))?;
    match e.value() {
        Value::Primitive(PrimitiveValue::U16(v)) => {
            Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        Value::Primitive(PrimitiveValue::I16(v)) => {
            Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        Value::Primitive(p) => Ok(p.to_bytes().into_owned()),
        _ => Err(Error::invalid(
            path,
            "encapsulated PixelData in a native transfer syntax",
        )),
    }
}

/// Samples (little endian, `bits_allocated` each) → stored values masked to `bits_stored`
/// and sign-extended when signed.
fn to_values(bytes: &[u8], f: &PixelFormat) -> Vec<i64> {
    let bits = f.bits_stored;
    let mask: u64 = (1u64 << bits) - 1;
    let sign = 1u64 << (bits - 1);
    let signed = f.signed;
    let conv = move |raw: u64| {
        let v = raw & mask;
        if signed && v & sign != 0 {
            v as i64 - (1i64 << bits)
        } else {
            v as i64
        }
    };
    match f.bits_allocated {
        8 => bytes.iter().map(|&b| conv(b as u64)).collect(),
        16 => bytes
            .chunks_exact(2)
            .map(|b| conv(u16::from_le_bytes([b[0], b[1]]) as u64))
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|b| conv(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64))
            .collect(),
    }
}

/// A readable name of a transfer syntax UID.
pub(super) fn ts_name(uid: &str) -> &'static str {
    match uid {
        "1.2.840.10008.1.2" => "Implicit VR Little Endian",
        "1.2.840.10008.1.2.1" => "Explicit VR Little Endian",
        "1.2.840.10008.1.2.1.99" => "Deflated Explicit VR Little Endian",
        "1.2.840.10008.1.2.2" => "Explicit VR Big Endian",
        "1.2.840.10008.1.2.5" => "RLE Lossless",
        "1.2.840.10008.1.2.4.50" => "JPEG Baseline",
        "1.2.840.10008.1.2.4.51" => "JPEG Extended",
        "1.2.840.10008.1.2.4.57" => "JPEG Lossless",
        "1.2.840.10008.1.2.4.70" => "JPEG Lossless SV1",
        "1.2.840.10008.1.2.4.80" => "JPEG-LS Lossless",
        "1.2.840.10008.1.2.4.81" => "JPEG-LS Near-Lossless",
        "1.2.840.10008.1.2.4.90" => "JPEG 2000 Lossless",
        "1.2.840.10008.1.2.4.91" => "JPEG 2000",
        "1.2.840.10008.1.2.4.201" => "HTJ2K Lossless",
        "1.2.840.10008.1.2.4.203" => "HTJ2K",
        "1.2.840.10008.1.2.4.100" | "1.2.840.10008.1.2.4.101" => "MPEG-2",
        "1.2.840.10008.1.2.4.102" | "1.2.840.10008.1.2.4.103" => "MPEG-4",
        "1.2.840.10008.1.2.4.110" | "1.2.840.10008.1.2.4.111" | "1.2.840.10008.1.2.4.112" => {
            "JPEG XL"
        }
        _ => "unknown transfer syntax",
    }
}
