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
    files.len()
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
fn fuzz_regressions_shard_and_sidecar() {
    regressions("shard", dmnet::fuzzing::shard);
    regressions("sidecar", dmnet::fuzzing::sidecar);
}
