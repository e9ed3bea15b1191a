//! The layer rule of `docs/architecture.md`: the four stages (`prep`, `train`, `export`,
//! `infer`) never import each other; the contract modules (`shard`, `preprocess`, `metrics`,
//! `artifact`, `onnxrt`, `model`) never import a stage; the floor (`volume`, `cli`, `error`,
//! `device`) imports neither. Checked by reading every `crate::<module>` path in `src/`.
use crate::util::root;
use std::path::Path;

const FLOOR: &[&str] = &["atomic", "cli", "error", "volume", "device"];
const CONTRACTS: &[&str] = &[
    "artifact",
    "metrics",
    "model",
    "onnxrt",
    "preprocess",
    "shard",
];
/// `fuzzing` (the fuzz targets' entry points) is a leaf like a stage: readers and contracts only.
const STAGES: &[&str] = &["prep", "train", "export", "infer", "fuzzing"];

/// 0 floor, 1 contracts, 2 stages; `None` for the binaries and `lib.rs`.
fn layer(module: &str) -> Option<usize> {
    [FLOOR, CONTRACTS, STAGES]
        .iter()
        .position(|l| l.contains(&module))
}

/// The top-level module a source file belongs to (`src/train/run.rs` → `train`).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

/// Every `crate::<name>` a source text mentions outside comments.
fn referenced(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let tail = &rest[i + "crate::".len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
            rest = tail;
        }
    }
    out
}

/// The violations of one file: "`from` imports `to`".
fn violations(module: &str, text: &str) -> Vec<String> {
    let Some(own) = layer(module) else {
        return Vec::new();
    };
    referenced(text)
        .into_iter()
        .filter(|to| to != module)
        .filter(|to| match layer(to) {
            Some(l) => l > own || (l == own && own == 2),
            None => false,
        })
        .map(|to| format!("{module} imports {to}"))
        .collect()
}

fn rs_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src/ readable") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn stages_never_import_each_other_and_contracts_never_import_stages() {
    let src = root().join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut bad = Vec::new();
    let mut modules = std::collections::BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src/");
        let Some(module) = module_of(rel) else {
            continue;
        };
        if module != "bin" && module != "lib" {
            modules.insert(module.clone());
        }
        let text = std::fs::read_to_string(f).expect("readable source");
        for v in violations(&module, &text) {
            bad.push(format!("{}: {v}", rel.display()));
        }
    }
    let unknown: Vec<_> = modules.iter().filter(|m| layer(m).is_none()).collect();
    assert!(
        unknown.is_empty(),
        "modules without a layer (add them to tests/integration/layers.rs and docs/architecture.md): {unknown:?}"
    );
    bad.sort();
    bad.dedup();
    assert!(bad.is_empty(), "layer violations:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_catches_sideways_and_upward_imports() {
    assert_eq!(
        violations("infer", "use crate::export::dmnet::PROBABILITIES;"),
        ["infer imports export"]
    );
    assert_eq!(
        violations("shard", "let x = crate::train::run(&spec);"),
        ["shard imports train"]
    );
    assert_eq!(
        violations("volume", "use crate::preprocess::x;"),
        ["volume imports preprocess"]
    );
    assert!(violations("train", "use crate::shard::schema; // crate::infer").is_empty());
    assert!(violations("artifact", "use crate::model::ModelConfig;").is_empty());
}
