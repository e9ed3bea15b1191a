//! dmnet-prep on real data (la2018, spleen-ct, spinal-cord-mri, brats-mini, the DICOM folders):
//! protocols, splits, Arrow clients, resume after kill -9, workers + merge, and one test per
//! bad-input case, each made by corrupting a copy of a real file.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::require_data;
use crate::util::{bin, python, run_ok, stderr, stdout, tmp};

pub(crate) fn ingest(input: &Path, out: &Path, extra: &[&str]) -> Output {
    bin("dmnet-prep")
        .args(["ingest", "-q", "--threads", "2", "--size", "32", "--input"])
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

pub(crate) fn manifest(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("_manifest.json")).unwrap()).unwrap()
}

pub(crate) fn inspect_ok(out: &Path) -> String {
    let o = run_ok(bin("dmnet-prep").arg("inspect").arg(out));
    let s = stdout(&o);
    assert!(s.contains("all invariants hold"), "{s}");
    s
}

fn gunzip(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(p).unwrap())
        .read_to_end(&mut v)
        .unwrap();
    v
}

fn gzip_to(p: &Path, bytes: &[u8]) {
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(p).unwrap(),
        flate2::Compression::fast(),
    );
    e.write_all(bytes).unwrap();
    e.finish().unwrap();
}

