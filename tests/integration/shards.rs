//! Shard schema v3 on real data (la2018): the shard folder is an Arrow dataset that pyarrow,
//! DuckDB and polars open as is, `examples/read_shards.py` runs, `dmnet-prep upgrade` turns a v1
//! folder into the same rows, and the shard-side bad inputs of issues 12 and 23, each made by
//! corrupting a copy of real shards, are refused with one line naming the file: on open when
//! the part's bytes no longer match its SHA-256 in the manifest, and when its rows are read
//! when someone rewrote the part and re-hashed the manifest to match.
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::util::{bin, python, run_ok, stderr, stdout, tmp};

/// Ingests `n` la2018 studies at 32×32, all slices, one part per study.
fn shards(dir: &Path, n: usize, extra: &[&str]) -> Option<PathBuf> {
    crate::util::shared_data("la2018", "shards")?;
    let input = crate::prep::la_subset(dir, n);
    let out = dir.join("shards");
    let o = bin("dmnet-prep")
        .args(["ingest", "-q", "--threads", "2", "--size", "32"])
        .args(["--protocol", "all-slices", "--file-mb", "0", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    Some(out)
}

fn part(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("data/part-{i:05}.parquet"))
}

/// Rewrites one part with pyarrow after `edit` (Python statements on `t`, a pyarrow Table;
/// `np` and `pa` are imported) — what a data team's script would do to a shard.
fn rewrite_part(path: &Path, edit: &str) {
    let script = format!(
        "import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq\n\
         p = sys.argv[1]; t = pq.read_table(p)\n{edit}\npq.write_table(t, p)\n"
    );
    run_ok(python().args(["-c", &script]).arg(path));
}

/// Rewrites the manifest's size and SHA-256 of every part to match the files (Python's
/// hashlib): what someone who edits a part and "fixes" the manifest would do. The writer's
/// value checks recorded beside them are left as they were.
fn rehash(dir: &Path) {
    let script = r#"
import sys, json, hashlib, os
d = sys.argv[1]; p = os.path.join(d, '_manifest.json'); m = json.load(open(p))
for e in m['parts']:
    f = os.path.join(d, 'data', e['name']); b = open(f, 'rb').read()
    e['sha256'] = hashlib.sha256(b).hexdigest(); e['bytes'] = len(b)
json.dump(m, open(p, 'w'))
"#;
    run_ok(python().args(["-c", script]).arg(dir));
}

/// Python that replaces the values of tensor column `col` in row `row`, element `k`, by `v`.
fn set_tensor_value(col: &str, row: usize, k: usize, v: &str) -> String {
    format!(
        "c = t['{col}'].combine_chunks(); s = c.storage; n = s.type.list_size\n\
         vals = s.values.to_numpy(zero_copy_only=False).copy(); vals[{row} * n + {k}] = {v}\n\
         new = pa.FixedSizeListArray.from_arrays(pa.array(vals, s.type.value_type), n, mask=s.is_null())\n\
         i = t.schema.get_field_index('{col}'); t = t.set_column(i, t.schema.field(i), pa.ExtensionArray.from_storage(c.type, new))"
    )
}

/// `dmnet-train` on the shards: it must fail before any libtorch work, with one line naming
/// `what` (and no panic).
fn train_refuses(shards: &Path, out: &Path, what: &[&str]) -> String {
    let o: Output = bin("dmnet-train")
        .arg("--shards")
        .arg(shards)
        .arg("--out")
        .arg(out)
        .args(["--epochs", "1", "--device", "cpu", "--size", "32"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    for w in what {
        assert!(line.contains(w), "{w:?} not in {line}");
    }
    line.to_string()
}

/// The error of reading every row of the folder (as `dmnet-infer` on shards does).
fn read_error(dir: &Path) -> String {
    dmnet::shard::read_shards(dir)
        .map_err(|e| e.to_string())
        .and_then(|r| r.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string()))
        .unwrap_err()
}

/// The error of opening the folder as `dmnet-infer` and `dmnet-train` do.
fn open_error(dir: &Path) -> String {
    dmnet::shard::read_shards(dir).unwrap_err().to_string()
}

/// Every Arrow client opens the folder itself, numpy gets [N, C, H, W] in one line, and
/// `examples/read_shards.py` (pyarrow → numpy, DuckDB by patient and role, a numpy Dataset)
/// runs on it.
#[test]
fn shard_folder_opens_in_pyarrow_duckdb_polars_and_the_example_runs() {
    let t = tmp();
    let Some(dir) = shards(t.path(), 3, &[]) else {
        return;
    };
    let script = r#"
import sys, json, pyarrow.parquet as pq, duckdb, polars as pl
d = sys.argv[1]
t = pq.read_table(d)
x = t['image'].combine_chunks().to_numpy_ndarray()
m = t.filter(t['labeled'])['mask'].combine_chunks().to_numpy_ndarray()
res = {'rows': t.num_rows, 'numpy': list(x.shape) + [str(x.dtype)], 'mask': list(m.shape),
       'version': t.schema.metadata[b'dmnet.schema_version'].decode(),
       'duckdb': duckdb.sql(f"select count(*) from read_parquet('{d}/**/*.parquet')").fetchall()[0][0],
       'polars': pl.scan_parquet(d + '/**/*.parquet').select(pl.len()).collect().item()}
print(json.dumps(res))
"#;
    let o = run_ok(python().args(["-c", script]).arg(&dir));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        r,
        serde_json::json!({"rows": 264, "numpy": [264, 1, 32, 32, "float32"], "mask": [264, 32, 32],
                           "version": "3", "duckdb": 264, "polars": 264})
    );
    let example = crate::util::root().join("examples/read_shards.py");
    let o = run_ok(python().arg(&example).arg(&dir));
    let s = stdout(&o);
    assert!(
        s.contains("image (264, 1, 32, 32) float32") && s.contains("dataset 264"),
        "{s}"
    );
}

/// `dmnet-prep upgrade` turns a schema-v1 folder (written by `scripts/bench_prep.py v1copy`, a
/// pyarrow writer that follows `schemas/shard-v1.md`) into v2 with exactly the same rows; before that, readers refuse it
/// with the exact command.
#[test]
fn v1_folder_is_refused_with_the_upgrade_command_then_upgraded_exactly() {
    let t = tmp();
    let Some(v2) = shards(t.path(), 2, &["--image-dtype", "float32"]) else {
        return;
    };
    let v1 = t.path().join("v1 shards");
    let script = crate::util::root().join("scripts/bench_prep.py");
    run_ok(
        python()
            .arg(&script)
            .args(["v1copy", "--input", "-", "--shards"])
            .arg(&v2)
            .arg("--out")
            .arg(&v1),
    );
    let command = format!("dmnet-prep upgrade '{}'", v1.display());
    train_refuses(&v1, &t.path().join("run"), &["schema version 1", &command]);
    let e = open_error(&v1);
    assert!(
        e.contains("schema version 1") && e.contains(&command),
        "{e}"
    );
    let o = run_ok(bin("dmnet-prep").arg("upgrade").arg(&v1));
    assert!(stdout(&o).contains("2 parts, 176 rows"), "{}", stdout(&o));
    let rows = |d: &Path| -> Vec<dmnet::shard::SliceRecord> {
        dmnet::shard::read_shards(d)
            .unwrap()
            .flat_map(|g| g.unwrap())
            .collect()
    };
    // v1 carried no source-grid labels: everything else is the same, row for row
    let strip = |mut v: Vec<dmnet::shard::SliceRecord>| {
        v.iter_mut().for_each(|r| r.source_mask = None);
        v
    };
    assert_eq!(rows(&v1), strip(rows(&v2)));
    assert!(!v1.join("manifest.json").exists() && !v1.join("part-00000.parquet").exists());
    let o = run_ok(bin("dmnet-prep").arg("inspect").arg(&v1));
    assert!(stdout(&o).contains("all invariants hold"), "{}", stdout(&o));
}

/// Issue 12: `inspect` on a part with 4 KB of random bytes in the middle spun at 100 % CPU
/// forever (it retried a broken reader); now it reports the broken file and exits 1 (the
/// part's SHA-256 no longer matches the manifest's, issue 23).
#[test]
fn bad_shard_random_bytes_in_a_part_inspect_ends_naming_the_file() {
    let t = tmp();
    let Some(dir) = shards(t.path(), 2, &[]) else {
        return;
    };
    let p = part(&dir, 1);
    let o = run_ok(
        python()
            .args(["-c", "import sys, pyarrow.parquet as pq; m = pq.ParquetFile(sys.argv[1]).metadata; print(m.num_row_groups, m.row_group(1).column(0).data_page_offset)"])
            .arg(&p),
    );
    let out = stdout(&o);
    let v: Vec<usize> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(v[0], 2, "88 slices in two row groups of 44");
    let mut b = std::fs::read(&p).unwrap();
    let mid = v[1];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for v in &mut b[mid..mid + 4096] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *v = x as u8;
    }
    std::fs::write(&p, &b).unwrap();
    let mut child = bin("dmnet-prep")
        .arg("inspect")
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("inspect still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    let s = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{s}");
    assert!(
        s.lines()
            .any(|l| l.contains("BROKEN") && l.contains("part-00001.parquet")),
        "{s}"
    );
    // the readers of dmnet-train / dmnet-infer stop with an error naming the file too
    let e = dmnet::shard::read_shards(&dir)
        .map_err(|e| e.to_string())
        .and_then(|r| r.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string()))
        .unwrap_err();
    assert!(e.contains("part-00001.parquet"), "{e}");
}

