//! Conformance of dmnet's DICOM reader with Debian's dcm2niix: every series under a folder
//! (default `../shared/data/dicom`) is read by dmnet (every time point of a 4-D series) and
//! converted by dcm2niix (`-x i -p n`), then voxels, spacing and world coordinates are compared.
//! One line per series: IDENTICAL (voxels equal, world within 0.01 mm), DIFFERENT, REFUSED (dmnet
//! names what it does not support) or NO-REFERENCE. Exit 1 when any series is DIFFERENT.
//!
//!     scripts/dcm2niix_conformance.sh [DICOM_ROOT]
use std::path::PathBuf;

use dmnet::volume::compare::{compare_volumes, run_dcm2niix};
use dmnet::volume::{
    read_dicom_timepoint, read_nifti_timepoint, scan_dicom_dir, series_timepoints,
};

fn main() -> anyhow::Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data/dicom"));
    let dcm2niix = PathBuf::from(std::env::var_os("DCM2NIIX").unwrap_or_else(|| "dcm2niix".into()));
    let tmp = tempfile::tempdir()?;
    let (series, bad) = scan_dicom_dir(&root)?;
    for (p, why) in bad {
        println!("UNREADABLE {}: {why}", p.display());
    }
    let mut different = 0;
    for (i, s) in series.iter().filter(|s| !s.is_seg).enumerate() {
        let name = format!(
            "{} ({}, {})",
            s.folder().display(),
            s.modality,
            s.series_uid
        );
        let nt = match series_timepoints(s) {
            Ok(n) => n,
            Err(e) => {
                println!("REFUSED {name}: {e}");
                continue;
            }
        };
        // dcm2niix converts the series' own files only (a copy of them in a fresh folder)
        let input = tmp.path().join(format!("in{i}"));
        std::fs::create_dir_all(&input)?;
        for (k, f) in s.files.iter().enumerate() {
            std::fs::copy(&f.path, input.join(format!("{k:05}.dcm")))?;
        }
        let refs = run_dcm2niix(&dcm2niix, &input, &tmp.path().join(format!("out{i}")))?;
        let Some(reference) = refs.get(&s.series_uid).and_then(|v| v.first()) else {
            println!(
                "NO-REFERENCE {name}: dcm2niix wrote {:?}",
                refs.keys().collect::<Vec<_>>()
            );
            continue;
        };
        let mut worst = (0f64, 0f64, 0f64, 0usize);
        let mut line = String::new();
        for t in 0..nt {
            let ours = match read_dicom_timepoint(s, t) {
                Ok(v) => v,
                Err(e) => {
                    line = format!("REFUSED {name}: {e}");
                    break;
                }
            };
            let r = read_nifti_timepoint(reference, t)?;
            match compare_volumes(&ours, &r, 0.0) {
                Ok(c) => {
                    worst.0 = worst.0.max(c.max_abs_diff);
                    worst.1 = worst.1.max(c.world_mm);
                    worst.2 = worst.2.max(c.spacing_mm);
                    worst.3 += c.differing;
                }
                Err(e) => {
                    line = format!("DIFFERENT {name} t={t}: {e}");
                    break;
                }
            }
        }
        if line.is_empty() {
            let ok = worst.3 == 0 && worst.1 <= 0.01 && worst.2 <= 0.01;
            let v = read_dicom_timepoint(s, 0)?;
            line = format!(
                "{} {name}: {:?}×{nt} voxels max|Δ| {} ({} differ), spacing Δ {:.2e} mm, world Δ {:.2e} mm",
                if ok { "IDENTICAL" } else { "DIFFERENT" },
                v.dims,
                worst.0,
                worst.3,
                worst.2,
                worst.1
            );
        }
        if line.starts_with("DIFFERENT") {
            different += 1;
        }
        println!("{line}");
    }
    if different > 0 {
        std::process::exit(1);
    }
    Ok(())
}
