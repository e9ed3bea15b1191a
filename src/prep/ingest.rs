//! `dmnet-prep ingest`: discover studies → split patients → rayon over this worker's studies →
//! a bounded crossbeam channel → one writer thread (so peak memory is a few volumes plus one
//! row group, whatever the number of studies) → `part-*.parquet`, `splits.json`,
//! `prep-config.json`, `manifest.json` (or `manifest-wI.json` per worker; `merge` joins them).
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::config::{IngestOptions, Layout, PrepConfig};
use super::layout::{discover, Discovery, LabelSource, Study};
use super::split::{patient_key, salt_fingerprint, Splits};
use super::study::{process_study, resolve_slice_axis, StudyPlan};
use super::writer::{journal_path, read_journal, ShardWriter, StudyEntry};
use crate::{Error, Result};

/// `manifest.json`: per-study status, counts per split and role, seed, config, tool version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// "dmnet-prep".
    pub tool: String,
    /// dmnet version.
    pub version: String,
    /// Shard schema version.
    pub schema_version: String,
    /// The layout used (after detection).
    pub layout: Layout,
    /// Seed.
    pub seed: u64,
    /// Fingerprint of the patient-key salt (not the salt).
    pub salt_fingerprint: String,
    /// `[worker index, number of workers]` this manifest covers (`[0, 1]` after merge).
    pub worker: [usize; 2],
    /// The complete prep config.
    pub config: PrepConfig,
    /// Rows per split and role.
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// Number of studies ok / failed, rows.
    pub totals: Totals,
    /// Every study of this worker's share.
    pub studies: Vec<StudyEntry>,
    /// Dataset-level warnings from listing the input (e.g. a case without its label), each
    /// naming the file(s).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Totals of a manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    /// Studies listed.
    pub studies: usize,
    /// Studies ok.
    pub ok: usize,
    /// Studies failed.
    pub failed: usize,
    /// Rows written.
    pub slices: u64,
}

impl Manifest {
    /// Recomputes `counts` and `totals` from `studies`.
    pub fn recount(&mut self) {
        self.studies.sort_by(|a, b| a.study.cmp(&b.study));
        let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut t = Totals {
            studies: self.studies.len(),
            ..Default::default()
        };
        for s in &self.studies {
            if s.status == "ok" {
                t.ok += 1;
                t.slices += s.slices;
                for (role, n) in &s.roles {
                    *counts
                        .entry(s.split.clone())
                        .or_default()
                        .entry(role.clone())
                        .or_default() += n;
                }
            } else {
                t.failed += 1;
            }
        }
        self.counts = counts;
        self.totals = t;
    }

    /// Reads a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let t = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&t).map_err(|e| Error::invalid(path, format!("not a manifest: {e}")))
    }
}

/// Writes `bytes` to `path` via a temporary name + rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(path, e))
}

/// The manifest file name of a worker (`manifest.json` for a single worker).
pub fn manifest_name(worker: (usize, usize)) -> String {
    if worker.1 <= 1 {
        "manifest.json".into()
    } else {
        format!("manifest-w{}.json", worker.0)
    }
}

