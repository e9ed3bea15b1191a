//! Siemens mosaic images: ImageType (0008,0008) holds `MOSAIC`; NumberOfImagesInMosaic
//! (0019,100A, private block "SIEMENS MR HEADER") or the CSA image header (0029,1010, "SIEMENS
//! CSA HEADER", format SV10) gives the tile count `n`; the tiles sit in a `g × g` matrix,
//! `g = ⌈√n⌉`, row by row.
//!
//! Position (dcm2niix `nii_dicom.cpp`, also nibabel's `MosaicWrapper`): ImagePositionPatient is
//! the corner of the whole mosaic, so the first tile's corner is
//! `IPP + col·Δr·(R − R/g)/2 + row·Δc·(C − C/g)/2` for an `R × C` mosaic (`row`, `col` the IOP
//! cosines, `Δr`, `Δc` the PixelSpacing). Tile `k` lies `k · dz` further along the slice normal
//! `row × col`, flipped when the CSA `SliceNormalVector` points the other way (Siemens stores
//! e.g. sagittal slices right to left); `dz` = SpacingBetweenSlices (0018,0088), else
//! SliceThickness (0018,0050). A mosaic that cannot be un-tiled exactly is refused by name.
use std::collections::BTreeMap;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::scan::top_level_rescale;
use super::{cross, dot, f64_1, f64s, row_col, s, vec2, vec3, vec6, Frame};

/// NumberOfImagesInMosaic (Siemens private, block 10 of group 0019).
const N_IMAGES_IN_MOSAIC: Tag = Tag(0x0019, 0x100A);
/// CSA Image Header Info (Siemens private, block 10 of group 0029).
const CSA_IMAGE_HEADER: Tag = Tag(0x0029, 0x1010);

/// How a mosaic is tiled.
pub(super) struct Mosaic {
    /// Number of images.
    pub tiles: usize,
    /// Tiles per row and column of the mosaic.
    pub grid: usize,
    /// Rows and columns of one tile.
    pub tile_size: [usize; 2],
}

/// Whether ImageType says MOSAIC.
pub(super) fn is_mosaic(obj: &InMemDicomObject) -> bool {
    obj.get(tags::IMAGE_TYPE)
        .and_then(|e| e.to_multi_str().ok())
        .is_some_and(|v| v.iter().any(|t| t.trim().eq_ignore_ascii_case("MOSAIC")))
}

/// The raw bytes of a private element, if its block is reserved by a creator starting with
/// `creator`.
fn private_bytes(obj: &InMemDicomObject, tag: Tag, creator: &str) -> Option<Vec<u8>> {
    let owner = s(obj, Tag(tag.group(), tag.element() >> 8))?;
    if !owner.to_ascii_uppercase().starts_with(creator) {
        return None;
    }
    obj.get(tag)
        .map(|e| e.value().to_bytes().ok().map(|b| b.into_owned()))?
}

/// The tile count from (0019,100A) (US, or raw bytes when read as UN), else the CSA header.
fn tile_count(obj: &InMemDicomObject, csa: &BTreeMap<String, Vec<String>>) -> Option<usize> {
    let private = obj
        .get(N_IMAGES_IN_MOSAIC)
        .filter(|_| {
            s(obj, Tag(0x0019, 0x0010))
                .is_some_and(|c| c.to_ascii_uppercase().starts_with("SIEMENS"))
        })
        .and_then(|e| {
            e.to_int::<i64>().ok().or_else(|| {
                let b = e.value().to_bytes().ok()?;
                (b.len() == 2).then(|| u16::from_le_bytes([b[0], b[1]]) as i64)
            })
        });
    let from_csa = || {
        csa.get("NumberOfImagesInMosaic")?
            .first()?
            .trim()
            .parse::<f64>()
            .ok()
            .map(|v| v as i64)
    };
    private
        .or_else(from_csa)
        .filter(|&n| n > 0)
        .map(|n| n as usize)
}

