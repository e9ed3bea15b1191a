//! `dmnet-prep synth`: a generated, **synthetic** phantom cohort (the demo's embedded default).
//! CT-like abdominal volumes in Hounsfield units: air, a fat-rimmed body, a spine, two kidneys
//! with a cortex/medulla contrast and one tumour inside a kidney, Gaussian noise, and a
//! geometry (size, spacing, origin, slice count) that varies per patient. Labels follow KiTS19
//! (0 background, 1 kidney, 2 tumour). Written as NIfTI-1 in the KiTS19 layout
//! (`kits19/case_XXXXX/{imaging,segmentation}.nii.gz`), plus held-out patients as DICOM CT series
//! (`dicom/case_XXXXX/*.dcm`, LPS geometry per DICOM PS3.3 C.7.6.2) for inference. Nothing in it
//! is patient data; every output says SYNTHETIC.
use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    /// Labelled patients in the KiTS19 layout.
    pub patients: usize,
    /// Extra patients written only as DICOM CT series (no labels), for inference.
    pub dicom_patients: usize,
    /// Random seed: the same seed gives the same files.
    pub seed: u64,
    /// In-plane matrix size (voxels).
    pub size: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            patients: 24,
            dicom_patients: 1,
            seed: 0,
            size: 96,
        }
    }
}

/// One generated volume: HU values, labels, voxel dims and the voxel→RAS affine.
#[derive(Debug, Clone)]
pub struct Phantom {
    /// Voxel dims (x, y, z), index `x + nx*(y + ny*z)`.
    pub dims: [usize; 3],
    /// Voxel spacing (mm).
    pub spacing: [f64; 3],
    /// Voxel→RAS affine, rows of a 4×4 (last row 0 0 0 1).
    pub affine: [[f64; 4]; 3],
    /// Hounsfield units.
    pub hu: Vec<f32>,
    /// 0 background, 1 kidney, 2 tumour.
    pub labels: Vec<u8>,
}

/// Ellipsoid test in mm: centre c, semi-axes r.
fn inside(p: [f64; 3], c: [f64; 3], r: [f64; 3]) -> bool {
    (0..3).map(|i| ((p[i] - c[i]) / r[i]).powi(2)).sum::<f64>() <= 1.0
}

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Generates one phantom patient.
pub fn phantom(seed: u64, size: usize) -> Phantom {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let nz = rng.random_range(20..=32usize);
    let fov = rng.random_range(330.0..400.0);
    let (sxy, sz) = (fov / size as f64, rng.random_range(2.5..5.0));
    let origin = [
        rng.random_range(150.0..200.0),
        rng.random_range(150.0..200.0),
        rng.random_range(-400.0..-200.0),
    ];
    let affine = [
        [-sxy, 0.0, 0.0, origin[0]],
        [0.0, -sxy, 0.0, origin[1]],
        [0.0, 0.0, sz, origin[2]],
    ];
    // Anatomy in a body-centred frame (mm): x left-right, y anterior-posterior, z cranio-caudal.
    let (a, b) = (
        rng.random_range(125.0..160.0),
        rng.random_range(90.0..115.0),
    );
    let depth = nz as f64 * sz;
    let kz = rng.random_range(0.35..0.65) * depth;
    let spine = [0.0, -b + 40.0];
    let kidney_r = [
        rng.random_range(24.0..32.0),
        rng.random_range(18.0..24.0),
        rng.random_range(38.0..55.0),
    ];
    let kx = rng.random_range(55.0..75.0);
    let kidneys = [
        [-kx, -b + 55.0, kz],
        [kx, -b + 55.0, kz + rng.random_range(-10.0..10.0)],
    ];
    let side = rng.random_range(0..2usize);
    let tr = rng.random_range(8.0..17.0);
    let k = kidneys[side];
    let tumour = [
        k[0] + rng.random_range(-0.4..0.4) * kidney_r[0],
        k[1],
        k[2] + rng.random_range(-0.5..0.5) * kidney_r[2],
    ];
    let (noise, tumour_hu) = (rng.random_range(8.0..22.0), rng.random_range(55.0..95.0));
    let centre = [size as f64 / 2.0 * sxy, size as f64 / 2.0 * sxy];

    let n = size * size * nz;
    let (mut hu, mut labels) = (vec![0f32; n], vec![0u8; n]);
    for z in 0..nz {
        for y in 0..size {
            for x in 0..size {
                let p = [
                    x as f64 * sxy - centre[0],
                    centre[1] - y as f64 * sxy,
                    z as f64 * sz,
                ];
                let i = x + size * (y + size * z);
                let (v, l) = tissue(p, a, b, spine, &kidneys, kidney_r, tumour, tr, tumour_hu);
                hu[i] = (v + noise * gaussian(&mut rng)) as f32;
                labels[i] = l;
            }
        }
    }
    Phantom {
        dims: [size, size, nz],
        spacing: [sxy, sxy, sz],
        affine,
        hu,
        labels,
    }
}

