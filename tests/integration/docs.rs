//! Issue 29, "docs true again": every message the README's troubleshooting table quotes exists
//! in dmnet's source as quoted (`…` stands for a part that varies), and every relative link of
//! the README and `docs/` points at a file that exists.
use std::path::{Path, PathBuf};

use crate::util::root;

/// Messages that come from outside dmnet (the dynamic linker), quoted so users recognise them.
const FOREIGN: [&str; 1] = ["error while loading shared libraries"];

fn sources(dir: &Path, out: &mut String) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

/// The quoted message of each troubleshooting row (the first column's first code span).
fn quoted_messages(readme: &str) -> Vec<String> {
    let section = readme
        .split("## Troubleshooting")
        .nth(1)
        .expect("README has a Troubleshooting section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_string))
        .collect()
}

#[test]
fn the_troubleshooting_table_quotes_real_messages() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut src = String::new();
    sources(&root().join("src"), &mut src);
    src.push_str(&std::fs::read_to_string(root().join("build.rs")).unwrap());
    let messages = quoted_messages(&readme);
    assert!(messages.len() >= 10, "{messages:?}");
    let mut wrong = Vec::new();
    for m in &messages {
        if FOREIGN.iter().any(|f| m.contains(f)) {
            continue;
        }
        for frag in m.split('…').map(str::trim).filter(|f| !f.is_empty()) {
            if !src.contains(frag) {
                wrong.push(format!("{m:?}: {frag:?} is not in src/"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_check_catches_a_message_that_is_not_real() {
    // the fault injection of the test above: a made-up message must be reported
    let mut src = String::new();
    sources(&root().join("src"), &mut src);
    let readme = "## Troubleshooting\n| `input size … is not a multiple of 17` | x |\n## Layout\n";
    let m = &quoted_messages(readme)[0];
    assert!(m
        .split('…')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .any(|f| !src.contains(f)));
}

/// Relative Markdown link targets (`](path)` or `](path#anchor)`) of a file.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in text.split("](").skip(1) {
        let Some(end) = part.find(')') else { continue };
        let target = part[..end].split('#').next().unwrap_or("").trim();
        if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        out.push(target.to_string());
    }
    out
}

#[test]
fn every_relative_link_of_the_readme_and_docs_exists() {
    let mut files: Vec<PathBuf> = vec![root().join("README.md"), root().join("CHANGELOG.md")];
    for dir in ["docs", "schemas"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            }
        }
    }
    let mut broken = Vec::new();
    let mut n = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for l in links(&text) {
            n += 1;
            let target = f.parent().unwrap().join(&l);
            if !target.exists() {
                broken.push(format!("{}: {l}", f.display()));
            }
        }
    }
    assert!(n > 20, "links found: {n}");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
