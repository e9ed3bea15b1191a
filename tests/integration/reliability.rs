//! Issue 12, the binary-level policy: the patient-key salt (a missing one is loud, `--shareable`
//! demands a private one), I/O errors printed with their cause once, and a panic in one study
//! contained at the study boundary (exit 2, the other studies written). The fuzz regressions
//! (`tests/fuzz-regressions/`, `docs/reliability.md`) are in `fuzz_regressions`.
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::prep::{inspect_ok, la_subset, manifest};
use crate::require_data;
use crate::util::{bin, python, run_ok, stderr, stdout, tmp};

/// `dmnet-prep ingest` of `input` into `out` at 32×32 with no salt from the environment.
fn prep(input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = bin("dmnet-prep");
    c.args(["ingest", "-q", "--threads", "2", "--size", "32", "--input"])
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env_remove("DMNET_SALT")
        .env_remove("DMNET_DEBUG_PANIC_IN");
    c
}

fn output(c: &mut Command) -> Output {
    c.output().unwrap_or_else(|e| panic!("spawning {c:?}: {e}"))
}

const WARNING: &str = "PUBLIC built-in salt";

/// Patient keys as a third party would recompute them: hashlib, not dmnet's code.
fn keys_with_salt(ids: &[String], salt: &str) -> Vec<String> {
    let script = "import hashlib, sys\n\
        salt = sys.argv[1].encode()\n\
        for pid in sys.argv[2:]:\n\
        \x20   print(hashlib.sha256(salt + b'\\0' + pid.encode()).hexdigest()[:16])\n";
    let o = run_ok(python().args(["-c", script, salt]).args(ids));
    stdout(&o).lines().map(String::from).collect()
}