/// An MSD folder with `n` of the la2018 cases (symlinked) and a matching dataset.json.
pub(crate) fn la_subset(dir: &Path, n: usize) -> PathBuf {
    let la = crate::util::shared_data("la2018", "la_subset").unwrap();
    let root = dir.join("la");
    for sub in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let mut cases: Vec<_> = std::fs::read_dir(la.join("imagesTr"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    cases.sort();
    for c in cases.iter().take(n) {
        for sub in ["imagesTr", "labelsTr"] {
            std::os::unix::fs::symlink(la.join(sub).join(c), root.join(sub).join(c)).unwrap();
        }
    }
    std::fs::write(
        root.join("dataset.json"),
        r#"{"name": "LA subset", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "left atrium"}}"#,
    )
    .unwrap();
    root
}

/// An MSD folder with two copies of the spleen CT case: `good` and `bad` (to corrupt).
fn spleen_pair(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let sp = crate::util::shared_data("spleen-ct", "spleen_pair").unwrap();
    let root = dir.join("msd");
    for sub in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
        for name in ["good", "bad"] {
            std::fs::copy(
                sp.join(sub).join("spleen2.nii.gz"),
                root.join(sub).join(format!("{name}.nii.gz")),
            )
            .unwrap();
        }
    }
    let img = root.join("imagesTr/bad.nii.gz");
    let lab = root.join("labelsTr/bad.nii.gz");
    (root, img, lab)
}

/// Runs ingest on a folder with one corrupted study: exit 2, one error line naming the file
/// and `what`, that study failed in the manifest with the reason, the other study ok.
fn assert_one_failed(input: &Path, bad_file: &str, what: &str, extra: &[&str]) -> Value {
    let t = tmp();
    let out = t.path().join("out");
    let o = ingest(input, &out, extra);
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(&o));
    let err = stderr(&o);
    let line = err
        .lines()
        .find(|l| l.contains("ERROR"))
        .unwrap_or_else(|| panic!("no error line in {err}"));
    assert!(line.contains(bad_file) && line.contains(what), "{line}");
    let m = manifest(&out);
    let studies = m["studies"].as_array().unwrap();
    let failed: Vec<_> = studies.iter().filter(|s| s["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{m}");
    assert!(failed[0]["reason"].as_str().unwrap().contains(what));
    assert!(studies.iter().any(|s| s["status"] == "ok"), "{m}");
    m
}

#[test]
fn la2018_shards_agree_in_pyarrow_duckdb_polars() {
    require_data!("la2018");
    let t = tmp();
    let input = la_subset(t.path(), 5);
    let out = t.path().join("shards");
    let o = ingest(
        &input,
        &out,
        &[
            "--protocol",
            "all-slices",
            "--labeled-patients",
            "1",
            "--row-group-slices",
            "16",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    inspect_ok(&out);
    let m = manifest(&out);
    // every client opens the folder itself (schemas/shard-v2.md)
    let script = r#"
import sys, glob, json, hashlib
import pyarrow.parquet as pq, duckdb, polars as pl
d = sys.argv[1]; files = sorted(glob.glob(d + '/data/part-*.parquet'))
res = {}
t = pq.read_table(d)
f = pq.ParquetFile(files[0])
res['meta'] = {k.decode(): v.decode() for k, v in t.schema.metadata.items() if k.startswith(b'dmnet')}
res['row_group_rows'] = max(f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups))
res['compression'] = f.metadata.row_group(0).column(0).compression
x = t['image'].combine_chunks().to_numpy_ndarray()
res['numpy'] = [list(x.shape), str(x.dtype)]
def key(split, role): return split + '/' + role
c = {}
for s, r in zip(t.column('split').to_pylist(), t.column('role').to_pylist()):
    c[key(s, r)] = c.get(key(s, r), 0) + 1
res['pyarrow'] = c
res['duckdb'] = {key(s, r): n for s, r, n in duckdb.sql(f"select split, role, count(*) from read_parquet('{d}/**/*.parquet') group by all").fetchall()}
df = pl.scan_parquet(d + '/**/*.parquet').collect()
res['polars'] = {key(s, r): n for s, r, n in df.group_by(['split', 'role']).len().iter_rows()}
# one mask: the labeled row with the smallest (patient_key, slice_index) that has foreground
q = f"select patient_key, slice_index, mask from read_parquet('{d}/**/*.parquet') where labeled and list_max(mask) > 0 order by patient_key, slice_index limit 1"
pk, si, mask = duckdb.sql(q).fetchall()[0]
res['duckdb_mask'] = hashlib.sha256(bytes(mask)).hexdigest()
import pyarrow.compute as pc
sel = pc.and_(pc.and_(pc.equal(t['patient_key'], pk), pc.equal(t['slice_index'], si)), t['labeled'])
row = t.filter(sel).column('mask').to_pylist()[0]
res['pyarrow_mask'] = hashlib.sha256(bytes(row)).hexdigest()
prow = df.filter((pl.col('patient_key') == pk) & (pl.col('slice_index') == si) & pl.col('labeled'))['mask'].to_list()[0]
res['polars_mask'] = hashlib.sha256(bytes(prow)).hexdigest()
print(json.dumps(res))
"#;
    let o = run_ok(python().args(["-c", script]).arg(&out));
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["meta"]["dmnet.schema_version"], "3");
    let cfg: Value =
        serde_json::from_str(r["meta"]["dmnet.prep_config"].as_str().unwrap()).unwrap();
    assert_eq!(cfg["protocol"], "all-slices");
    assert_eq!(cfg["preprocess"]["size"], 32);
    // 88 slices per study in balanced row groups of at most 16: 6 groups of 15 or 13
    assert_eq!(r["row_group_rows"], 15);
    assert_eq!(r["compression"], "ZSTD");
    // one line of numpy: [N, C, H, W] float32 (float16-precise values, schema v3)
    assert_eq!(
        r["numpy"],
        serde_json::json!([[5 * 88, 1, 32, 32], "float32"])
    );
    assert_eq!(r["pyarrow"], r["duckdb"]);
    assert_eq!(r["pyarrow"], r["polars"]);
    let mut expect = serde_json::Map::new();
    for (split, roles) in m["counts"].as_object().unwrap() {
        for (role, n) in roles.as_object().unwrap() {
            expect.insert(format!("{split}/{role}"), n.clone());
        }
    }
    assert_eq!(r["pyarrow"], Value::Object(expect));
    assert_eq!(r["pyarrow_mask"], r["duckdb_mask"]);
    assert_eq!(r["polars_mask"], r["duckdb_mask"]);
    // all-slices: 5 patients → 4 train (1 labeled), 1 val, 0 test; every slice present
    assert_eq!(m["totals"]["slices"], 5 * 88);
    assert_eq!(m["counts"]["train"]["labeled"], 88);
    assert_eq!(m["counts"]["train"]["unlabeled"], 3 * 88);
}

#[test]
fn la2018_paper_protocol_and_reusable_splits() {
    require_data!("la2018");
    let t = tmp();
    let input = la_subset(t.path(), 10);
    let out = t.path().join("a");
    let o = ingest(&input, &out, &["--protocol", "paper", "--seed", "7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    inspect_ok(&out);
    let m = manifest(&out);
    // 10 patients → 7 / 1 / 2; one labeled slice each, two unlabeled per training patient
    assert_eq!(m["counts"]["train"]["labeled"], 7);
    assert_eq!(m["counts"]["train"]["unlabeled"], 14);
    assert_eq!(m["counts"]["val"]["labeled"], 1);
    assert_eq!(m["counts"]["test"]["labeled"], 2);
    assert!(m["counts"]["test"].get("unlabeled").is_none());
    let splits: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("_splits.json")).unwrap()).unwrap();
    // same seed → same split; another seed with --splits → the same patients per split
    let out_b = t.path().join("b");
    let o = bin("dmnet-prep")
        .args([
            "ingest",
            "-q",
            "--size",
            "32",
            "--protocol",
            "paper",
            "--seed",
            "99",
            "--input",
        ])
        .arg(&input)
        .arg("--out")
        .arg(&out_b)
        .arg("--splits")
        .arg(out.join("_splits.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let splits_b: Value =
        serde_json::from_str(&std::fs::read_to_string(out_b.join("_splits.json")).unwrap())
            .unwrap();
    for s in ["train", "val", "test"] {
        assert_eq!(splits[s], splits_b[s]);
    }
    // the patient keys are salted hashes, not the case ids
    let keys = splits["train"].as_array().unwrap();
    assert!(keys.iter().all(|k| k.as_str().unwrap().len() == 16));
    assert!(!std::fs::read_to_string(out.join("_splits.json"))
        .unwrap()
        .contains("06SR5RBREL16DQ6M8LWS"));
}

#[test]
fn resume_after_kill_has_no_duplicates_and_no_partial_parts() {
    require_data!("la2018");
    let t = tmp();
    let input = la_subset(t.path(), 8);
    // reference run
    let full = t.path().join("full");
    let args = ["--protocol", "all-slices", "--file-mb", "0"];
    assert!(ingest(&input, &full, &args).status.success());
    let expect = manifest(&full)["totals"]["slices"].clone();
    // killed run: wait for the first complete part, then kill -9
    let out = t.path().join("out");
    let mut child = bin("dmnet-prep")
        .args(["ingest", "-q", "--threads", "1", "--size", "32", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .args(args)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !out.join("data/part-00000.parquet").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !out.join("_manifest.json").exists(),
        "the run finished before the kill; the test proves nothing"
    );
    // the half-written folder is refused by its readers, with the command that finishes it
    let o = bin("dmnet-prep").arg("inspect").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let s = stdout(&o);
    assert!(
        s.contains("half-written") && s.contains("dmnet-prep ingest"),
        "{s}"
    );
    // an unfinished part is only ever a hidden temporary file
    let before: Vec<_> = std::fs::read_dir(out.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(before
        .iter()
        .all(|n| n.starts_with("part-") && n.ends_with(".parquet") || n.starts_with('.')));
    let o = ingest(&input, &out, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    assert_eq!(m["totals"]["slices"], expect);
    assert_eq!(m["totals"]["ok"], 8);
    inspect_ok(&out); // no duplicate rows, counts = manifest
    let left: Vec<_> = std::fs::read_dir(out.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn workers_then_merge_equal_one_run() {
    require_data!("la2018");
    let t = tmp();
    let input = la_subset(t.path(), 6);
    let one = t.path().join("one");
    assert!(ingest(&input, &one, &["--protocol", "paper"])
        .status
        .success());
    let out = t.path().join("multi");
    for w in ["0", "1"] {
        let o = ingest(
            &input,
            &out,
            &[
                "--protocol",
                "paper",
                "--worker-index",
                w,
                "--num-workers",
                "2",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    run_ok(bin("dmnet-prep").arg("merge").arg(&out));
    let (a, b) = (manifest(&one), manifest(&out));
    assert_eq!(a["counts"], b["counts"]);
    assert_eq!(a["totals"], b["totals"]);
    inspect_ok(&out);
    // one folder per worker (docs/scaling.md), merged into a fresh folder
    let dirs: Vec<PathBuf> = (0..2).map(|w| t.path().join(format!("w{w}"))).collect();
    for (w, d) in dirs.iter().enumerate() {
        let o = ingest(
            &input,
            d,
            &[
                "--protocol",
                "paper",
                "--worker-index",
                &w.to_string(),
                "--num-workers",
                "2",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let all = t.path().join("all");
    run_ok(
        bin("dmnet-prep")
            .arg("merge")
            .arg("--out")
            .arg(&all)
            .args(&dirs),
    );
    let c = manifest(&all);
    assert_eq!(a["counts"], c["counts"]);
    assert!(all.join("data/part-00000.parquet").exists() && all.join("_splits.json").exists());
    inspect_ok(&all);
}

#[test]
fn brats_missing_channel_fails_per_case_and_tumour_labels_merge() {
    let data = require_data!("brats-mini");
    let t = tmp();
    let pipeline = crate::util::root().join("pipelines/brats18.toml");
    let out = t.path().join("a");
    let o = bin("dmnet-prep")
        .args(["ingest", "--size", "32", "--input"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .arg("--pipeline")
        .arg(&pipeline)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let m = manifest(&out);
    assert_eq!(m["totals"]["failed"], 6);
    let reason = m["studies"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("missing channel(s) t1, t2"), "{reason}");
    let out = t.path().join("b");
    let o = bin("dmnet-prep")
        .args([
            "ingest",
            "-q",
            "--size",
            "32",
            "--channels",
            "flair,t1ce",
            "--input",
        ])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .arg("--pipeline")
        .arg(&pipeline)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let s = inspect_ok(&out);
    assert!(
        s.contains("channels: flair, t1ce") && s.contains("tumour"),
        "{s}"
    );
}

#[test]
fn dicom_tree_seg_labels_unlabeled_series_and_4d_failure() {
    let data = require_data!("dicom");
    let t = tmp();
    let out = t.path().join("d");
    let o = ingest(&data, &out, &["--layout", "dicom"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("ge-epi-4d") && err.contains("10 time points"),
        "{err}"
    );
    let m = manifest(&out);
    let st = m["studies"].as_array().unwrap();
    let ct = st
        .iter()
        .find(|s| s["source_path"] == "ct-3slice/series")
        .unwrap();
    assert_eq!(ct["status"], "ok");
    assert_eq!(ct["roles"]["labeled"], 1);
    let adc = st
        .iter()
        .find(|s| s["source_path"] == "prostate-adc")
        .unwrap();
    assert_eq!(adc["roles"]["unlabeled"], 2);
    assert!(adc["roles"].get("labeled").is_none());
    // CT and MR in one tree: a warning in the manifest, a broken invariant for inspect …
    assert!(
        m["warnings"]
            .to_string()
            .contains("mixes modalities CT (1 series), MR (2 series)"),
        "{m}"
    );
    let o = bin("dmnet-prep").arg("inspect").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("several channel sets (modalities): ct"),
        "{}",
        stdout(&o)
    );
    // … unless the pipeline allows the mixture
    let allow = t.path().join("allow.toml");
    std::fs::write(&allow, "[prep]\nallow_mixed = [\"modality\"]\n").unwrap();
    let out = t.path().join("allowed");
    let o = ingest(
        &data,
        &out,
        &["--layout", "dicom", "--pipeline", allow.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    inspect_ok(&out);
    // no DICOM identity in the shards: patient keys are hashes
    let script = r#"
import sys, glob, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
names = [n for n, l in zip(t.column('label_names').to_pylist(), t.column('labeled').to_pylist()) if l]
print(sorted(set(t.column('patient_key').to_pylist())), names[0])
"#;
    let o = run_ok(python().args(["-c", script]).arg(&out));
    let s = stdout(&o);
    assert!(s.contains("Liver"), "{s}");
    let obj = dicom_object::open_file(data.join("ct-3slice/series/01.dcm")).unwrap();
    let pid = obj
        .element(dicom_dictionary_std::tags::PATIENT_ID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim()
        .to_string();
    assert!(!pid.is_empty() && !s.contains(&pid), "{s} contains {pid}");
}

#[test]
fn bad_truncated_gzip() {
    require_data!("spleen-ct");
    let t = tmp();
    let (root, img, _) = spleen_pair(t.path());
    let b = std::fs::read(&img).unwrap();
    std::fs::write(&img, &b[..b.len() / 2]).unwrap();
    assert_one_failed(
        &root,
        "imagesTr/bad.nii.gz",
        "corrupt or truncated gzip",
        &[],
    );
}

#[test]
fn bad_wrong_magic() {
    require_data!("spleen-ct");
    let t = tmp();
    let (root, img, _) = spleen_pair(t.path());
    let mut b = gunzip(&img);
    b[344..348].copy_from_slice(b"xyz\0");
    gzip_to(&img, &b);
    assert_one_failed(&root, "imagesTr/bad.nii.gz", "not a NIfTI-1 file", &[]);
}

#[test]
fn bad_shape_mismatch() {
    require_data!("spleen-ct");
    let cord = require_data!("spinal-cord-mri");
    let t = tmp();
    let (root, _, lab) = spleen_pair(t.path());
    std::fs::copy(cord.join("sub-unf01_T2w_seg-manual.nii.gz"), &lab).unwrap();
    assert_one_failed(&root, "labelsTr/bad.nii.gz", "shape mismatch", &[]);
}

#[test]
fn bad_affine_mismatch() {
    require_data!("spleen-ct");
    let t = tmp();
    let (root, _, lab) = spleen_pair(t.path());
    let mut b = gunzip(&lab);
    // sform_code is 2 in this file: move srow_x's offset by 5 mm
    let off = 280 + 12;
    let v = f32::from_le_bytes(b[off..off + 4].try_into().unwrap()) + 5.0;
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    gzip_to(&lab, &b);
    assert_one_failed(&root, "labelsTr/bad.nii.gz", "affine differs", &[]);
}

#[test]
fn bad_nan_voxel() {
    require_data!("spleen-ct");
    let t = tmp();
    let (root, img, _) = spleen_pair(t.path());
    let mut b = gunzip(&img); // float32 HU
    let off = 352 + 4 * 1000;
    b[off..off + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    gzip_to(&img, &b);
    assert_one_failed(&root, "imagesTr/bad.nii.gz", "NaN/Inf", &[]);
}

#[test]
fn bad_fractional_float_labels() {
    let cord = require_data!("spinal-cord-mri");
    let t = tmp();
    let root = t.path().join("msd");
    for sub in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    for name in ["good", "bad"] {
        std::fs::copy(
            cord.join("sub-unf01_T2w.nii.gz"),
            root.join(format!("imagesTr/{name}.nii.gz")),
        )
        .unwrap();
        std::fs::copy(
            cord.join("sub-unf01_T2w_seg-manual.nii.gz"),
            root.join(format!("labelsTr/{name}.nii.gz")),
        )
        .unwrap();
    }
    let lab = root.join("labelsTr/bad.nii.gz");
    let mut b = gunzip(&lab); // float32 0/1 labels: the good copy is accepted
    let off = 352 + 4 * 5000;
    b[off..off + 4].copy_from_slice(&0.5f32.to_le_bytes());
    gzip_to(&lab, &b);
    assert_one_failed(&root, "labelsTr/bad.nii.gz", "non-whole", &[]);
}

/// Copies ct-3slice (labeled, ok) and prostate-adc (to corrupt) into a DICOM tree.
fn dicom_pair(dir: &Path) -> PathBuf {
    let d = crate::util::shared_data("dicom", "dicom_pair").unwrap();
    let root = dir.join("dicom");
    for (src, dst) in [("ct-3slice/series", "ct"), ("prostate-adc", "adc")] {
        std::fs::create_dir_all(root.join(dst)).unwrap();
        for e in std::fs::read_dir(d.join(src)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, root.join(dst).join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(d.join("ct-3slice/liver_seg.dcm"), root.join("ct/seg.dcm")).unwrap();
    root
}

#[test]
fn bad_dicom_without_position_tags() {
    require_data!("dicom");
    let t = tmp();
    let root = dicom_pair(t.path());
    let mut files: Vec<_> = std::fs::read_dir(root.join("adc"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut obj = dicom_object::open_file(&files[3]).unwrap();
    obj.remove_element(dicom_dictionary_std::tags::IMAGE_POSITION_PATIENT);
    obj.write_to_file(&files[3]).unwrap();
    let name = files[3].file_name().unwrap().to_string_lossy().into_owned();
    assert_one_failed(
        &root,
        &name,
        "no ImagePositionPatient",
        &["--layout", "dicom"],
    );
}

#[test]
fn bad_unreadable_dicom_file() {
    require_data!("dicom");
    let t = tmp();
    let root = dicom_pair(t.path());
    let bad = root.join("adc/garbage.dcm");
    let mut b = vec![0u8; 128];
    b.extend_from_slice(b"DICM");
    b.extend_from_slice(&[0xffu8; 64]);
    std::fs::write(&bad, b).unwrap();
    assert_one_failed(
        &root,
        "garbage.dcm",
        "unreadable DICOM file",
        &["--layout", "dicom"],
    );
}

#[test]
fn bad_empty_folders() {
    require_data!("spleen-ct");
    let t = tmp();
    // an empty input folder is a fatal error (exit 1) with a clear message
    let empty = t.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = ingest(&empty, &t.path().join("o1"), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("empty input folder"), "{}", stderr(&o));
    // an empty case folder in a kits19 tree fails that case only
    let sp = crate::util::shared_data("spleen-ct", "bad_empty_folders").unwrap();
    let kits = t.path().join("kits");
    std::fs::create_dir_all(kits.join("case_00000")).unwrap();
    std::fs::create_dir_all(kits.join("case_00001")).unwrap();
    std::fs::copy(
        sp.join("imagesTr/spleen2.nii.gz"),
        kits.join("case_00000/imaging.nii.gz"),
    )
    .unwrap();
    std::fs::copy(
        sp.join("labelsTr/spleen2.nii.gz"),
        kits.join("case_00000/segmentation.nii.gz"),
    )
    .unwrap();
    assert_one_failed(
        &kits,
        "case_00001",
        "case folder without imaging.nii.gz",
        &["--layout", "kits19"],
    );
}

#[test]
fn schema_file_matches_the_writer() {
    use arrow_schema::DataType;
    use dmnet::shard::{ImageDtype, SliceShape};
    // C·H·W = 30 and H·W = 15 are told apart from the fixed lengths 16, 3 and 2
    fn name(t: &DataType) -> String {
        match t {
            DataType::List(f) => format!("List<{}>", name(f.data_type())),
            DataType::FixedSizeList(f, n) => {
                let n = match n {
                    30 => "C·H·W".to_string(),
                    15 => "H·W".to_string(),
                    n => n.to_string(),
                };
                format!("FixedSizeList<{}, {n}>", name(f.data_type()))
            }
            DataType::Utf8 => "Utf8".into(),
            DataType::Int32 => "Int32".into(),
            DataType::Float16 => "Float16".into(),
            DataType::Float32 => "Float32".into(),
            DataType::Float64 => "Float64".into(),
            DataType::Boolean => "Boolean".into(),
            DataType::UInt8 => "UInt8".into(),
            DataType::Binary => "Binary".into(),
            other => format!("{other:?}"),
        }
    }
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::util::root().join("schemas/shard-v3.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(doc["version"], dmnet::shard::schema::SCHEMA_VERSION);
    for (dtype, precision) in [
        (ImageDtype::Float16, "float16"),
        (ImageDtype::Float32, "float32"),
    ] {
        let shape = SliceShape {
            channels: 2,
            height: 3,
            width: 5,
            dtype,
        };
        let schema = dmnet::shard::schema::arrow_schema(&shape, None);
        assert_eq!(schema.metadata()["dmnet.schema_version"], "3");
        let cols = doc["columns"].as_array().unwrap();
        assert_eq!(cols.len(), schema.fields().len());
        for (c, f) in cols.iter().zip(schema.fields()) {
            assert_eq!(c["name"], f.name().as_str());
            assert_eq!(c["arrow_type"], name(f.data_type()), "{}", f.name());
            if let Some(p) = f.metadata().get("dmnet.precision") {
                assert_eq!(p, precision);
                assert_eq!(c["field_metadata"]["dmnet.precision"], "float16 | float32");
            }
            assert_eq!(c["nullable"], f.is_nullable(), "{}", f.name());
            let ext = f.metadata().get("ARROW:extension:name");
            assert_eq!(
                c["extension"].as_str(),
                ext.map(String::as_str),
                "{}",
                f.name()
            );
            if let Some(meta) = f.metadata().get("ARROW:extension:metadata") {
                let dims = |v: &Value| match v.as_str() {
                    Some("C") => 2,
                    Some("H") => 3,
                    Some("W") => 5,
                    _ => v.as_u64().unwrap(),
                };
                let want: Vec<u64> = c["tensor_shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(dims)
                    .collect();
                let got: Value = serde_json::from_str(meta).unwrap();
                assert_eq!(got["shape"], serde_json::json!(want), "{}", f.name());
            }
        }
    }
}

/// dmnet's preprocessing (MRI z-score over non-zero voxels, slicing axis, half-pixel bilinear
/// image / nearest mask resize) equals the independent NumPy reference in
/// `scripts/bench_prep.py` (images to 1e-4, masks exactly) on two LA cases.
#[test]
fn preprocessing_matches_numpy_reference() {
    require_data!("la2018");
    let t = tmp();
    let input = la_subset(t.path(), 2);
    let script = crate::util::root().join("scripts/bench_prep.py");
    // float32 storage is exact: 1e-4 is the float32 arithmetic of the two implementations;
    // float16 storage adds at most half an ulp, 2^-11·|value| (schemas/shard-v2.md)
    for dtype in ["float32", "float16"] {
        let out = t.path().join(dtype);
        let o = bin("dmnet-prep")
            .args(["ingest", "-q", "--size", "48", "--protocol", "all-slices"])
            .args(["--image-dtype", dtype, "--input"])
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let o = run_ok(
            python()
                .arg(&script)
                .args(["check", "--input"])
                .arg(&input)
                .arg("--shards")
                .arg(&out),
        );
        let r: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(r["rows"], 176);
        assert_eq!(r["image_dtype"], dtype);
        assert!(r["masks_equal"].as_u64().unwrap() > 0);
        assert!(
            r["max_excess_over_tolerance"].as_f64().unwrap() <= 0.0,
            "{r}"
        );
        if dtype == "float32" {
            assert!(r["max_abs_image_diff"].as_f64().unwrap() < 1e-4, "{r}");
        } else {
            assert!(
                r["max_abs_image_diff"].as_f64().unwrap() > 1e-4,
                "float16 is lossy: {r}"
            );
        }
    }
}

/// `inspect` exits 1 when an invariant breaks: a copied part file is not in the manifest
/// (neither listed nor hashed).
#[test]
fn inspect_flags_duplicate_rows() {
    require_data!("la2018");
    let t = tmp();
    let input = la_subset(t.path(), 2);
    let out = t.path().join("s");
    assert!(ingest(&input, &out, &["--protocol", "paper"])
        .status
        .success());
    inspect_ok(&out);
    std::fs::copy(
        out.join("data/part-00000.parquet"),
        out.join("data/part-00001.parquet"),
    )
    .unwrap();
    let o = bin("dmnet-prep").arg("inspect").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let s = stdout(&o);
    // the copy is refused as a part the manifest neither lists nor hashes; its rows are not
    // read (they would be counted twice)
    assert!(
        s.contains("part-00001.parquet: not listed in _manifest.json")
            && s.contains("lists no hash for this part"),
        "{s}"
    );
}

/// A manifest CSV (auto-detected from a .csv input): a row without a label is an unlabeled
/// training patient.
#[test]
fn manifest_csv_layout_with_unlabeled_row() {
    let la = require_data!("la2018");
    let t = tmp();
    let mut cases: Vec<_> = std::fs::read_dir(la.join("imagesTr"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cases.sort();
    let csv = t.path().join("cohort.csv");
    std::fs::write(
        &csv,
        format!(
            "patient_id,mri,label\nA,{img0},{lab0}\nB,{img1},\n",
            img0 = la.join("imagesTr").join(&cases[0]).display(),
            lab0 = la.join("labelsTr").join(&cases[0]).display(),
            img1 = la.join("imagesTr").join(&cases[1]).display(),
        ),
    )
    .unwrap();
    let out = t.path().join("s");
    let o = bin("dmnet-prep")
        .args(["ingest", "--size", "32", "--input"])
        .arg(&csv)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("detected manifest"), "{}", stderr(&o));
    let m = manifest(&out);
    assert_eq!(m["counts"]["train"]["labeled"], 1);
    assert_eq!(m["counts"]["train"]["unlabeled"], 4);
    inspect_ok(&out);
    assert_ne!(m["studies"][0]["patient_key"], "A");
    // --keep-patient-ids opts out of the pseudonyms
    let out = t.path().join("ids");
    let o = ingest(&csv, &out, &["--keep-patient-ids"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let keys: Vec<_> = manifest(&out)["studies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["patient_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["A", "B"]);
}

/// MSD `imagesTs/` cases are unlabeled training studies.
#[test]
fn msd_images_ts_are_unlabeled() {
    require_data!("spleen-ct");
    let t = tmp();
    let (root, img, lab) = spleen_pair(t.path());
    std::fs::remove_file(&lab).unwrap();
    std::fs::create_dir_all(root.join("imagesTs")).unwrap();
    std::fs::rename(&img, root.join("imagesTs/unl.nii.gz")).unwrap();
    let out = t.path().join("s");
    let o = ingest(&root, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    let st = m["studies"].as_array().unwrap();
    let unl = st
        .iter()
        .find(|s| s["source_path"] == "imagesTs/unl.nii.gz")
        .unwrap();
    assert_eq!(unl["split"], "train");
    assert_eq!(unl["roles"]["unlabeled"], 2);
    inspect_ok(&out);
}

/// The lead's synthetic KiTS19 cohort goes through `auto` + `pipelines/kits19.toml` (CT window,
/// 3 classes); its DICOM-only patient is an unlabeled DICOM study.
#[test]
fn synth_kits19_cohort_ingests_with_the_kits19_pipeline() {
    let t = tmp();
    run_ok(
        bin("dmnet-prep")
            .args([
                "synth",
                "--patients",
                "3",
                "--dicom-patients",
                "1",
                "--size",
                "32",
                "--out",
            ])
            .arg(t.path().join("syn")),
    );
    let out = t.path().join("s");
    let pipeline = crate::util::root().join("pipelines/kits19.toml");
    let o = ingest(
        &t.path().join("syn/kits19"),
        &out,
        &["--layout", "auto", "--pipeline", pipeline.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s = inspect_ok(&out);
    assert!(s.contains("kidney"), "{s}");
    let o = ingest(&t.path().join("syn/dicom"), &t.path().join("d"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&t.path().join("d"));
    assert_eq!(m["counts"]["train"]["unlabeled"], 2);
}

/// Rewrites one element of every DICOM file of `dir` (sorted) for which `pick(index)` holds.
fn edit_dicom(
    dir: &Path,
    pick: impl Fn(usize) -> bool,
    edit: impl Fn(&mut dicom_object::DefaultDicomObject),
) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut edited = Vec::new();
    for (i, f) in files.iter().enumerate().filter(|(i, _)| pick(*i)) {
        let _ = i;
        let mut obj = dicom_object::open_file(f).unwrap();
        edit(&mut obj);
        obj.write_to_file(f).unwrap();
        edited.push(f.clone());
    }
    edited
}

/// ImagePositionPatient = NaN\NaN\NaN in one ADC file: that series fails naming the file
/// (it used to panic on a NaN sort key and lose the whole ingest); the CT series is ingested.
#[test]
fn bad_dicom_nan_image_position() {
    use dicom_core::{value::PrimitiveValue, DataElement, VR};
    require_data!("dicom");
    let t = tmp();
    let root = dicom_pair(t.path());
    let edited = edit_dicom(
        &root.join("adc"),
        |i| i == 4,
        |obj| {
            obj.put(DataElement::new(
                dicom_dictionary_std::tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                PrimitiveValue::from("NaN\\NaN\\NaN"),
            ));
        },
    );
    let name = edited[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_one_failed(&root, &name, "not finite", &["--layout", "dicom"]);
}

/// Rows = 0 on a DICOM series is refused by the reader, naming the file (it used to panic in
/// the preprocessing); the CT series is ingested.
#[test]
fn bad_dicom_rows_zero() {
    use dicom_core::{value::PrimitiveValue, DataElement, VR};
    require_data!("dicom");
    let t = tmp();
    let root = dicom_pair(t.path());
    edit_dicom(
        &root.join("adc"),
        |_| true,
        |obj| {
            obj.put(DataElement::new(
                dicom_dictionary_std::tags::ROWS,
                VR::US,
                PrimitiveValue::from(0u16),
            ));
        },
    );
    assert_one_failed(&root, "adc", "Rows (0028,0010) = 0", &["--layout", "dicom"]);
}

/// A file without SeriesInstanceUID fails with a line naming it (it used to break its series
/// with a gap message that did not name it); its series then fails for the missing slice and
/// the CT series is ingested.
#[test]
fn bad_dicom_without_series_uid() {
    require_data!("dicom");
    let t = tmp();
    let root = dicom_pair(t.path());
    let edited = edit_dicom(
        &root.join("adc"),
        |i| i == 7,
        |obj| {
            obj.remove_element(dicom_dictionary_std::tags::SERIES_INSTANCE_UID);
        },
    );
    let name = edited[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let out = t.path().join("out");
    let o = ingest(&root, &out, &["--layout", "dicom"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.lines().any(|l| l.contains("ERROR")
            && l.contains(&name)
            && l.contains("no SeriesInstanceUID")),
        "{err}"
    );
    let m = manifest(&out);
    let ok: Vec<_> = m["studies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "ok")
        .collect();
    assert_eq!(ok.len(), 1, "{m}");
    assert!(
        ok[0]["source_path"].as_str().unwrap().starts_with("ct"),
        "{m}"
    );
}

/// A symlink loop in a DICOM tree (adc/loop → ..) finds every file once (it used to find each
/// one 41 times and stack a fake 4-D series): both series ingest, the ADC with its 20 slices.
#[test]
fn bad_dicom_symlink_loop() {
    require_data!("dicom");
    let t = tmp();
    let root = dicom_pair(t.path());
    std::os::unix::fs::symlink(&root, root.join("adc/loop")).unwrap();
    let (series, bad) = dmnet::volume::scan_dicom_dir(&root).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let adc = series.iter().find(|s| s.modality == "MR").unwrap();
    assert_eq!(adc.files.len(), 20);
    let out = t.path().join("out");
    let o = ingest(
        &root,
        &out,
        &["--layout", "dicom", "--protocol", "all-slices"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    assert_eq!(m["totals"]["ok"], 2, "{m}");
    let adc = m["studies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source_path"] == "adc")
        .unwrap();
    assert_eq!(adc["slices"], 20, "{m}");
}

/// A DICOM SEG whose pixel data is truncated (frames would be lost as background) fails the
/// labeled CT study naming the SEG; the ADC series is ingested.
#[test]
fn bad_dicom_seg_truncated_pixel_data() {
    require_data!("dicom");
    let t = tmp();
    let root = dicom_pair(t.path());
    let seg = root.join("ct/seg.dcm");
    let mut obj = dicom_object::open_file(&seg).unwrap();
    let px = obj
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap()
        .into_owned();
    obj.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::PIXEL_DATA,
        dicom_core::VR::OB,
        dicom_core::value::PrimitiveValue::from(px[..px.len() / 2].to_vec()),
    ));
    obj.write_to_file(&seg).unwrap();
    assert_one_failed(
        &root,
        "seg.dcm",
        "truncated pixel data",
        &["--layout", "dicom"],
    );
}

/// A DICOM SEG that references a series not in the input is a warning naming the SEG and the
/// series, recorded in the manifest (it used to be ignored silently).
#[test]
fn bad_dicom_seg_references_unknown_series() {
    require_data!("dicom");
    let t = tmp();
    let root = dicom_pair(t.path());
    let seg = root.join("ct/seg.dcm");
    let mut obj = dicom_object::open_file(&seg).unwrap();
    let mut item = obj
        .element(dicom_dictionary_std::tags::REFERENCED_SERIES_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .clone();
    item.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::SERIES_INSTANCE_UID,
        dicom_core::VR::UI,
        dicom_core::value::PrimitiveValue::from("1.2.3.4.5"),
    ));
    obj.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::REFERENCED_SERIES_SEQUENCE,
        dicom_core::VR::SQ,
        dicom_core::value::DataSetSequence::from(vec![item]),
    ));
    obj.write_to_file(&seg).unwrap();
    let out = t.path().join("out");
    let o = ingest(&root, &out, &["--layout", "dicom"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    let w = m["warnings"].to_string();
    assert!(w.contains("ct/seg.dcm") && w.contains("1.2.3.4.5"), "{m}");
    assert!(stderr(&o).contains("1.2.3.4.5"), "{}", stderr(&o));
}

/// NaN in a NIfTI sform fails that case naming the file and the sform (it used to give NaN
/// spacing, affine and slice positions); Inf in pixdim likewise.
#[test]
fn bad_nifti_nan_sform() {
    require_data!("spleen-ct");
    let t = tmp();
    let (root, img, _) = spleen_pair(t.path());
    let mut b = gunzip(&img);
    b[280..284].copy_from_slice(&f32::NAN.to_le_bytes()); // srow_x[0]
    gzip_to(&img, &b);
    assert_one_failed(&root, "imagesTr/bad.nii.gz", "sform", &[]);
    let t = tmp();
    let (root, img, _) = spleen_pair(t.path());
    let mut b = gunzip(&img);
    b[84..88].copy_from_slice(&f32::INFINITY.to_le_bytes()); // pixdim[2]
    gzip_to(&img, &b);
    assert_one_failed(&root, "imagesTr/bad.nii.gz", "pixdim[2] = inf", &[]);
}

/// A header whose dims overflow any file: the message shows the real values (it used to show
/// wrapped integers).
#[test]
fn bad_nifti_header_overflow_shows_real_values() {
    require_data!("spleen-ct");
    let t = tmp();
    let (root, img, _) = spleen_pair(t.path());
    let mut b = gunzip(&img);
    b[40..42].copy_from_slice(&7i16.to_le_bytes()); // dim[0] = 7
    for i in 1..=7 {
        b[40 + 2 * i..42 + 2 * i].copy_from_slice(&32767i16.to_le_bytes());
    }
    gzip_to(&img, &b);
    // 32767^7 voxels × 4 bytes (float32) + 352
    let need: u128 = 32767u128.pow(7) * 4 + 352;
    let m = assert_one_failed(&root, "imagesTr/bad.nii.gz", &need.to_string(), &[]);
    assert!(m.to_string().contains("[32767, 32767, 32767]"), "{m}");
}

/// An MSD case without its label, and a dataset without labelsTr/, are warnings recorded in the
/// manifest (they used to become unlabeled silently).
#[test]
fn msd_missing_label_is_a_warning() {
    require_data!("spleen-ct");
    let t = tmp();
    let (root, _, lab) = spleen_pair(t.path());
    std::fs::remove_file(&lab).unwrap();
    let out = t.path().join("a");
    let o = ingest(&root, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let w = manifest(&out)["warnings"].to_string();
    assert!(w.contains("case bad") && w.contains("no label"), "{w}");
    std::fs::remove_dir_all(root.join("labelsTr")).unwrap();
    let out = t.path().join("b");
    let o = ingest(&root, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let w = manifest(&out)["warnings"].to_string();
    assert!(w.contains("no labelsTr/ folder"), "{w}");
}

/// The same case ID in imagesTr and imagesTs fails both copies with one line naming both files
/// (the volume used to be written twice, into train and test).
#[test]
fn msd_duplicate_case_ids_fail_naming_both_files() {
    require_data!("spleen-ct");
    let t = tmp();
    let (root, _, _) = spleen_pair(t.path());
    std::fs::create_dir_all(root.join("imagesTs")).unwrap();
    std::fs::copy(
        root.join("imagesTr/bad.nii.gz"),
        root.join("imagesTs/bad.nii.gz"),
    )
    .unwrap();
    let out = t.path().join("out");
    let o = ingest(&root, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let m = manifest(&out);
    let failed: Vec<_> = m["studies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 2, "{m}");
    for f in failed {
        let r = f["reason"].as_str().unwrap();
        assert!(
            r.contains("imagesTr/bad.nii.gz") && r.contains("imagesTs/bad.nii.gz"),
            "{r}"
        );
    }
    assert_eq!(m["totals"]["ok"], 1);
}

/// A case stored as `.nii` (not `.nii.gz`) is read like any other (it used to be skipped
/// without a word).
#[test]
fn msd_case_stored_as_nii_is_read() {
    require_data!("spleen-ct");
    let t = tmp();
    let (root, img, lab) = spleen_pair(t.path());
    std::fs::write(root.join("imagesTr/bad.nii"), gunzip(&img)).unwrap();
    std::fs::write(root.join("labelsTr/bad.nii"), gunzip(&lab)).unwrap();
    std::fs::remove_file(&img).unwrap();
    std::fs::remove_file(&lab).unwrap();
    let out = t.path().join("out");
    let o = ingest(&root, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    assert_eq!(m["totals"]["ok"], 2, "{m}");
    assert!(
        m["studies"].to_string().contains("imagesTr/bad.nii\""),
        "{m}"
    );
    let labeled: u64 = m["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["labeled"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(labeled, 2, "{m}");
}

/// A CSV manifest with a repeated row fails both rows naming them, and a row with an empty
/// patient_id fails naming the row.
#[test]
fn manifest_csv_duplicate_row_and_empty_patient_id() {
    let la = require_data!("la2018");
    let t = tmp();
    let mut cases: Vec<_> = std::fs::read_dir(la.join("imagesTr"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cases.sort();
    let img = |i: usize| la.join("imagesTr").join(&cases[i]).display().to_string();
    let lab = |i: usize| la.join("labelsTr").join(&cases[i]).display().to_string();
    let csv = t.path().join("cohort.csv");
    std::fs::write(
        &csv,
        format!(
            "patient_id,mri,label\nA,{},{}\nB,{},{}\nB,{},{}\n,{},{}\n",
            img(0),
            lab(0),
            img(1),
            lab(1),
            img(1),
            lab(1),
            img(2),
            lab(2)
        ),
    )
    .unwrap();
    let out = t.path().join("s");
    let o = ingest(&csv, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let m = manifest(&out);
    let reasons: Vec<String> = m["studies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .map(|s| s["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons.len(), 3, "{m}");
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("rows 3 and 4") && r.contains(&cases[1]))
            .count(),
        2,
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("row 5: empty patient_id")),
        "{reasons:?}"
    );
    assert_eq!(m["totals"]["ok"], 1);
}

/// nnU-Net v2 raw naming (`imagesTr/<case>_0000.nii.gz`, `labelsTr/<case>.nii.gz`,
/// `dataset.json` with `channel_names`, `labels`, `file_ending`) on la2018 renamed in a temp
/// dir: every case keeps its label (the `_0000` suffix used to be kept, so no label was found
/// and every slice became unlabeled with exit 0).
#[test]
fn nnunet_v2_channel_suffix_keeps_labels() {
    let la = require_data!("la2018");
    let t = tmp();
    let root = t.path().join("Dataset001_LA");
    for sub in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let mut cases: Vec<_> = std::fs::read_dir(la.join("imagesTr"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cases.sort();
    for c in cases.iter().take(4) {
        let case = c.trim_end_matches(".nii.gz");
        std::os::unix::fs::symlink(
            la.join("imagesTr").join(c),
            root.join(format!("imagesTr/{case}_0000.nii.gz")),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            la.join("labelsTr").join(c),
            root.join(format!("labelsTr/{case}.nii.gz")),
        )
        .unwrap();
    }
    std::fs::write(
        root.join("dataset.json"),
        r#"{"channel_names": {"0": "MRI"}, "labels": {"background": 0, "left atrium": 1}, "numTraining": 4, "file_ending": ".nii.gz"}"#,
    )
    .unwrap();
    let out = t.path().join("s");
    let o = ingest(&root, &out, &["--protocol", "all-slices"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    assert_eq!(m["totals"]["ok"], 4, "{m}");
    let counts = m["counts"].as_object().unwrap();
    let labeled: u64 = counts
        .values()
        .map(|c| c["labeled"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(labeled, 4 * 88, "{m}");
    assert!(counts.values().all(|c| c.get("unlabeled").is_none()), "{m}");
    let o = run_ok(bin("dmnet-prep").args(["inspect", "--json"]).arg(&out));
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(r["problems"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(r["channels"], serde_json::json!(["mri"]));
    assert!(
        r["class_pixels"]["left atrium"].as_u64().unwrap() > 0,
        "{r}"
    );
}

/// `--size` values the network rejects (not a multiple of 16, or < 32) are refused at prep,
/// before any work (exit 1, naming the rule).
#[test]
fn size_not_accepted_by_the_network_is_refused_at_prep() {
    require_data!("spleen-ct");
    let t = tmp();
    let (root, _, _) = spleen_pair(t.path());
    for size in ["40", "16"] {
        let o = bin("dmnet-prep")
            .args(["ingest", "-q", "--size", size, "--input"])
            .arg(&root)
            .arg("--out")
            .arg(t.path().join(size))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("multiple of 16"), "{}", stderr(&o));
        assert!(!t.path().join(size).join("_manifest.json").exists());
    }
}

/// `--timepoint N` ingests time point N of the 4-D GE EPI series (15 slices), the same voxels as
/// `read_dicom_timepoint`; without it the series fails naming its 10 time points.
#[test]
fn timepoint_flag_ingests_one_time_point() {
    let d = require_data!("dicom/ge-epi-4d");
    let t = tmp();
    let out = t.path().join("s");
    let o = ingest(
        &d.join("series"),
        &out,
        &[
            "--layout",
            "dicom",
            "--protocol",
            "all-slices",
            "--timepoint",
            "3",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    assert_eq!(m["totals"]["slices"], 15, "{m}");
    assert_eq!(m["config"]["timepoint"], 3);
    inspect_ok(&out);
    let o = ingest(
        &d.join("series"),
        &t.path().join("x"),
        &["--layout", "dicom"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("10 time points") && stderr(&o).contains("--timepoint"),
        "{}",
        stderr(&o)
    );
}

/// One slice orientation per dataset: the synthetic phantom cohort, whose volumes' own
/// through-plane axes differ (in-plane spacing 3.4–4.2 mm, slices 2.5–5 mm apart: some are
/// "thinner" along x), ingests with one orientation chosen for the whole dataset and logged;
/// `inspect` reports it; a folder holding two orientations is a broken invariant.
#[test]
fn one_slice_axis_per_dataset() {
    let t = tmp();
    run_ok(
        bin("dmnet-prep")
            .args([
                "synth",
                "--patients",
                "12",
                "--dicom-patients",
                "0",
                "--out",
            ])
            .arg(t.path().join("syn")),
    );
    let input = t.path().join("syn/kits19");
    let out = t.path().join("s");
    let o = bin("dmnet-prep")
        .args([
            "ingest",
            "--size",
            "32",
            "--protocol",
            "all-slices",
            "--input",
        ])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let line = err
        .lines()
        .find(|l| l.contains("slice axis: auto → "))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("for the whole dataset"), "{line}");
    // the cohort really mixes: some volumes' own through-plane axis is axial, some sagittal
    assert!(
        !line.contains("axial 0,") && !line.contains("sagittal 0)"),
        "{line}"
    );
    let chosen = manifest(&out)["config"]["preprocess"]["slice_axis"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(line.contains(&format!("auto → {chosen} ")), "{line}");
    let rep = |dir: &Path| -> Value {
        let o = bin("dmnet-prep")
            .args(["inspect", "--json"])
            .arg(dir)
            .output()
            .unwrap();
        serde_json::from_str(&stdout(&o)).unwrap()
    };
    let r = rep(&out);
    assert_eq!(
        r["orientations"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        [&chosen],
        "{r}"
    );
    assert!(r["problems"].as_array().unwrap().is_empty(), "{r}");
    // the same cohort sliced the other way, one part copied in: two orientations are broken
    let other = if chosen == "axial" {
        "sagittal"
    } else {
        "axial"
    };
    let sag = t.path().join("other");
    let pipeline = t.path().join("other.toml");
    std::fs::write(
        &pipeline,
        format!("[prep.preprocess]\nslice_axis = \"{other}\"\n"),
    )
    .unwrap();
    let o = ingest(
        &input,
        &sag,
        &[
            "--protocol",
            "all-slices",
            "--pipeline",
            pipeline.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        rep(&sag)["orientations"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        [other]
    );
    std::fs::copy(
        sag.join("data/part-00000.parquet"),
        out.join("data/part-00099.parquet"),
    )
    .unwrap();
    // a part of another orientation copied in is refused as foreign (not listed, no hash);
    // the orientation mixture itself is refused by `shard::checks` (unit-tested there)
    let r = rep(&out);
    assert!(
        r["problems"]
            .to_string()
            .contains("part-00099.parquet: not listed"),
        "{r}"
    );
}

/// A volume that cannot follow the dataset's slice orientation (the spleen CT's sform turned 45°
/// about L–R: no voxel axis within 41° of S–I) fails by name when the dataset is sliced axially;
/// the other case is ingested.
#[test]
fn oblique_volume_that_cannot_follow_the_slice_axis_fails_by_name() {
    require_data!("spleen-ct");
    let t = tmp();
    let (root, img, lab) = spleen_pair(t.path());
    let (c, s) = (
        std::f32::consts::FRAC_1_SQRT_2,
        std::f32::consts::FRAC_1_SQRT_2,
    );
    for p in [&img, &lab] {
        let mut b = gunzip(p);
        let f = |b: &[u8], o: usize| f32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let (sy, sz) = (f(&b, 280 + 16 + 4).abs(), f(&b, 280 + 32 + 8).abs());
        // srow_y = (0, c·sy, −s·sz, ty), srow_z = (0, s·sy, c·sz, tz)
        for (off, v) in [
            (296, 0.0),
            (300, c * sy),
            (304, -s * sz),
            (312, 0.0),
            (316, s * sy),
            (320, c * sz),
        ] {
            b[off..off + 4].copy_from_slice(&f32::to_le_bytes(v));
        }
        gzip_to(p, &b);
    }
    let pipeline = t.path().join("axial.toml");
    std::fs::write(&pipeline, "[prep.preprocess]\nslice_axis = \"axial\"\n").unwrap();
    assert_one_failed(
        &root,
        "imagesTr/bad.nii.gz",
        "cannot slice axial",
        &["--pipeline", pipeline.to_str().unwrap()],
    );
}