/// Runs an ingest. Returns the manifest written; failed studies are listed in it (the binary
/// exits 2 when there are any).
pub fn ingest(cfg: &PrepConfig, opts: &IngestOptions) -> Result<Manifest> {
    let start = Instant::now();
    let out = &opts.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let Discovery {
        layout,
        mut studies,
        warnings,
    } = discover(&opts.input, cfg.layout, &cfg.preprocess.channels)?;
    if let Some(n) = opts.max_studies {
        studies.truncate(n);
    }
    let mut cfg = cfg.clone();
    cfg.layout = layout;
    cfg.preprocess.slice_axis = resolve_slice_axis(&studies, cfg.preprocess.slice_axis);
    check_config(out, &cfg)?;
    check_salt(out, &opts.salt)?;
    let key = |s: &Study| patient_key(&s.patient, &opts.salt, cfg.keep_patient_ids);
    let splits = plan_splits(&studies, &cfg, opts, &key)?;
    let (w, nw) = opts.worker;
    if nw == 0 || w >= nw {
        return Err(Error::Config {
            path: "<cli>".into(),
            msg: format!("--worker-index {w} must be < --num-workers {nw}"),
        });
    }
    let share: Vec<&Study> = studies
        .iter()
        .enumerate()
        .filter(|(i, _)| i % nw == w)
        .map(|(_, s)| s)
        .collect();
    // resume: studies whose journal entry names an existing part are done
    let journal = read_journal(&journal_path(out, w))?;
    let mut done: BTreeMap<String, StudyEntry> = BTreeMap::new();
    let mut max_seq = None;
    for e in journal {
        if let Some(p) = &e.part {
            let seq = part_seq(p).map(|n| n - w * 10000);
            max_seq = max_seq.max(seq);
            if e.status == "ok" && out.join(p).exists() {
                done.insert(e.study.clone(), e);
            }
        }
    }
    clean_stale(out, w, &done)?;
    let todo: Vec<&Study> = share
        .iter()
        .copied()
        .filter(|s| !done.contains_key(&s.name))
        .collect();
    if !done.is_empty() {
        tracing::info!(
            "resuming: {} studies already in complete parts, {} to do",
            done.len(),
            todo.len()
        );
    }
    let first_seq = max_seq.map_or(0, |m| m + 1);
    let mut writer = ShardWriter::new(out, w, first_seq, &cfg)?;
    let new_entries = run_pipeline(&todo, &cfg, opts, &splits, &key, &mut writer)?;
    writer.finish_part()?;
    let mut manifest = Manifest {
        tool: "dmnet-prep".into(),
        version: crate::VERSION.into(),
        schema_version: crate::shard::schema::SCHEMA_VERSION.into(),
        layout,
        seed: cfg.seed,
        salt_fingerprint: salt_fingerprint(&opts.salt),
        worker: [w, nw],
        config: cfg.clone(),
        counts: BTreeMap::new(),
        totals: Totals::default(),
        studies: done.into_values().chain(new_entries).collect(),
        warnings,
    };
    manifest.recount();
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    write_atomic(&out.join(manifest_name(opts.worker)), json.as_bytes())?;
    let secs = start.elapsed().as_secs_f64();
    tracing::info!(
        "ingest: {} studies ok, {} failed, {} slices in {:.1}s ({:.1} slices/s); counts {:?}",
        manifest.totals.ok,
        manifest.totals.failed,
        manifest.totals.slices,
        secs,
        manifest.totals.slices as f64 / secs.max(1e-9),
        manifest.counts
    );
    Ok(manifest)
}

/// Computes (or loads with `--splits`) the patient split and writes `splits.json`.
fn plan_splits(
    studies: &[Study],
    cfg: &PrepConfig,
    opts: &IngestOptions,
    key: &dyn Fn(&Study) -> String,
) -> Result<Splits> {
    let splits = match &opts.splits {
        Some(p) => Splits::load(p)?,
        None => {
            let usable = |s: &&Study| s.error.is_none();
            let labeled: Vec<String> = studies
                .iter()
                .filter(usable)
                .filter(|s| !matches!(s.label, LabelSource::None))
                .map(key)
                .collect();
            let unlabeled: Vec<String> = studies
                .iter()
                .filter(usable)
                .filter(|s| matches!(s.label, LabelSource::None))
                .map(key)
                .collect();
            Splits::compute(&labeled, &unlabeled, cfg)
        }
    };
    let json = serde_json::to_string_pretty(&splits).expect("splits serialise");
    write_atomic(&opts.out.join("splits.json"), json.as_bytes())?;
    Ok(splits)
}

/// Refuses to add to a folder made with another config; writes `prep-config.json`.
fn check_config(out: &Path, cfg: &PrepConfig) -> Result<()> {
    let p = out.join("prep-config.json");
    if let Ok(text) = std::fs::read_to_string(&p) {
        if let Ok(old) = serde_json::from_str::<PrepConfig>(&text) {
            if &old != cfg {
                return Err(Error::Config {
                    path: p,
                    msg: "this output folder holds shards made with a different prep config; use a new --out".into(),
                });
            }
        }
    }
    let json = serde_json::to_string_pretty(cfg).expect("config serialises");
    write_atomic(&p, json.as_bytes())
}

/// Refuses to resume or add workers with another salt (the keys would not match).
fn check_salt(out: &Path, salt: &str) -> Result<()> {
    let p = out.join(".salt-fingerprint");
    let fp = salt_fingerprint(salt);
    match std::fs::read_to_string(&p) {
        Ok(old) if old.trim() != fp => Err(Error::Config {
            path: p,
            msg: "this output folder was written with another --salt / DMNET_SALT; patient keys would not match".into(),
        }),
        Ok(_) => Ok(()),
        Err(_) => write_atomic(&p, fp.as_bytes()),
    }
}