/// Issue 12: a mask value ≥ the number of classes made `dmnet-train` panic inside libtorch and
/// `dmnet-infer` report wrong metrics. An edited part is refused on open (its hash changed);
/// re-hashed, its rows are refused when read, naming the file and the value.
#[test]
fn bad_shard_mask_value_at_least_num_classes() {
    let t = tmp();
    let Some(dir) = shards(t.path(), 2, &[]) else {
        return;
    };
    rewrite_part(&part(&dir, 1), &set_tensor_value("mask", 40, 500, "2"));
    let e = open_error(&dir);
    assert!(
        e.contains("part-00001.parquet") && e.contains("corrupt shard part"),
        "{e}"
    );
    train_refuses(
        &dir,
        &t.path().join("run"),
        &["part-00001.parquet", "SHA-256"],
    );
    rehash(&dir);
    // the part opens (its hash matches again); its rows are refused when read
    let e = read_error(&dir);
    assert!(
        e.contains("part-00001.parquet") && e.contains("mask value 2"),
        "{e}"
    );
    let o = bin("dmnet-prep").arg("inspect").arg(&dir).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("mask value 2"), "{}", stdout(&o));
}

/// Issue 12: NaN pixels let training run with null losses; an edited part is refused on open
/// (its hash), a re-hashed one when its rows are read.
#[test]
fn bad_shard_nan_pixels() {
    let t = tmp();
    let Some(dir) = shards(t.path(), 2, &[]) else {
        return;
    };
    rewrite_part(
        &part(&dir, 0),
        &set_tensor_value("image", 70, 123, "np.nan"),
    );
    let e = open_error(&dir);
    assert!(
        e.contains("part-00000.parquet") && e.contains("SHA-256"),
        "{e}"
    );
    rehash(&dir);
    train_refuses(
        &dir,
        &t.path().join("run"),
        &["part-00000.parquet", "not finite"],
    );
    let o = bin("dmnet-prep").arg("inspect").arg(&dir).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("not finite"), "{}", stdout(&o));
}