/// (patient id, patient_key) of every study of an MSD manifest (study `imagesTr/<id>.nii.gz`;
/// in a shareable folder the study is a key, resolved through `map`, the source map).
fn study_keys_mapped(m: &Value, map: Option<&Value>) -> Vec<(String, String)> {
    m["studies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let key = s["study"].as_str().unwrap();
            let study = map.map_or(key, |m| m[key].as_str().unwrap());
            let id = study
                .strip_prefix("imagesTr/")
                .and_then(|n| n.strip_suffix(".nii.gz"))
                .unwrap_or_else(|| panic!("{study}"));
            (
                id.to_string(),
                s["patient_key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn study_keys(m: &Value) -> Vec<(String, String)> {
    study_keys_mapped(m, None)
}

#[test]
fn missing_salt_is_a_loud_warning_because_keys_can_be_recomputed() {
    require_data!("la2018");
    let t = tmp();
    let input = la_subset(t.path(), 2);
    let out = t.path().join("out");
    let o = output(&mut prep(&input, &out, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    // once when the salt is chosen, once more under the summary (shown even with -q)
    assert_eq!(err.matches(WARNING).count(), 2, "{err}");
    assert!(err.contains("WARN"), "{err}");
    // the warning is warranted: hashlib and the public salt give exactly the shard keys
    let (ids, keys): (Vec<String>, Vec<String>) = study_keys(&manifest(&out)).into_iter().unzip();
    assert_eq!(keys_with_salt(&ids, "dmnet-default-salt"), keys);
    let insp = run_ok(bin("dmnet-prep").arg("inspect").arg(&out));
    assert!(stderr(&insp).contains(WARNING), "{}", stderr(&insp));

    // a private salt (here from DMNET_SALT): no warning, and the public salt no longer matches
    let out2 = t.path().join("out2");
    let salt = "4f1c9a7e-private-salt-0001";
    let o = output(prep(&input, &out2, &["--shareable"]).env("DMNET_SALT", salt));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains(WARNING), "{}", stderr(&o));
    // shareable: the manifest names studies by key; the map beside the folder resolves them
    let map: Value = serde_json::from_str(
        &std::fs::read_to_string(t.path().join("out2.source-map.json")).unwrap(),
    )
    .unwrap();
    let (ids, keys): (Vec<String>, Vec<String>) = study_keys_mapped(&manifest(&out2), Some(&map))
        .into_iter()
        .unzip();
    assert_eq!(keys_with_salt(&ids, salt), keys);
    assert_ne!(keys_with_salt(&ids, "dmnet-default-salt"), keys);
    let insp = run_ok(bin("dmnet-prep").arg("inspect").arg(&out2));
    assert!(!stderr(&insp).contains(WARNING), "{}", stderr(&insp));

    // raw ids kept on purpose: the salt is unused, nothing to warn about
    let out3 = t.path().join("out3");
    let o = output(&mut prep(&input, &out3, &["--keep-patient-ids"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains(WARNING), "{}", stderr(&o));
    let kept = study_keys(&manifest(&out3));
    assert!(kept.iter().all(|(s, k)| s == k), "{kept:?}");
}

/// A synthetic KiTS19-layout cohort (`dmnet-prep synth`): the error paths that do not depend on
/// the data run without `../shared`.
fn synth_cohort(dir: &Path, patients: usize) -> std::path::PathBuf {
    let cfg = dmnet::prep::synth::SynthConfig {
        patients,
        dicom_patients: 0,
        seed: 0,
        size: 32,
    };
    dmnet::prep::synth::synthesize(&dir.join("synth"), &cfg)
        .unwrap()
        .kits19
}

#[test]
fn shareable_output_requires_a_private_salt() {
    let t = tmp();
    let input = synth_cohort(t.path(), 1);
    let out = t.path().join("out");
    for (extra, what) in [
        (vec!["--shareable"], "--shareable needs a private salt"),
        (vec!["--shareable", "--salt", "tiny"], "got 4 characters"),
        (
            vec!["--shareable", "--salt", "dmnet-default-salt"],
            "not the public built-in one",
        ),
        (
            vec![
                "--shareable",
                "--salt",
                "a-long-enough-private-salt",
                "--keep-patient-ids",
            ],
            "refuses --keep-patient-ids",
        ),
    ] {
        let o = output(&mut prep(&input, &out, &extra));
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.starts_with("error: ") && err.contains(what),
            "{extra:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!out.exists(), "{extra:?}: refused before writing anything");
    }
}

#[test]
fn io_errors_print_their_cause_once() {
    let t = tmp();
    let input = synth_cohort(t.path(), 1);
    // --out below a regular file: create_dir_all fails with ENOTDIR (as root too, unlike EACCES)
    let file = t.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("out");
    let o = output(&mut prep(&input, &out, &["--salt", "s"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let cause = std::io::Error::from_raw_os_error(20).to_string(); // "Not a directory (os error 20)"
    assert_eq!(err.matches(&cause).count(), 1, "{err}");
    assert_eq!(err.trim_end(), format!("error: {}: {cause}", out.display()));
}

#[test]
fn a_panic_in_one_study_fails_only_that_study() {
    require_data!("la2018");
    let t = tmp();
    let input = la_subset(t.path(), 3);
    let out = t.path().join("out");
    let mut names: Vec<String> = std::fs::read_dir(input.join("imagesTr"))
        .unwrap()
        .map(|e| format!("imagesTr/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    names.sort();
    let victim = &names[1]; // a study is named by its path in the input folder
    let o = output(prep(&input, &out, &["--salt", "s"]).env("DMNET_DEBUG_PANIC_IN", victim));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("ERROR"))
        .unwrap_or_else(|| panic!("no error line in {err}"));
    assert!(
        line.contains(&format!(
            "{victim}: case {victim}: internal error (panic: injected"
        )),
        "{line}"
    );
    let m = manifest(&out);
    assert_eq!(m["totals"]["ok"], 2, "{m}");
    assert_eq!(m["totals"]["failed"], 1, "{m}");
    let failed: Vec<&Value> = m["studies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .collect();
    assert_eq!(failed[0]["study"], victim.as_str());
    assert!(failed[0]["reason"].as_str().unwrap().contains("panic"));
    inspect_ok(&out);
    // the rerun (no panic now) resumes: only the failed study is processed, all three are ok
    let o = output(&mut prep(&input, &out, &["--salt", "s"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = manifest(&out);
    assert_eq!(m["totals"]["ok"], 3, "{m}");
    inspect_ok(&out);
}

/// A truncated study of the synthetic cohort: one error line naming it, exit 2, the other
/// studies written and the folder valid; no `../shared` needed.
#[test]
fn a_truncated_study_of_the_synthetic_cohort_fails_alone() {
    let t = tmp();
    let input = synth_cohort(t.path(), 3);
    let victim = input.join("case_00001/imaging.nii.gz");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let out = t.path().join("out");
    let o = output(&mut prep(&input, &out, &["--salt", "s"]));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("case_00001"), "{err}");
    let m = manifest(&out);
    let totals = (m["totals"]["ok"].as_u64(), m["totals"]["failed"].as_u64());
    assert_eq!(totals, (Some(2), Some(1)), "{m}");
    inspect_ok(&out);
}