fn part_seq(name: &str) -> Option<usize> {
    name.strip_prefix("part-")?
        .strip_suffix(".parquet")?
        .parse()
        .ok()
}

/// Removes this worker's temporary part files and parts no journal entry references.
fn clean_stale(out: &Path, w: usize, done: &BTreeMap<String, StudyEntry>) -> Result<()> {
    let referenced: std::collections::BTreeSet<&str> =
        done.values().filter_map(|e| e.part.as_deref()).collect();
    for e in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let p = e.map_err(|e| Error::io(out, e))?.path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let mine = |n: &str| part_seq(n).is_some_and(|s| s / 10000 == w);
        if let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
            if mine(inner) {
                tracing::info!("removing incomplete {}", p.display());
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
        } else if mine(&name) && !referenced.contains(name.as_str()) {
            tracing::warn!("removing {}: no finished study references it", p.display());
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

/// Rayon over studies → bounded channel → this thread writes. Returns the new entries.
fn run_pipeline(
    todo: &[&Study],
    cfg: &PrepConfig,
    opts: &IngestOptions,
    splits: &Splits,
    key: &(dyn Fn(&Study) -> String + Sync),
    writer: &mut ShardWriter,
) -> Result<Vec<StudyEntry>> {
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Config {
            path: "<cli>".into(),
            msg: format!("thread pool: {e}"),
        })?;
    // at most `threads` studies being processed + 2 waiting + 1 being written
    let (tx, rx) = crossbeam_channel::bounded(2);
    let bar = crate::cli::progress(todo.len() as u64, "ingest");
    let start = Instant::now();
    let mut entries = Vec::new();
    let mut slices = 0u64;
    let mut write_err = None;
    std::thread::scope(|scope| {
        scope.spawn(move || {
            pool.install(|| {
                todo.par_iter().for_each_with(tx, |tx, study| {
                    // a panic (a bug) fails this study only; the others go on (issue 12)
                    let what = format!("case {}", study.name);
                    let r = crate::error::catch_panic(&study.source_path, &what, || {
                        crate::error::debug_injected_panic(&study.name);
                        study
                            .error
                            .as_ref()
                            .map_or(Ok(()), |e| {
                                Err(Error::invalid(&study.source_path, e.clone()))
                            })
                            .and_then(|_| plan(study, splits, cfg, key))
                            .and_then(|p| process_study(study, &p, cfg).map(|recs| (p, recs)))
                    });
                    let _ = tx.send((*study, r));
                });
            })
        });
        for (study, result) in rx {
            let mut entry = StudyEntry {
                study: study.name.clone(),
                source_path: study.source_path.clone(),
                patient_key: key(study),
                split: splits.split_of(&key(study)).unwrap_or("").to_string(),
                status: "ok".into(),
                reason: None,
                slices: 0,
                roles: BTreeMap::new(),
                part: None,
            };
            let r = match result {
                Ok((_, recs)) => {
                    entry.slices = recs.len() as u64;
                    for r in &recs {
                        *entry.roles.entry(r.role.clone()).or_default() += 1;
                    }
                    slices += recs.len() as u64;
                    writer.add(entry.clone(), recs).map(|part| {
                        entry.part = Some(part);
                        entry
                    })
                }
                Err(e) => {
                    tracing::error!("{e}");
                    entry.status = "failed".into();
                    entry.reason = Some(e.to_string());
                    writer.failed(entry.clone()).map(|_| entry)
                }
            };
            match r {
                Ok(e) => entries.push(e),
                Err(e) => {
                    write_err.get_or_insert(e);
                }
            }
            bar.inc(1);
            let rate = slices as f64 / start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{slices} slices, {rate:.0} slices/s"));
        }
    });
    bar.finish_and_clear();
    match write_err {
        Some(e) => Err(e),
        None => Ok(entries),
    }
}

fn plan(
    study: &Study,
    splits: &Splits,
    cfg: &PrepConfig,
    key: &(dyn Fn(&Study) -> String + Sync),
) -> Result<StudyPlan> {
    let k = key(study);
    let split = splits.split_of(&k).ok_or_else(|| {
        Error::invalid(
            &study.source_path,
            format!(
                "case {}: patient not in the splits (a --splits file from another input or salt?)",
                study.name
            ),
        )
    })?;
    let use_labels = match cfg.protocol {
        super::config::Protocol::AllSlices => split != "train" || splits.in_labeled_budget(&k),
        super::config::Protocol::Paper => true,
    };
    Ok(StudyPlan {
        key: k,
        split,
        use_labels,
    })
}

/// `dmnet-prep merge`: joins the workers' `manifest-wI.json` into one `manifest.json`.
///
/// - `dirs == [out]`: the workers wrote into one shared folder; only the manifest is written.
/// - otherwise each worker wrote its own folder (Slurm array / Indexed Job, `docs/scaling.md`):
///   their configs, salts and `splits.json` must agree; the part files are hard-linked (or
///   copied) into `out` as `part-00000…` in worker order, and `manifest.json`, `splits.json`
///   and `prep-config.json` are written there.
///
/// All workers `0..N` of one run must be present.
pub fn merge(dirs: &[std::path::PathBuf], out: &Path) -> Result<Manifest> {
    let mut parts: Vec<(std::path::PathBuf, Manifest)> = Vec::new();
    for d in dirs {
        for e in std::fs::read_dir(d).map_err(|e| Error::io(d, e))? {
            let p = e.map_err(|e| Error::io(d, e))?.path();
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if n.starts_with("manifest-w") && n.ends_with(".json") {
                parts.push((d.clone(), Manifest::load(&p)?));
            }
        }
    }
    parts.sort_by_key(|(_, m)| m.worker[0]);
    let Some((first_dir, first)) = parts.first().cloned() else {
        return Err(Error::invalid(out, "no manifest-w*.json to merge"));
    };
    let nw = first.worker[1];
    let have: Vec<usize> = parts.iter().map(|(_, m)| m.worker[0]).collect();
    if have != (0..nw).collect::<Vec<_>>() {
        return Err(Error::invalid(
            out,
            format!("merge needs the manifests of workers 0..{nw}, found {have:?}"),
        ));
    }
    let splits = std::fs::read_to_string(first_dir.join("splits.json"))
        .map_err(|e| Error::io(first_dir.join("splits.json"), e))?;
    for (d, m) in &parts {
        let s = std::fs::read_to_string(d.join("splits.json"))
            .map_err(|e| Error::io(d.join("splits.json"), e))?;
        let same_splits =
            serde_json::from_str::<Splits>(&s).ok() == serde_json::from_str::<Splits>(&splits).ok();
        if m.config != first.config || m.salt_fingerprint != first.salt_fingerprint || !same_splits
        {
            return Err(Error::invalid(
                d,
                format!("worker {} used another config, salt or split", m.worker[0]),
            ));
        }
    }
    let same_folder = dirs.len() == 1 && dirs[0] == out;
    let mut merged = first.clone();
    merged.worker = [0, 1];
    merged.studies.clear();
    if !same_folder {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    let mut renamed: BTreeMap<(usize, String), String> = BTreeMap::new();
    for (w, (d, m)) in parts.into_iter().enumerate() {
        for mut s in m.studies {
            if let (false, Some(p)) = (same_folder, s.part.clone()) {
                let next = renamed.len();
                let new = renamed
                    .entry((w, p.clone()))
                    .or_insert_with(|| format!("part-{next:05}.parquet"))
                    .clone();
                let dest = out.join(&new);
                if !dest.exists() {
                    link_or_copy(&d.join(&p), &dest)?;
                }
                s.part = Some(new);
            }
            merged.studies.push(s);
        }
    }
    merged.recount();
    if !same_folder {
        write_atomic(&out.join("splits.json"), splits.as_bytes())?;
        let cfg = serde_json::to_string_pretty(&merged.config).expect("config serialises");
        write_atomic(&out.join("prep-config.json"), cfg.as_bytes())?;
    }
    let json = serde_json::to_string_pretty(&merged).expect("manifest serialises");
    write_atomic(&out.join("manifest.json"), json.as_bytes())?;
    Ok(merged)
}

/// Hard-links `src` to `dest` (same file system), else copies it via a temporary name.
fn link_or_copy(src: &Path, dest: &Path) -> Result<()> {
    if std::fs::hard_link(src, dest).is_ok() {
        return Ok(());
    }
    let tmp = dest.with_file_name(format!(
        ".{}.tmp",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("part")
    ));
    std::fs::copy(src, &tmp)
        .and_then(|_| std::fs::rename(&tmp, dest))
        .map(|_| ())
        .map_err(|e| Error::io(dest, e))
}