/// HU and label of the tissue at body-frame point p (mm).
#[allow(clippy::too_many_arguments)]
fn tissue(
    p: [f64; 3],
    a: f64,
    b: f64,
    spine: [f64; 2],
    kidneys: &[[f64; 3]; 2],
    kr: [f64; 3],
    tumour: [f64; 3],
    tr: f64,
    tumour_hu: f64,
) -> (f64, u8) {
    let body = (p[0] / a).powi(2) + (p[1] / b).powi(2);
    if body > 1.0 {
        return (-1000.0, 0);
    }
    if inside(p, tumour, [tr; 3])
        && kidneys
            .iter()
            .any(|k| inside(p, *k, [kr[0] * 1.3, kr[1] * 1.3, kr[2] * 1.1]))
    {
        return (
            tumour_hu + 15.0 * (p[0] * 0.3).sin() * (p[2] * 0.2).cos(),
            2,
        );
    }
    for k in kidneys {
        if inside(p, *k, kr) {
            let medulla = inside(p, *k, [kr[0] * 0.55, kr[1] * 0.55, kr[2] * 0.7]);
            return (if medulla { 110.0 } else { 180.0 }, 1);
        }
    }
    if (p[0] - spine[0]).hypot(p[1] - spine[1]) < 16.0 {
        return (600.0, 0);
    }
    let fat_rim = (p[0] / (a - 14.0)).powi(2) + (p[1] / (b - 14.0)).powi(2) > 1.0;
    (if fat_rim { -100.0 } else { 40.0 }, 0)
}

/// Summary of a generated cohort.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SynthSummary {
    /// Root of the KiTS19-layout folder.
    pub kits19: PathBuf,
    /// Root of the DICOM folder (one sub-folder per series).
    pub dicom: PathBuf,
    /// Cases written per layout.
    pub nifti_cases: usize,
    /// DICOM series written.
    pub dicom_series: usize,
}

/// Writes the synthetic cohort under `out` (skips nothing: files are rewritten atomically).
pub fn synthesize(out: &Path, cfg: &SynthConfig) -> Result<SynthSummary> {
    let (kits, dicom) = (out.join("kits19"), out.join("dicom"));
    for i in 0..cfg.patients {
        let p = phantom(
            cfg.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
            cfg.size,
        );
        let dir = kits.join(format!("case_{i:05}"));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        write_nifti(&dir.join("imaging.nii.gz"), &p, Voxels::F32(&p.hu))?;
        write_nifti(&dir.join("segmentation.nii.gz"), &p, Voxels::U8(&p.labels))?;
    }
    for j in 0..cfg.dicom_patients {
        let i = cfg.patients + j;
        let p = phantom(
            cfg.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
            cfg.size,
        );
        super::synth_dicom::write_series(&dicom.join(format!("case_{i:05}")), &p, i, cfg.seed)?;
    }
    let note = "SYNTHETIC phantom cohort generated by `dmnet-prep synth` (no patient data).\n";
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    crate::atomic::write_bytes(&out.join("SYNTHETIC.txt"), note)?;
    let json = serde_json::to_string_pretty(cfg).expect("serialisable");
    crate::atomic::write_bytes(&out.join("synth.json"), json)?;
    Ok(SynthSummary {
        kits19: kits,
        dicom,
        nifti_cases: cfg.patients,
        dicom_series: cfg.dicom_patients,
    })
}

