//! Issue 23's table, one test per row, on real data: shards that cannot rot silently (the
//! flipped-byte cases are in `shards.rs`), every client reads `image` and `mask`, bad DICOM
//! files named, failed starts that leave nothing, one folder check for every reader, symlink
//! loops cut, and `dmnet-prep upgrade` from v2.
use std::path::{Path, PathBuf};

use crate::util::{bin, python, run_ok, stderr, stdout, tmp};

fn ingest(input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    bin("dmnet-prep")
        .args(["ingest", "--threads", "2", "--size", "32", "--input"])
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// pyarrow, DuckDB and polars each read `image` and `mask` of real shards into their native
/// arrays, and the arrays are equal (`examples/read_shards.py` does the same and runs).
#[test]
fn duckdb_pyarrow_and_polars_read_equal_images_and_masks() {
    crate::require_data!("la2018");
    let t = tmp();
    let input = crate::prep::la_subset(t.path(), 2);
    let out = t.path().join("s");
    let o = ingest(&input, &out, &["--protocol", "all-slices"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = r#"
import sys, json, numpy as np, pyarrow.parquet as pq, duckdb, polars as pl
d = sys.argv[1]
q = f"select patient_key, slice_index, image, mask from read_parquet('{d}/**/*.parquet') where labeled order by patient_key, slice_index"
rows = duckdb.sql(q).fetchall()
dk_img = np.array([r[2] for r in rows], np.float32)
dk_mask = np.array([r[3] for r in rows], np.uint8)
t = pq.read_table(d).filter(pq.read_table(d)['labeled']).sort_by([('patient_key', 'ascending'), ('slice_index', 'ascending')])
pa_img = t['image'].combine_chunks().to_numpy_ndarray().reshape(len(rows), -1)
pa_mask = t['mask'].combine_chunks().to_numpy_ndarray().reshape(len(rows), -1)
df = pl.read_parquet(d + '/**/*.parquet').filter(pl.col('labeled')).sort(['patient_key', 'slice_index'])
pl_img = df['image'].to_numpy().reshape(len(rows), -1)
pl_mask = df['mask'].to_numpy().reshape(len(rows), -1)
print(json.dumps({'rows': len(rows), 'dtype': [str(dk_img.dtype), str(pa_img.dtype), str(pl_img.dtype)],
  'img_equal': bool(np.array_equal(dk_img, pa_img) and np.array_equal(pa_img, pl_img)),
  'mask_equal': bool(np.array_equal(dk_mask, pa_mask) and np.array_equal(pa_mask, pl_mask)),
  'foreground': int((pa_mask > 0).sum())}))
"#;
    let o = run_ok(python().args(["-c", script]).arg(&out));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(r["rows"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(r["img_equal"], true, "{r}");
    assert_eq!(r["mask_equal"], true, "{r}");
    assert!(r["foreground"].as_u64().unwrap() > 0, "{r}");
    let ex = run_ok(
        python()
            .arg(crate::util::root().join("examples/read_shards.py"))
            .arg(&out),
    );
    assert!(
        stdout(&ex).contains("duckdb, pyarrow and polars agree"),
        "{}",
        stdout(&ex)
    );
}

/// The prostate ADC series (20 slices, one replaced by an empty file) and the CT series.
fn dicom_with_an_empty_slice(dir: &Path) -> Option<(PathBuf, String)> {
    let d = crate::util::shared_data("dicom", "integrity")?;
    let root = dir.join("pacs");
    for (src, dst) in [("prostate-adc", "adc"), ("ct-3slice/series", "ct")] {
        std::fs::create_dir_all(root.join(dst)).unwrap();
        for e in std::fs::read_dir(d.join(src)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, root.join(dst).join(p.file_name().unwrap())).unwrap();
        }
    }
    let mut adc: Vec<PathBuf> = std::fs::read_dir(root.join("adc"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    adc.sort();
    std::fs::write(&adc[9], b"").unwrap();
    Some((
        root,
        adc[9].file_name().unwrap().to_string_lossy().into_owned(),
    ))
}

/// A 0-byte `.dcm` in a 20-slice series: exit 2, the empty file named (its own line and in the
/// series' reason), the CT series written.
#[test]
fn an_empty_dicom_slice_is_named_by_ingest() {
    let t = tmp();
    let Some((root, empty)) = dicom_with_an_empty_slice(t.path()) else {
        return;
    };
    let out = t.path().join("s");
    let o = ingest(&root, &out, &["--layout", "dicom"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("ERROR") && l.contains(&empty) && l.contains("0 bytes")),
        "{err}"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("_manifest.json")).unwrap())
            .unwrap();
    let studies = m["studies"].as_array().unwrap();
    let series = studies
        .iter()
        .find(|s| s["study"].as_str().unwrap().starts_with("adc#"))
        .unwrap();
    assert_eq!(series["status"], "failed");
    assert!(
        series["reason"].as_str().unwrap().contains(&empty),
        "{series}"
    );
    assert!(studies.iter().any(|s| s["status"] == "ok"), "{m}");
}

/// `adc/loop -> ../..` in the input: the link is skipped with a warning naming it; the series
/// beside the input folder is never read.
#[test]
fn a_symlink_back_to_a_parent_is_skipped_by_ingest() {
    let t = tmp();
    let Some(d) = crate::util::shared_data("dicom", "integrity") else {
        return;
    };
    let outside = t.path().join("outside");
    let input = outside.join("input");
    std::fs::create_dir_all(input.join("adc")).unwrap();
    for e in std::fs::read_dir(d.join("prostate-adc")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, input.join("adc").join(p.file_name().unwrap())).unwrap();
    }
    std::fs::create_dir_all(outside.join("ct")).unwrap();
    for e in std::fs::read_dir(d.join("ct-3slice/series")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, outside.join("ct").join(p.file_name().unwrap())).unwrap();
    }
    std::os::unix::fs::symlink("../..", input.join("adc/loop")).unwrap();
    let out = t.path().join("s");
    let o = ingest(&input, &out, &["--layout", "dicom"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("WARN") && l.contains("loop") && l.contains("skipped")),
        "{err}"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("_manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["totals"]["studies"], 1, "{m}");
}

/// `--device cuda` on a machine without CUDA: exit 1 with the reason, and no run folder.
#[test]
fn a_failed_start_leaves_no_run_folder() {
    crate::require_data!("la2018");
    let t = tmp();
    let input = crate::prep::la_subset(t.path(), 2);
    let shards = t.path().join("s");
    assert!(ingest(&input, &shards, &["--protocol", "paper"])
        .status
        .success());
    let run = t.path().join("run");
    let o = bin("dmnet-train")
        .arg("--shards")
        .arg(&shards)
        .arg("--out")
        .arg(&run)
        .args(["--device", "cuda", "--steps", "1"])
        .output()
        .unwrap();
    if o.status.success() {
        eprintln!("SKIP a_failed_start_leaves_no_run_folder: CUDA is usable here");
        return;
    }
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("CUDA is not usable"), "{err}");
    assert!(!run.exists(), "a failed start left {}", run.display());
}

/// A CT + MR shard folder (a DICOM tree mixing modalities, ingested with a warning): `inspect`
/// calls it broken, and `dmnet-train`, `dmnet-infer` and `dmnet-export --verify` refuse it with
/// inspect's message (one check, `shard::checks`).
#[test]
fn a_ct_and_mr_folder_is_refused_by_every_reader_with_inspects_message() {
    let t = tmp();
    let Some(d) = crate::util::shared_data("dicom", "integrity") else {
        return;
    };
    let root = t.path().join("pacs");
    for (src, dst) in [("prostate-adc", "adc"), ("ct-3slice/series", "ct")] {
        std::fs::create_dir_all(root.join(dst)).unwrap();
        for e in std::fs::read_dir(d.join(src)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, root.join(dst).join(p.file_name().unwrap())).unwrap();
        }
    }
    let shards = t.path().join("s");
    let o = ingest(
        &root,
        &shards,
        &["--layout", "dicom", "--protocol", "all-slices"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let insp = bin("dmnet-prep")
        .arg("inspect")
        .arg(&shards)
        .output()
        .unwrap();
    assert_eq!(insp.status.code(), Some(1));
    let msg = "several channel sets (modalities)";
    assert!(stdout(&insp).contains(msg), "{}", stdout(&insp));
    let train = bin("dmnet-train")
        .arg("--shards")
        .arg(&shards)
        .arg("--out")
        .arg(t.path().join("run"))
        .args(["--steps", "1", "--device", "cpu"])
        .output()
        .unwrap();
    assert_eq!(train.status.code(), Some(1), "{}", stderr(&train));
    assert!(stderr(&train).contains(msg), "{}", stderr(&train));
    let e = dmnet::shard::ShardIndex::open(&shards)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(msg) && e.contains("ct") && e.contains("mr"),
        "{e}"
    );
}

/// A v2 folder (written by `scripts/bench_prep.py v2copy` as dmnet 0.1 wrote it): refused with
/// the upgrade command; `dmnet-prep upgrade` makes it v3 with every part's hash, says the input
/// carried none, and keeps every value (float16-precise images, masks, metadata).
#[test]
fn a_v2_folder_is_upgraded_to_v3_with_hashes_and_the_same_values() {
    crate::require_data!("la2018");
    let t = tmp();
    let input = crate::prep::la_subset(t.path(), 2);
    let v3 = t.path().join("v3");
    let o = ingest(&input, &v3, &["--protocol", "all-slices", "--file-mb", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v2 = t.path().join("v2");
    run_ok(
        python()
            .arg(crate::util::root().join("scripts/bench_prep.py"))
            .args(["v2copy", "--input", "-", "--shards"])
            .arg(&v3)
            .arg("--out")
            .arg(&v2),
    );
    let e = dmnet::shard::ShardIndex::open(&v2).unwrap_err().to_string();
    assert!(
        e.contains("schema version 2") && e.contains("dmnet-prep upgrade"),
        "{e}"
    );
    let o = run_ok(bin("dmnet-prep").arg("upgrade").arg(&v2));
    let s = stdout(&o);
    assert!(
        s.contains("from shard schema v2 to v3") && s.contains("no hash"),
        "{s}"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(v2.join("_manifest.json")).unwrap()).unwrap();
    assert_eq!(m["schema_version"], "3");
    assert_eq!(m["parts"].as_array().unwrap().len(), 2, "{m}");
    let rows = |d: &Path| -> Vec<dmnet::shard::SliceRecord> {
        dmnet::shard::read_shards(d)
            .unwrap()
            .flat_map(|g| g.unwrap())
            .map(|mut r| {
                r.source_mask = None;
                r
            })
            .collect()
    };
    assert_eq!(rows(&v2), rows(&v3));
    let o = run_ok(bin("dmnet-prep").arg("inspect").arg(&v2));
    assert!(stdout(&o).contains("all invariants hold"), "{}", stdout(&o));
}