/// The tiling and the tile frames of a mosaic of `size = [rows, cols]`, or why it cannot be
/// un-tiled.
pub(super) fn frames(
    obj: &InMemDicomObject,
    size: [usize; 2],
) -> Result<(Mosaic, Vec<Frame>), String> {
    let csa = private_bytes(obj, CSA_IMAGE_HEADER, "SIEMENS CSA")
        .map(|b| parse_csa(&b))
        .unwrap_or_default();
    let n = tile_count(obj, &csa).ok_or(
        "Siemens mosaic (ImageType MOSAIC) without NumberOfImagesInMosaic (0019,100A) or a CSA image header (0029,1010): cannot un-tile it",
    )?;
    let grid = (1..=n).find(|g| g * g >= n).unwrap_or(n);
    let [rows, cols] = size;
    if rows == 0 || cols == 0 || rows % grid != 0 || cols % grid != 0 {
        return Err(format!(
            "Siemens mosaic of {rows}×{cols} pixels is not a {grid}×{grid} grid of whole tiles for {n} images: cannot un-tile it"
        ));
    }
    let tile = [rows / grid, cols / grid];
    let ipp = f64s(obj, tags::IMAGE_POSITION_PATIENT)
        .and_then(vec3)
        .ok_or("Siemens mosaic without ImagePositionPatient (0020,0032)")?;
    let iop = f64s(obj, tags::IMAGE_ORIENTATION_PATIENT)
        .and_then(vec6)
        .ok_or("Siemens mosaic without ImageOrientationPatient (0020,0037)")?;
    let ps = f64s(obj, tags::PIXEL_SPACING)
        .and_then(vec2)
        .ok_or("Siemens mosaic without PixelSpacing (0028,0030)")?;
    let dz = [tags::SPACING_BETWEEN_SLICES, tags::SLICE_THICKNESS]
        .iter()
        .find_map(|&t| f64_1(obj, t).filter(|v| v.is_finite() && *v > 0.0))
        .ok_or("Siemens mosaic without SpacingBetweenSlices (0018,0088) or SliceThickness (0018,0050): slice positions unknown")?;
    let (r, c) = row_col(iop);
    let mut normal = cross(r, c);
    if let Some(snv) = csa
        .get("SliceNormalVector")
        .and_then(|v| vec3(v.iter().filter_map(|x| x.trim().parse().ok()).collect()))
    {
        if dot(normal, snv) < 0.0 {
            normal = normal.map(|v| -v);
        }
    }
    let shift_r = (rows - tile[0]) as f64 / 2.0;
    let shift_c = (cols - tile[1]) as f64 / 2.0;
    let p0: [f64; 3] =
        std::array::from_fn(|i| ipp[i] + c[i] * ps[0] * shift_r + r[i] * ps[1] * shift_c);
    let rescale = top_level_rescale(obj);
    let frames = (0..n)
        .map(|k| Frame {
            position: Some(std::array::from_fn(|i| p0[i] + normal[i] * dz * k as f64)),
            orientation: Some(iop),
            spacing: Some(ps),
            rescale,
            index: k,
        })
        .collect();
    Ok((
        Mosaic {
            tiles: n,
            grid,
            tile_size: tile,
        },
        frames,
    ))
}

/// Tile `k` of a decoded `rows × cols` mosaic (row-major), `tile = [rows, cols]` of a tile.
pub(super) fn untile<T: Copy>(
    mosaic: &[T],
    cols: usize,
    grid: usize,
    tile: [usize; 2],
    k: usize,
) -> Vec<T> {
    let (gr, gc) = (k / grid, k % grid);
    let mut out = Vec::with_capacity(tile[0] * tile[1]);
    for r in 0..tile[0] {
        let start = (gr * tile[0] + r) * cols + gc * tile[1];
        out.extend_from_slice(&mosaic[start..start + tile[1]]);
    }
    out
}

/// Reads a little-endian i32 at `at`.
fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    let s = b.get(at..at + 4)?;
    Some(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parses a Siemens CSA header (format "SV10"): element name → its non-empty string items.
/// Anything malformed ends the parse with what was read so far (never a panic).
pub(super) fn parse_csa(b: &[u8]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    if b.get(0..4) != Some(b"SV10") {
        return out;
    }
    let n_tags = i32_at(b, 8).unwrap_or(0).clamp(0, 1000);
    let mut p = 16usize;
    for _ in 0..n_tags {
        let Some(name) = b.get(p..p + 64) else { break };
        let name =
            String::from_utf8_lossy(name.split(|&x| x == 0).next().unwrap_or(&[])).into_owned();
        let Some(n_items) = i32_at(b, p + 76) else {
            break;
        };
        p += 84;
        let mut items = Vec::new();
        for _ in 0..n_items.clamp(0, 10_000) {
            let Some(len) = i32_at(b, p + 4) else { break };
            p += 16;
            let len = len.max(0) as usize;
            let Some(v) = b.get(p..p + len) else { break };
            let v = String::from_utf8_lossy(v)
                .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string();
            if !v.is_empty() {
                items.push(v);
            }
            p += len.div_ceil(4) * 4;
        }
        out.insert(name, items);
    }
    out
}