/// Voxel payloads the phantom writes.
pub(crate) enum Voxels<'a> {
    /// float32 (NIfTI datatype 16).
    F32(&'a [f32]),
    /// uint8 (NIfTI datatype 2).
    U8(&'a [u8]),
}

/// Minimal NIfTI-1 single-file writer (gzip), sform and qform both set (code 1, scanner).
/// Independent of the reader in `volume`, so reading these files back tests that reader.
pub(crate) fn write_nifti(path: &Path, p: &Phantom, voxels: Voxels) -> Result<()> {
    let (datatype, bitpix, bytes): (i16, i16, Vec<u8>) = match voxels {
        Voxels::F32(v) => (16, 32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Voxels::U8(v) => (2, 8, v.to_vec()),
    };
    let mut h = vec![0u8; 352];
    let put = |h: &mut Vec<u8>, off: usize, b: &[u8]| h[off..off + b.len()].copy_from_slice(b);
    put(&mut h, 0, &348i32.to_le_bytes());
    let dims = [
        3,
        p.dims[0] as i16,
        p.dims[1] as i16,
        p.dims[2] as i16,
        1,
        1,
        1,
        1,
    ];
    for (k, d) in dims.iter().enumerate() {
        put(&mut h, 40 + 2 * k, &d.to_le_bytes());
    }
    put(&mut h, 70, &datatype.to_le_bytes());
    put(&mut h, 72, &bitpix.to_le_bytes());
    let pixdim = [
        1.0f32,
        p.spacing[0] as f32,
        p.spacing[1] as f32,
        p.spacing[2] as f32,
        1.0,
        0.0,
        0.0,
        0.0,
    ];
    for (k, d) in pixdim.iter().enumerate() {
        put(&mut h, 76 + 4 * k, &d.to_le_bytes());
    }
    put(&mut h, 108, &352f32.to_le_bytes()); // vox_offset
    put(&mut h, 112, &1f32.to_le_bytes()); // scl_slope
    h[123] = 10; // xyzt_units: mm + s
    put(&mut h, 148, b"dmnet SYNTHETIC phantom");
    put(&mut h, 252, &1i16.to_le_bytes()); // qform_code
    put(&mut h, 254, &1i16.to_le_bytes()); // sform_code
                                           // The phantom's rotation is diag(-1, -1, 1): a 180° turn about z, quaternion (0, 0, 0, 1).
    let quatern = [
        0f32,
        0.0,
        1.0,
        p.affine[0][3] as f32,
        p.affine[1][3] as f32,
        p.affine[2][3] as f32,
    ];
    for (k, q) in quatern.iter().enumerate() {
        put(&mut h, 256 + 4 * k, &q.to_le_bytes());
    }
    for (r, row) in p.affine.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put(&mut h, 280 + 16 * r + 4 * c, &(*v as f32).to_le_bytes());
        }
    }
    put(&mut h, 344, b"n+1\0");
    crate::atomic::write_with(path, |w| {
        let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
        gz.write_all(&h)?;
        gz.write_all(&bytes)?;
        gz.finish().map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phantom_is_deterministic_and_anatomically_plausible() {
        let (a, b) = (phantom(7, 64), phantom(7, 64));
        assert_eq!(a.hu, b.hu);
        assert_ne!(
            phantom(8, 64).hu,
            a.hu,
            "different seeds give different patients"
        );
        let count = |l: u8| a.labels.iter().filter(|&&v| v == l).count();
        assert!(
            count(1) > 500 && count(2) > 20,
            "kidney {} tumour {}",
            count(1),
            count(2)
        );
        let mean = |l: u8| {
            let v: Vec<f32> =
                a.hu.iter()
                    .zip(&a.labels)
                    .filter(|(_, &x)| x == l)
                    .map(|(h, _)| *h)
                    .collect();
            v.iter().sum::<f32>() / v.len() as f32
        };
        assert!(
            mean(1) > 100.0 && mean(2) < mean(1),
            "kidney {} tumour {}",
            mean(1),
            mean(2)
        );
        assert!(a.hu.iter().any(|&v| v < -900.0), "air around the body");
    }
}