/// Issue 23: random bytes written into a part at several offsets (in the image, mask and
/// metadata columns' pages, a page header, the footer) were read as other pixel values; the
/// part's SHA-256 in the manifest now refuses every one, naming the part, in `inspect`,
/// `dmnet-train` and `dmnet-infer`'s reader.
#[test]
fn bad_shard_flipped_bytes_anywhere_are_refused_naming_the_part() {
    let t = tmp();
    let Some(dir) = shards(t.path(), 2, &[]) else {
        return;
    };
    let p = part(&dir, 1);
    // offsets of a page of image, mask and patient_key data, a page header, and the footer
    let script = r#"
import sys, os, pyarrow.parquet as pq
md = pq.ParquetFile(sys.argv[1]).metadata; rg = md.row_group(0)
col = {rg.column(i).path_in_schema.split('.')[0]: rg.column(i) for i in range(rg.num_columns)}
size = os.path.getsize(sys.argv[1])
print(col['image'].data_page_offset + 200, col['mask'].data_page_offset + 60,
      col['patient_key'].data_page_offset + 30, col['image'].data_page_offset + 2, size - 40)
"#;
    let o = run_ok(python().args(["-c", script]).arg(&p));
    let offsets: Vec<usize> = stdout(&o)
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(offsets.len(), 5);
    let clean = std::fs::read(&p).unwrap();
    for off in offsets {
        let mut b = clean.clone();
        for (i, v) in b[off..off + 8].iter_mut().enumerate() {
            *v ^= 0x5a ^ i as u8;
        }
        std::fs::write(&p, &b).unwrap();
        let e = open_error(&dir);
        assert!(
            e.contains("part-00001.parquet") && e.contains("corrupt shard part"),
            "offset {off}: {e}"
        );
        let o = bin("dmnet-prep").arg("inspect").arg(&dir).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "offset {off}");
        assert!(
            stdout(&o)
                .lines()
                .any(|l| l.contains("BROKEN") && l.contains("part-00001.parquet")),
            "offset {off}: {}",
            stdout(&o)
        );
    }
    std::fs::write(&p, &clean).unwrap();
    dmnet::shard::ShardIndex::open(&dir).expect("the restored part opens again");
}

