//! The four binaries: `--help` works for each; `dmnet-train` finds libtorch with no
//! environment; and `dmnet-prep`/`dmnet-infer` built without the `torch` feature carry no
//! dynamic dependency on libtorch, so they start on hosts that have none.
use crate::util::{bin, bin_path, run_ok, stdout};
use std::process::Command;

const ALL: [&str; 4] = ["dmnet-prep", "dmnet-train", "dmnet-export", "dmnet-infer"];

#[test]
fn every_binary_prints_help_with_no_environment() {
    for name in ALL {
        let out = run_ok(bin(name).arg("--help").env_clear());
        let text = stdout(&out);
        assert!(text.contains("Usage:"), "{name} --help:\n{text}");
        assert!(
            text.contains("--verbose") && text.contains("--quiet"),
            "{name} lacks -v/-q:\n{text}"
        );
    }
}

fn needed_libraries(exe: &std::path::Path) -> Vec<String> {
    let out = run_ok(Command::new("readelf").arg("-d").arg(exe));
    stdout(&out)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| {
            l.split('[')
                .nth(1)
                .map(|s| s.trim_end_matches(']').to_string())
        })
        .collect()
}

/// The folder of `dmnet-prep` and `dmnet-infer` built without the `torch` feature (as `make
/// build-infer` does for inference hosts). `make test` builds them in `target/no-torch` before
/// the tests and passes the folder in `DMNET_NO_TORCH_BIN` (a second dependency build inside
/// `cargo test` would double its time). Missing: a failure under `CI=1`, a loud skip otherwise.
fn no_torch_bin_dir() -> Option<std::path::PathBuf> {
    match std::env::var_os("DMNET_NO_TORCH_BIN") {
        Some(d) => Some(d.into()),
        None => {
            assert!(
                !crate::util::in_ci(),
                "CI=1 but DMNET_NO_TORCH_BIN is unset: run the tests through `make test`"
            );
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIP binaries: DMNET_NO_TORCH_BIN unset (`make test` builds the no-torch binaries)"
            );
            None
        }
    }
}

#[test]
fn infer_and_prep_built_without_torch_run_with_no_libtorch() {
    let Some(dir) = no_torch_bin_dir() else {
        return;
    };
    for name in ["dmnet-prep", "dmnet-infer"] {
        let exe = dir.join(name);
        let needed = needed_libraries(&exe);
        assert!(
            !needed.is_empty(),
            "{name}: readelf found no NEEDED entries"
        );
        let torch: Vec<_> = needed
            .iter()
            .filter(|l| l.contains("torch") || l.contains("c10"))
            .collect();
        assert!(
            torch.is_empty(),
            "{name} needs libtorch at run time: {torch:?}"
        );
        // Copied away from the build tree and run with no environment at all.
        let tmp = crate::util::tmp();
        let copy = tmp.path().join(name);
        std::fs::copy(&exe, &copy).unwrap();
        let out = run_ok(Command::new(&copy).arg("--help").env_clear());
        assert!(stdout(&out).contains("Usage:"));
    }
    // And the libtorch-free dmnet-infer still loads ONNX Runtime.
    let out = run_ok(
        Command::new(dir.join("dmnet-infer"))
            .arg("runtime")
            .env_clear(),
    );
    assert!(stdout(&out).contains("\"version\""), "{}", stdout(&out));
}

#[test]
fn train_links_libtorch_cpu_and_finds_it_without_environment() {
    let needed = needed_libraries(&bin_path("dmnet-train"));
    assert!(
        needed.iter().any(|l| l == "libtorch_cpu.so"),
        "dmnet-train NEEDED: {needed:?}"
    );
    // The rpath from build.rs lets it start under `env -i` and pick a device.
    let out = run_ok(
        bin("dmnet-train")
            .args(["check-device", "--device", "cpu"])
            .env_clear(),
    );
    assert_eq!(stdout(&out).trim(), "Cpu");
}

#[test]
fn cuda_demanded_without_gpu_is_an_error_not_a_cpu_run() {
    let probe = bin("dmnet-train")
        .args(["check-device", "--device", "auto"])
        .env_clear()
        .output()
        .unwrap();
    if stdout(&probe).contains("Cuda") {
        eprintln!("SKIP: this machine has a usable GPU");
        return;
    }
    let out = bin("dmnet-train")
        .args(["check-device", "--device", "cuda"])
        .env_clear()
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "cuda demanded on a CPU-only host must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--device cuda was requested") && err.contains("setup.sh --gpu"),
        "{err}"
    );
}
