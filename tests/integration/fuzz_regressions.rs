//! The inputs the cargo-fuzz targets found (docs/reliability.md), minimised, in
//! `tests/fuzz-regressions/<target>/`: each goes through the same entry point as the fuzzer
//! (`dmnet::fuzzing`) and must give an `Err`: no panic, no hang, no broken invariant. The
//! positive controls prove the entry points read real files, so an `Err` means a rejection.
//! An input named `*.accepted.*` crashed a dependency (e.g. undefined behaviour in a decoder,
//! which aborts the process under debug assertions) and may now be read: it must not panic or
//! abort.
use std::path::{Path, PathBuf};

use crate::require_data;
use crate::util::{root, tmp};

type Entry = fn(&Path, &[u8]) -> dmnet::Result<()>;

/// What an entry point did with one input.
fn outcome(entry: Entry, bytes: &[u8]) -> Result<(), String> {
    let scratch = tmp();
    match std::panic::catch_unwind(|| entry(scratch.path(), bytes)) {
        Ok(Err(_)) => Ok(()),
        Ok(Ok(())) => Err("accepted".into()),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {msg}"))
        }
    }
}

/// `tests/fuzz-regressions/open.txt`: `<target>/<file>  <owner>: <what>` for the inputs whose
/// fix belongs to another module's owner and has not landed yet.
fn open_list() -> Vec<String> {
    let text =
        std::fs::read_to_string(root().join("tests/fuzz-regressions/open.txt")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// Feeds every file of `tests/fuzz-regressions/<target>/` to `entry`: each must give an `Err`.
/// An input listed in `open.txt` must still fail (so the list cannot go stale: once its owner
/// fixes it, this test asks to move it out of the list). Returns how many files were fed.
fn regressions(target: &str, entry: Entry) -> usize {
    let dir = root().join("tests/fuzz-regressions").join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let open = open_list();
    let mut bad = Vec::new();
    for f in &files {
        let name = format!("{target}/{}", f.file_name().unwrap().to_string_lossy());
        let r = outcome(entry, &std::fs::read(f).unwrap());
        let may_accept = name.contains(".accepted.");
        match (r, open.contains(&name)) {
            (Ok(()), false) | (Err(_), true) => {}
            (Err(why), false) if may_accept && why == "accepted" => {}
            (Err(why), false) => bad.push(format!("{name}: {why}")),
            (Ok(()), true) => bad.push(format!(
                "{name} is fixed now: remove it from tests/fuzz-regressions/open.txt"
            )),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert!(!files.is_empty(), "{} holds no input", dir.display());
    files.len()
}

/// The targets of `fuzz/fuzz_targets/` (every `.rs` but the shared `common.rs`).
fn targets() -> Vec<String> {
    let mut t: Vec<String> = std::fs::read_dir(root().join("fuzz/fuzz_targets"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let stem = p.file_stem()?.to_str()?.to_string();
            (p.extension()? == "rs" && stem != "common").then_some(stem)
        })
        .collect();
    t.sort();
    t
}

/// docs/reliability.md's "Bad-input classes" table: target → classes.
fn classes() -> std::collections::BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(root().join("docs/reliability.md")).unwrap();
    let section = text
        .split("### Bad-input classes")
        .nth(1)
        .expect("docs/reliability.md has a \"Bad-input classes\" section");
    let ticked = |s: &str| -> Vec<String> {
        s.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    section
        .lines()
        .take_while(|l| !l.starts_with("###"))
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cols: Vec<&str> = l.split('|').collect();
            (ticked(cols[1]).remove(0), ticked(cols[2]))
        })
        .collect()
}

/// The entry point of each target.
fn entry(target: &str) -> Entry {
    match target {
        "nifti" => dmnet::fuzzing::nifti,
        "dicom_series" => dmnet::fuzzing::dicom_series,
        "dicom_seg" => dmnet::fuzzing::dicom_seg,
        "shard" => dmnet::fuzzing::shard,
        "sidecar" => dmnet::fuzzing::sidecar,
        "h5" => dmnet::fuzzing::h5,
        other => panic!("fuzz target {other} has no entry here: add it to fuzz_regressions.rs"),
    }
}

#[test]
fn every_fuzz_target_holds_an_input_of_each_bad_input_class_and_each_is_refused() {
    let classes = classes();
    let mut missing = Vec::new();
    for t in targets() {
        let Some(cls) = classes.get(&t) else {
            missing.push(format!(
                "{t}: no row in docs/reliability.md's Bad-input classes"
            ));
            continue;
        };
        let dir = root().join("tests/fuzz-regressions").join(&t);
        let names: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for c in cls {
            if !names.iter().any(|n| n.starts_with(c.as_str())) {
                missing.push(format!("{t}: no input of class {c} in {}", dir.display()));
            }
        }
        regressions(&t, entry(&t));
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    assert!(
        classes.len() >= 6,
        "the table lists every target: {classes:?}"
    );
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn fuzz_regressions_nifti() {
    let data = require_data!("spleen-ct");
    let s = tmp();
    let real = read(&data.join("labelsTr/spleen2.nii.gz"));
    dmnet::fuzzing::nifti(s.path(), &real).unwrap();
    regressions("nifti", dmnet::fuzzing::nifti);
}

#[test]
fn fuzz_regressions_dicom_series_and_seg() {
    let ct = require_data!("dicom/ct-3slice");
    let s = tmp();
    let mut files: Vec<Vec<u8>> = ["01", "02", "03"]
        .iter()
        .map(|n| read(&ct.join(format!("series/{n}.dcm"))))
        .collect();
    dmnet::fuzzing::dicom_series(s.path(), &dmnet::fuzzing::join_files(&files)).unwrap();
    files.push(read(&ct.join("liver_seg.dcm")));
    dmnet::fuzzing::dicom_seg(s.path(), &dmnet::fuzzing::join_files(&files)).unwrap();
    regressions("dicom_series", dmnet::fuzzing::dicom_series);
    regressions("dicom_seg", dmnet::fuzzing::dicom_seg);
}

#[test]
fn fuzz_entry_points_accept_real_shards_sidecars_and_h5() {
    // positive controls: what the entry points refuse above, they read when it is whole
    let acdc = require_data!("acdc");
    let s = tmp();
    let slice = read(&acdc.join("data/slices/patient099_frame01_slice_5.h5"));
    dmnet::fuzzing::h5(s.path(), &slice).unwrap();
    let volume = read(&acdc.join("data/patient028_frame01.h5"));
    dmnet::fuzzing::h5(s.path(), &volume).unwrap();
    let spleen = require_data!("spleen-ct");
    let dir = tmp();
    let shards = dir.path().join("s");
    crate::util::run_ok(
        crate::util::bin("dmnet-prep")
            .args([
                "ingest",
                "--size",
                "32",
                "--salt",
                "fuzz-control-salt-0123",
                "-q",
                "--input",
            ])
            .arg(&spleen)
            .arg("--out")
            .arg(&shards),
    );
    let part = std::fs::read_dir(shards.join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    dmnet::fuzzing::shard(s.path(), &read(&part)).unwrap();
}