/// Issue 12: `dmnet-train` accepted a half-written folder without its manifest; now train and
/// the reader of `dmnet-infer` refuse it with the command that finishes it.
#[test]
fn bad_shard_folder_without_manifest() {
    let t = tmp();
    let Some(dir) = shards(t.path(), 2, &[]) else {
        return;
    };
    std::fs::remove_file(dir.join("_manifest.json")).unwrap();
    let e = open_error(&dir);
    assert!(
        e.contains("half-written") && e.contains("dmnet-prep ingest") && e.contains("--file-mb 0"),
        "{e}"
    );
    train_refuses(
        &dir,
        &t.path().join("run"),
        &["half-written", "dmnet-prep ingest"],
    );
}

/// Issue 12: only the first part's schema version was checked; now every part is, on open.
#[test]
fn bad_shard_schema_version_of_a_later_part() {
    let t = tmp();
    let Some(dir) = shards(t.path(), 2, &[]) else {
        return;
    };
    let edit = "m = dict(t.schema.metadata); m[b'dmnet.schema_version'] = b'99'\n\
                t = t.replace_schema_metadata(m)";
    rewrite_part(&part(&dir, 1), edit);
    rehash(&dir);
    let e = open_error(&dir);
    assert!(
        e.contains("part-00001.parquet") && e.contains("schema version 99") && !e.contains("Some("),
        "{e}"
    );
    train_refuses(
        &dir,
        &t.path().join("run"),
        &["part-00001.parquet", "version"],
    );
}

/// Issue 12: ingest into a non-empty `--out` deleted a foreign `part-00007.parquet` and kept
/// other foreign parts; now it refuses any file it did not write, changing nothing.
#[test]
fn bad_ingest_into_a_folder_with_foreign_files() {
    let t = tmp();
    let Some(other) = shards(t.path(), 1, &[]) else {
        return;
    };
    let input = t.path().join("la");
    for (foreign, name) in [
        ("data/part-00007.parquet", "part-00007.parquet"),
        ("part-00007.parquet", "part-00007.parquet"),
        ("notes.txt", "notes.txt"),
    ] {
        let out = t.path().join(format!("out-{}", foreign.replace('/', "-")));
        std::fs::create_dir_all(out.join("data")).unwrap();
        std::fs::copy(part(&other, 0), out.join(foreign)).unwrap();
        let o = bin("dmnet-prep")
            .args(["ingest", "-q", "--size", "32", "--input"])
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains(name) && err.contains("did not write it"),
            "{err}"
        );
        assert!(out.join(foreign).exists(), "{foreign} was deleted");
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.len() <= 2,
            "ingest wrote into a refused folder: {left:?}"
        );
    }
    // a part added to a finished folder is refused by the readers: the manifest does not list it
    std::fs::copy(part(&other, 0), part(&other, 7)).unwrap();
    let e = open_error(&other);
    assert!(
        e.contains("part-00007.parquet") && e.contains("not listed"),
        "{e}"
    );
}
