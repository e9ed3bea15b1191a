//! `dmnet-prep ingest`: discover studies → split patients → rayon over this worker's studies,
//! each prepared and encoded into compressed Parquet row groups by its worker → a bounded
//! crossbeam channel → one writer thread that only appends bytes (so peak memory is a few
//! volumes plus their compressed rows, whatever the number of studies) → `data/part-*.parquet`,
//! `_splits.json`, `_prep-config.json`, `_manifest.json` (or `_manifest-wI.json` per worker;
//! `merge` joins them). The layout is `schemas/shard-v3.md`'s; the manifest lists every part
//! with its SHA-256 and the value checks the writer made.
//!
//! `--out` must be empty, new, or a folder this ingest (same config and salt) started: a file
//! it did not write (a foreign part, any other file) is refused, never deleted or mixed in.
//! A folder's patient split never changes: a rerun (a resume, or more studies added to the
//! input) keeps every patient of `_splits.json` where it is and assigns only new patients.
//!
//! `shareable` folders hold no input file or folder name and no salt: study names and
//! `source_path` are salted keys (the key → path map is written beside the folder, see
//! [`super::IngestOptions::source_map`]), failure reasons and warnings are redacted the same
//! way, and the command line recorded for the "finish it with …" hint never holds the salt
//! (no folder does).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::config::{IngestOptions, Layout, PrepConfig};
use super::layout::{discover, Discovery, LabelSource, ListSplit, Study};
use super::split::{patient_key, salt_fingerprint, Splits};
use super::study::{process_study, resolve_normalization, resolve_slice_axis, StudyPlan};
use super::writer::{
    journal_path, part_options, read_journal, read_journal_parts, ShardWriter, StudyEntry,
};
use crate::shard::folder::{self, StudyStatus};
use crate::shard::schema::{SliceRecord, SliceShape};
use crate::shard::writer::{EncodedRowGroup, PartInfo, RowGroupEncoder};
use crate::shard::{Role, Split};
use crate::{Error, Result};

/// `_manifest.json`: per-study status, counts per split and role, seed, config, tool version.
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
    pub counts: BTreeMap<Split, BTreeMap<Role, u64>>,
    /// Number of studies ok / failed, rows.
    pub totals: Totals,
    /// Every study of this worker's share.
    pub studies: Vec<StudyEntry>,
    /// Every part file: rows, size, SHA-256 and the writer's value checks (schema v3).
    #[serde(default)]
    pub parts: Vec<PartInfo>,
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
    pub(crate) fn recount(&mut self) {
        self.studies.sort_by(|a, b| a.study.cmp(&b.study));
        let mut counts: BTreeMap<Split, BTreeMap<Role, u64>> = BTreeMap::new();
        let mut t = Totals {
            studies: self.studies.len(),
            ..Default::default()
        };
        for s in &self.studies {
            if s.status == StudyStatus::Ok {
                t.ok += 1;
                t.slices += s.slices;
                for (&role, n) in &s.roles {
                    *counts
                        .entry(s.split.unwrap_or_default())
                        .or_default()
                        .entry(role)
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

/// The manifest file name of a worker (`_manifest.json` for a single worker).
pub(crate) fn manifest_name(worker: (usize, usize)) -> String {
    if worker.1 <= 1 {
        folder::MANIFEST.into()
    } else {
        folder::worker_manifest(worker.0)
    }
}

/// Runs an ingest. Returns the manifest written; failed studies are listed in it (the binary
/// exits 2 when there are any).
pub fn ingest(cfg: &PrepConfig, opts: &IngestOptions) -> Result<Manifest> {
    let start = Instant::now();
    let out = &opts.out;
    check_out_folder(out)?;
    let Discovery {
        layout,
        mut studies,
        warnings,
        lists,
    } = discover(&opts.input, cfg.layout, &cfg.preprocess.channels)?;
    if let Some(n) = opts.max_studies {
        studies.truncate(n);
    }
    let mut cfg = cfg.clone();
    cfg.layout = layout;
    let naming = Naming::new(&cfg, opts)?;
    let warnings: Vec<String> = {
        let all: Vec<&Study> = studies.iter().collect();
        warnings.iter().map(|m| naming.redact(m, &all)).collect()
    };
    cfg.preprocess.slice_axis = resolve_slice_axis(&studies, cfg.preprocess.slice_axis);
    cfg.preprocess.normalization = resolve_normalization(&studies, cfg.preprocess.normalization);
    check_config(out, &cfg)?;
    check_salt(out, &opts.salt)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_config(out, &cfg)?;
    write_salt_fingerprint(out, &opts.salt)?;
    let key = |s: &Study| patient_key(&s.patient, &opts.salt, cfg.keep_patient_ids);
    let splits = plan_splits(&studies, &cfg, opts, &key, lists.as_ref())?;
    let (w, nw) = opts.worker;
    let share = worker_share(&studies, opts.worker)?;
    crate::atomic::write_bytes(
        &out.join(folder::command_name(w)),
        command_line(opts, cfg.shareable).as_bytes(),
    )?;
    naming.write_source_map(&share)?;
    let (done, max_seq) = resume_state(out, w)?;
    clean_temp_parts(out, w)?;
    let todo: Vec<&Study> = share
        .into_iter()
        .filter(|s| !done.contains_key(&naming.study(s)))
        .collect();
    if !done.is_empty() {
        tracing::info!(
            "resuming: {} studies already in complete parts, {} to do",
            done.len(),
            todo.len()
        );
    }
    let first_seq = max_seq.map_or(0, |m| m + 1);
    let shape = existing_shape(out, &done)?;
    let mut writer = ShardWriter::new(out, w, first_seq, &cfg, shape)?;
    let ctx = StudyCtx {
        cfg: &cfg,
        splits: &splits,
        key: &key,
        naming: &naming,
    };
    let new_entries = run_pipeline(&todo, &ctx, opts, &mut writer)?;
    writer.finish_part()?;
    let studies: Vec<StudyEntry> = done.into_values().chain(new_entries).collect();
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
        parts: parts_of(out, w, &studies),
        studies,
        warnings,
    };
    manifest.recount();
    warn_unlabeled_splits(&manifest);
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    crate::atomic::write_bytes(&out.join(manifest_name(opts.worker)), json.as_bytes())?;
    let secs = start.elapsed().as_secs_f64();
    tracing::info!(
        "ingest: {} studies ok, {} failed, {} slices in {:.1}s ({:.1} slices/s); {}",
        manifest.totals.ok,
        manifest.totals.failed,
        manifest.totals.slices,
        secs,
        manifest.totals.slices as f64 / secs.max(1e-9),
        counts_line(&manifest.counts)
    );
    Ok(manifest)
}

/// Rows per split and role as a readable line (`train: 120 labeled, 480 unlabeled; val: …`).
pub(crate) fn counts_line(counts: &BTreeMap<Split, BTreeMap<Role, u64>>) -> String {
    counts
        .iter()
        .map(|(split, roles)| {
            let r: Vec<String> = roles
                .iter()
                .map(|(role, n)| format!("{n} {role}"))
                .collect();
            format!("{split}: {}", r.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Warns when the training split has rows but no labeled one (a labeled budget that rounds to
/// zero patients, e.g. 20 % of 3 training patients).
fn warn_unlabeled_splits(m: &Manifest) {
    let train = m.counts.get(&Split::Train);
    let labeled = train
        .and_then(|r| r.get(&Role::Labeled))
        .copied()
        .unwrap_or(0);
    let unlabeled = train
        .and_then(|r| r.get(&Role::Unlabeled))
        .copied()
        .unwrap_or(0);
    if labeled == 0 && unlabeled > 0 {
        tracing::warn!(
            "the training split has 0 labeled patients ({unlabeled} unlabeled slices): the labeled budget \
             (labeled_patients / labeled_patient_fraction) rounds to zero for this many patients; \
             training will refuse these shards"
        );
    }
}

/// The manifest entries of the parts that hold this worker's finished studies.
fn parts_of(out: &Path, w: usize, studies: &[StudyEntry]) -> Vec<PartInfo> {
    let used: std::collections::BTreeSet<&str> =
        studies.iter().filter_map(|s| s.part.as_deref()).collect();
    let mut by_name: BTreeMap<String, PartInfo> = BTreeMap::new();
    for p in read_journal_parts(&journal_path(out, w)) {
        if used.contains(p.name.as_str()) {
            by_name.insert(p.name.clone(), p);
        }
    }
    by_name.into_values().collect()
}

/// How studies are named inside the output folder (see the module docs): their input-relative
/// path, or under `shareable` a salted key of it.
pub(crate) struct Naming {
    shareable: bool,
    salt: String,
    input: PathBuf,
    map_path: PathBuf,
}

impl Naming {
    fn new(cfg: &PrepConfig, opts: &IngestOptions) -> Result<Naming> {
        let default_map = {
            let name = opts
                .out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "shards".into());
            opts.out.with_file_name(format!("{name}.source-map.json"))
        };
        let map_path = opts.source_map.clone().unwrap_or(default_map);
        let inside = |p: &Path| {
            let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            abs(p).starts_with(abs(&opts.out))
        };
        if cfg.shareable && inside(&map_path) {
            return Err(Error::Usage(format!(
                "--source-map {} is inside the shareable output folder; put it outside (it maps keys back to input paths)",
                map_path.display()
            )));
        }
        Ok(Naming {
            shareable: cfg.shareable,
            salt: opts.salt.clone(),
            input: opts.input.clone(),
            map_path,
        })
    }

    fn key(&self, text: &str) -> String {
        format!("study-{}", patient_key(text, &self.salt, false))
    }

    /// The study's name in the journal and manifest (its resume key).
    pub(crate) fn study(&self, s: &Study) -> String {
        if self.shareable {
            self.key(&s.name)
        } else {
            s.name.clone()
        }
    }

    /// The study's `source_path` in the shard rows and the manifest.
    pub(crate) fn source(&self, s: &Study) -> String {
        if self.shareable {
            self.key(&s.source_path)
        } else {
            s.source_path.clone()
        }
    }

    /// A message with the input folder and the names of `studies` (their paths, names and raw
    /// patient ids) replaced by keys when shareable; unchanged otherwise.
    pub(crate) fn redact(&self, msg: &str, studies: &[&Study]) -> String {
        if !self.shareable {
            return msg.to_string();
        }
        let mut out = msg.to_string();
        let mut pairs: Vec<(String, String)> = Vec::new();
        for s in studies {
            let abs = self.input.join(&s.source_path);
            pairs.push((abs.display().to_string(), self.source(s)));
            pairs.push((s.source_path.clone(), self.source(s)));
            pairs.push((s.name.clone(), self.study(s)));
            if s.patient.chars().count() >= 4 {
                let key = patient_key(&s.patient, &self.salt, false);
                pairs.push((s.patient.clone(), format!("patient-{key}")));
            }
        }
        pairs.push((self.input.display().to_string(), "<input>".into()));
        if let Ok(abs) = self.input.canonicalize() {
            pairs.push((abs.display().to_string(), "<input>".into()));
        }
        // longest first, so that a path is replaced before a name inside it
        pairs.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        for (from, to) in pairs.iter().filter(|(f, _)| !f.is_empty()) {
            out = out.replace(from.as_str(), to);
        }
        out
    }

    /// Under `shareable`, adds `studies`' key → input path entries to the source map (outside
    /// the output folder; existing entries are kept).
    fn write_source_map(&self, studies: &[&Study]) -> Result<()> {
        if !self.shareable {
            return Ok(());
        }
        let mut map: BTreeMap<String, String> = std::fs::read_to_string(&self.map_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        for s in studies {
            map.insert(self.source(s), s.source_path.clone());
            map.insert(self.study(s), s.name.clone());
        }
        let json = serde_json::to_string_pretty(&map).expect("map serialises");
        crate::atomic::write_bytes(&self.map_path, json.as_bytes())?;
        tracing::info!(
            "shareable: study keys → input paths written to {} (keep it private; it is not in the output folder)",
            self.map_path.display()
        );
        Ok(())
    }
}

/// Worker `w` of `nw` (Slurm array / Indexed Job) takes every `nw`-th study from the `w`-th.
fn worker_share(studies: &[Study], (w, nw): (usize, usize)) -> Result<Vec<&Study>> {
    if nw == 0 || w >= nw {
        return Err(Error::Usage(format!(
            "--worker-index {w} must be < --num-workers {nw}"
        )));
    }
    Ok(studies.iter().skip(w).step_by(nw).collect())
}

/// What an interrupted run of worker `w` finished: the studies whose journal entry names a
/// part that exists (by name), and the highest part sequence number it used.
fn resume_state(out: &Path, w: usize) -> Result<(BTreeMap<String, StudyEntry>, Option<usize>)> {
    let mut done = BTreeMap::new();
    let mut max_seq = None;
    for e in read_journal(&journal_path(out, w))? {
        if let Some(p) = &e.part {
            let seq = folder::part_number(p).and_then(|n| n.checked_sub(w * 10000));
            max_seq = max_seq.max(seq);
            if e.status == StudyStatus::Ok && folder::part_path(out, p).exists() {
                done.insert(e.study.clone(), e);
            }
        }
    }
    Ok((done, max_seq))
}

/// The patient split, written to `_splits.json`: the folder's own `_splits.json` when it has
/// one (a resumed or extended ingest), else `--splits`, else a new seeded split. A split that
/// exists is never changed: patients it lists keep their split, and only patients it does not
/// list are assigned ([`Splits::extend`]), so rows already written always agree with it.
fn plan_splits(
    studies: &[Study],
    cfg: &PrepConfig,
    opts: &IngestOptions,
    key: &dyn Fn(&Study) -> String,
    lists: Option<&ListSplit>,
) -> Result<Splits> {
    if let Some(l) = lists {
        let keys = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|p| patient_key(p, &opts.salt, cfg.keep_patient_ids))
                .collect()
        };
        let splits = Splits::from_lists(keys(&l.train), keys(&l.val), keys(&l.test), cfg);
        tracing::info!(
            "split from the input's lists: {} train ({} labeled: the first in list order), {} val, {} test patients",
            splits.train.len(),
            splits.labeled_train.len(),
            splits.val.len(),
            splits.test.len()
        );
        let json = serde_json::to_string_pretty(&splits).expect("splits serialise");
        crate::atomic::write_bytes(&opts.out.join(folder::SPLITS), json.as_bytes())?;
        return Ok(splits);
    }
    let usable = |s: &&Study| s.error.is_none();
    let keys = |labeled: bool| -> Vec<String> {
        studies
            .iter()
            .filter(usable)
            .filter(|s| matches!(s.label, LabelSource::None) != labeled)
            .map(key)
            .collect()
    };
    let (labeled, unlabeled) = (keys(true), keys(false));
    let own = opts.out.join(folder::SPLITS);
    let existing = if own.exists() {
        Some((Splits::load(&own)?, own.clone()))
    } else {
        match &opts.splits {
            Some(p) => Some((Splits::load(p)?, p.clone())),
            None => None,
        }
    };
    let splits = match existing {
        None => Splits::compute(&labeled, &unlabeled, cfg),
        Some((mut s, from)) => {
            let known = labeled
                .iter()
                .chain(&unlabeled)
                .filter(|k| s.split_of(k).is_some())
                .count();
            if known == 0 && !labeled.is_empty() && Some(&from) != Some(&own) {
                return Err(Error::Config {
                    path: from,
                    msg: "no patient of this input is in these splits (a splits file from another input, or another salt?)".into(),
                });
            }
            let added = s.extend(&labeled, &unlabeled, cfg);
            if added > 0 {
                tracing::info!(
                    "{added} new patient(s) assigned to splits; the {known} already in {} keep theirs",
                    from.display()
                );
            }
            s
        }
    };
    let json = serde_json::to_string_pretty(&splits).expect("splits serialise");
    crate::atomic::write_bytes(&own, json.as_bytes())?;
    Ok(splits)
}

/// Refuses to add to a folder made with another config, naming the fields that differ.
fn check_config(out: &Path, cfg: &PrepConfig) -> Result<()> {
    let p = out.join(folder::PREP_CONFIG);
    let Ok(text) = std::fs::read_to_string(&p) else {
        return Ok(());
    };
    let Ok(old) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(());
    };
    let new = serde_json::to_value(cfg).expect("config serialises");
    let diffs = crate::artifact::json_diff(&old, &new);
    if diffs.is_empty() {
        return Ok(());
    }
    Err(Error::Config {
        path: p,
        msg: format!(
            "this output folder holds shards made with a different prep config ({}); use a new --out",
            diffs.join("; ")
        ),
    })
}

/// Writes `_prep-config.json`.
fn write_config(out: &Path, cfg: &PrepConfig) -> Result<()> {
    let json = serde_json::to_string_pretty(cfg).expect("config serialises");
    crate::atomic::write_bytes(&out.join(folder::PREP_CONFIG), json.as_bytes())
}

/// Refuses to resume or add workers with another salt (the keys would not match).
fn check_salt(out: &Path, salt: &str) -> Result<()> {
    let p = out.join(folder::SALT_FINGERPRINT);
    match std::fs::read_to_string(&p) {
        Ok(old) if old.trim() != salt_fingerprint(salt) => Err(Error::Config {
            path: p,
            msg: "this output folder was written with another --salt / DMNET_SALT; patient keys would not match".into(),
        }),
        _ => Ok(()),
    }
}

/// Records the salt's fingerprint (never the salt) for [`check_salt`].
fn write_salt_fingerprint(out: &Path, salt: &str) -> Result<()> {
    let p = out.join(folder::SALT_FINGERPRINT);
    if p.exists() {
        return Ok(());
    }
    crate::atomic::write_bytes(&p, salt_fingerprint(salt).as_bytes())
}

/// The command line of this ingest, quoted for a shell (shown by readers that refuse the
/// unfinished folder), with the salt replaced by a placeholder (no folder holds the salt) and,
/// for a shareable folder, the input path too. Outside the `dmnet-prep` binary (library use),
/// the options.
fn command_line(opts: &IngestOptions, shareable: bool) -> String {
    let args: Vec<String> = std::env::args().collect();
    let from_binary = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "dmnet-prep");
    let input = if shareable {
        "YOUR_INPUT".to_string()
    } else {
        folder::shell_quote(&absolute(&opts.input))
    };
    if !from_binary {
        return format!(
            "dmnet-prep ingest --input {input} --out {} (with the same options)",
            folder::shell_quote(&absolute(&opts.out))
        );
    }
    let mut words = vec!["dmnet-prep".to_string()];
    let mut rest = args[1..].iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--salt" => {
                rest.next();
                words.push("--salt '<your salt>'".into());
            }
            s if s.starts_with("--salt=") => words.push("--salt '<your salt>'".into()),
            "--input" | "--out" | "--splits" | "--pipeline" | "--source-map" => {
                let v = rest.next().map(String::as_str).unwrap_or_default();
                let v = if a == "--input" {
                    input.clone()
                } else {
                    folder::shell_quote(&absolute(Path::new(v)))
                };
                words.push(format!("{a} {v}"));
            }
            _ => words.push(folder::shell_quote(a)),
        }
    }
    words.join(" ")
}

/// A path made absolute against the current directory (so a printed command works from
/// anywhere).
fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// Whether `name` is a top-level file an ingest or merge writes.
fn is_own_side_file(name: &str) -> bool {
    let numbered = |prefix: &str, suffix: &str| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    [
        folder::MANIFEST,
        folder::SPLITS,
        folder::PREP_CONFIG,
        folder::SALT_FINGERPRINT,
    ]
    .contains(&name)
        || numbered("_manifest-w", ".json")
        || numbered(".journal-w", ".jsonl")
        || numbered(".command-w", "")
        || crate::atomic::is_temp_name(name)
}

/// Refuses an `--out` holding anything this ingest did not write: a v1 folder, a file that is
/// not one of the side files, a part no worker's journal names, any other file under `data/`.
fn check_out_folder(out: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(()); // a new folder
    };
    if folder::kind(out) == folder::FolderKind::V1 {
        return Err(Error::invalid(
            out,
            format!(
                "--out holds shard schema v1 files: upgrade them with `{}`, or use a new --out",
                folder::upgrade_command(out)
            ),
        ));
    }
    let foreign = |p: &Path, why: &str| {
        Error::invalid(
            p,
            format!("{why}: dmnet-prep did not write it; use an empty or new --out (nothing was changed)"),
        )
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_data = name == folder::DATA_DIR && e.path().is_dir();
        if !is_data && !is_own_side_file(&name) {
            return Err(foreign(&e.path(), "a file in the output folder"));
        }
    }
    let data = out.join(folder::DATA_DIR);
    let Ok(entries) = std::fs::read_dir(&data) else {
        return Ok(());
    };
    let mut journals: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let temp = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .and_then(folder::part_number);
        let Some(n) = folder::part_number(&name).or(temp) else {
            return Err(foreign(&e.path(), "not a part file"));
        };
        if temp.is_some() {
            continue; // an unfinished part: its worker removes it
        }
        let parts = journals.entry(n / 10000).or_insert_with(|| {
            read_journal(&journal_path(out, n / 10000))
                .unwrap_or_default()
                .into_iter()
                .filter_map(|j| j.part)
                .collect()
        });
        if !parts.contains(&name) {
            return Err(foreign(&e.path(), "a part file no ingest journal names"));
        }
    }
    Ok(())
}

/// Removes this worker's unfinished (temporary) part files.
fn clean_temp_parts(out: &Path, w: usize) -> Result<()> {
    let data = out.join(folder::DATA_DIR);
    let Ok(entries) = std::fs::read_dir(&data) else {
        return Ok(());
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let mine = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .and_then(folder::part_number)
            .is_some_and(|n| n / 10000 == w);
        if mine {
            let p = e.path();
            tracing::info!("removing incomplete {}", p.display());
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

/// The slice shape of the parts finished studies are in (a resumed ingest must match it).
fn existing_shape(out: &Path, done: &BTreeMap<String, StudyEntry>) -> Result<Option<SliceShape>> {
    match done.values().find_map(|e| e.part.as_deref()) {
        Some(p) => Ok(Some(
            crate::shard::Part::open(&folder::part_path(out, p))?.shape,
        )),
        None => Ok(None),
    }
}

/// One study prepared by a worker: its rows, encoded and compressed.
struct Prepared {
    slices: u64,
    roles: BTreeMap<Role, u64>,
    groups: Vec<EncodedRowGroup>,
}

/// Encodes a study's rows into row groups of at most `row_group_slices` rows; in parallel on
/// the pool when `parallel` (fewer studies left to start than threads: see
/// [`RowGroupEncoder::encode_groups`]).
fn encode_study(records: &[SliceRecord], cfg: &PrepConfig, parallel: bool) -> Result<Prepared> {
    let mut roles = BTreeMap::new();
    for r in records {
        *roles.entry(r.role).or_default() += 1;
    }
    let groups = match records.first() {
        Some(first) => {
            let shape = SliceShape::of(first, cfg.image_dtype);
            RowGroupEncoder::new(&shape, &part_options(cfg))?.encode_groups(
                records,
                cfg.row_group_slices,
                parallel,
            )?
        }
        None => Vec::new(),
    };
    Ok(Prepared {
        slices: records.len() as u64,
        roles,
        groups,
    })
}

/// Hands a prepared study to the writer: its rows join the open part, or it fails alone when
/// its slice shape differs from the folder's. Returns the study's entry.
fn write_study(
    writer: &mut ShardWriter,
    mut entry: StudyEntry,
    result: Result<Prepared>,
    log: bool,
) -> Result<StudyEntry> {
    let result = result.and_then(|p| match p.groups.first().map(|g| g.shape) {
        Some(shape) => writer
            .check_shape(&shape)
            .map(|_| p)
            .map_err(|m| Error::invalid(&entry.source_path, format!("case {}: {m}", entry.study))),
        None => Ok(p),
    });
    match result {
        Ok(p) => {
            entry.slices = p.slices;
            entry.roles = p.roles;
            if p.groups.is_empty() {
                writer.journal_only(entry.clone())?;
                return Ok(entry);
            }
            let part = writer.add(entry.clone(), p.groups)?;
            entry.part = Some(part);
            Ok(entry)
        }
        Err(e) => {
            if log {
                tracing::error!("{e}");
            }
            entry.status = StudyStatus::Failed;
            entry.reason = Some(e.to_string());
            writer.journal_only(entry.clone())?;
            Ok(entry)
        }
    }
}

/// Rayon over studies (each prepared and encoded by its worker) → bounded channel → this
/// thread appends the encoded rows. Returns the new entries.
fn run_pipeline(
    todo: &[&Study],
    ctx: &StudyCtx,
    opts: &IngestOptions,
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
        .map_err(|e| Error::Usage(format!("--threads {threads}: {e}")))?;
    // at most `threads` studies being processed + 2 waiting + 1 being written
    let (tx, rx) = crossbeam_channel::bounded(2);
    let bar = crate::cli::progress(todo.len() as u64, "ingest");
    let start = Instant::now();
    let mut entries = Vec::new();
    let mut slices = 0u64;
    let mut write_err = None;
    let started = &std::sync::atomic::AtomicUsize::new(0);
    let few_left = &|| {
        let n = started.load(std::sync::atomic::Ordering::Relaxed);
        todo.len().saturating_sub(n) < threads
    };
    std::thread::scope(|scope| {
        scope.spawn(move || {
            pool.install(|| {
                todo.par_iter().for_each_with(tx, |tx, study| {
                    started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let r = prepare_study(study, ctx, few_left);
                    let _ = tx.send((*study, r));
                });
            })
        });
        for (study, result) in rx {
            let key = (ctx.key)(study);
            let entry = StudyEntry {
                study: ctx.naming.study(study),
                source_path: ctx.naming.source(study),
                split: ctx.splits.split_of(&key),
                patient_key: key,
                status: StudyStatus::Ok,
                reason: None,
                slices: 0,
                roles: BTreeMap::new(),
                part: None,
            };
            let result = result.map_err(|e| redacted(ctx, study, e));
            match write_study(writer, entry, result, !ctx.cfg.shareable) {
                Ok(e) => {
                    slices += if e.status == StudyStatus::Ok {
                        e.slices
                    } else {
                        0
                    };
                    entries.push(e);
                }
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

/// What every study's preparation shares: the config, the split, the patient keys and how
/// studies are named in the folder.
struct StudyCtx<'a> {
    cfg: &'a PrepConfig,
    splits: &'a Splits,
    key: &'a (dyn Fn(&Study) -> String + Sync),
    naming: &'a Naming,
}

/// A study's error with its names redacted when the folder is shareable (the manifest and the
/// journal keep the reason; the full message was logged).
fn redacted(ctx: &StudyCtx, study: &Study, e: Error) -> Error {
    if !ctx.cfg.shareable {
        return e;
    }
    tracing::error!("{e}");
    Error::invalid(
        ctx.naming.source(study),
        ctx.naming.redact(&e.to_string(), &[study]),
    )
}

/// One study, read, sliced and encoded on a worker thread. A panic (a bug) fails this study
/// only; the others go on (issue 12).
fn prepare_study(study: &Study, ctx: &StudyCtx, few_left: &dyn Fn() -> bool) -> Result<Prepared> {
    let what = format!("case {}", study.name);
    crate::error::catch_panic(&study.source_path, &what, || {
        crate::error::debug_injected_panic(&study.name);
        if let Some(e) = &study.error {
            return Err(Error::invalid(&study.source_path, e.clone()));
        }
        let p = plan(study, ctx)?;
        let records = process_study(study, &p, ctx.cfg)?;
        encode_study(&records, ctx.cfg, few_left())
    })
}

fn plan(study: &Study, ctx: &StudyCtx) -> Result<StudyPlan> {
    let k = (ctx.key)(study);
    let split = ctx.splits.split_of(&k).ok_or_else(|| {
        Error::invalid(
            &study.source_path,
            format!(
                "case {}: patient not in the splits (a --splits file from another input or salt?)",
                study.name
            ),
        )
    })?;
    let use_labels = match ctx.cfg.protocol {
        super::config::Protocol::AllSlices => {
            split != Split::Train || ctx.splits.in_labeled_budget(&k)
        }
        super::config::Protocol::Paper => true,
    };
    Ok(StudyPlan {
        key: k,
        split,
        use_labels,
        source: ctx.naming.source(study),
    })
}

/// `dmnet-prep merge`: joins the workers' `_manifest-wI.json` into one `_manifest.json`.
///
/// - `dirs == [out]`: the workers wrote into one shared folder; only the manifest is written.
/// - otherwise each worker wrote its own folder (Slurm array / Indexed Job, `docs/scaling.md`):
///   their configs, salts and `_splits.json` must agree; the part files are hard-linked (or
///   copied) into `out/data/` as `part-00000…` in worker order, and `_manifest.json`,
///   `_splits.json` and `_prep-config.json` are written there. `out` must be new, empty or an
///   earlier merge of the same workers.
///
/// All workers `0..N` of one run must be present.
pub fn merge(dirs: &[std::path::PathBuf], out: &Path) -> Result<Manifest> {
    let mut parts: Vec<(std::path::PathBuf, Manifest)> = Vec::new();
    for d in dirs {
        for e in std::fs::read_dir(d).map_err(|e| Error::io(d, e))? {
            let p = e.map_err(|e| Error::io(d, e))?.path();
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if n.starts_with("_manifest-w") && n.ends_with(".json") {
                parts.push((d.clone(), Manifest::load(&p)?));
            }
        }
    }
    parts.sort_by_key(|(_, m)| m.worker[0]);
    let Some((first_dir, first)) = parts.first().cloned() else {
        return Err(Error::invalid(out, "no _manifest-w*.json to merge"));
    };
    let nw = first.worker[1];
    let have: Vec<usize> = parts.iter().map(|(_, m)| m.worker[0]).collect();
    if have != (0..nw).collect::<Vec<_>>() {
        return Err(Error::invalid(
            out,
            format!("merge needs the manifests of workers 0..{nw}, found {have:?}"),
        ));
    }
    let splits = read_splits(&first_dir)?;
    for (d, m) in &parts {
        let s = read_splits(d)?;
        let same_splits =
            serde_json::from_str::<Splits>(&s).ok() == serde_json::from_str::<Splits>(&splits).ok();
        let mut what = crate::artifact::json_diff(
            &serde_json::to_value(&first.config).expect("config serialises"),
            &serde_json::to_value(&m.config).expect("config serialises"),
        );
        if m.salt_fingerprint != first.salt_fingerprint {
            what.push("another salt (--salt / DMNET_SALT)".into());
        }
        if !same_splits {
            what.push(format!("another {}", folder::SPLITS));
        }
        if !what.is_empty() {
            return Err(Error::invalid(
                d,
                format!(
                    "worker {} differs from worker {}: {}",
                    m.worker[0],
                    first.worker[0],
                    what.join("; ")
                ),
            ));
        }
    }
    let same_folder = dirs.len() == 1 && dirs[0] == out;
    let mut merged = first.clone();
    merged.worker = [0, 1];
    merged.studies.clear();
    merged.parts.clear();
    let mut renamed: BTreeMap<(usize, String), String> = BTreeMap::new();
    let mut links = Vec::new();
    for (w, (d, m)) in parts.into_iter().enumerate() {
        let infos: BTreeMap<String, PartInfo> =
            m.parts.into_iter().map(|p| (p.name.clone(), p)).collect();
        let mut entry_of = |old: &str, new: &str| {
            if let Some(mut info) = infos.get(old).cloned() {
                info.name = new.to_string();
                if !merged.parts.iter().any(|p| p.name == new) {
                    merged.parts.push(info);
                }
            }
        };
        for mut s in m.studies {
            if let (false, Some(p)) = (same_folder, s.part.clone()) {
                let next = renamed.len();
                let new = renamed
                    .entry((w, p.clone()))
                    .or_insert_with(|| {
                        links.push((folder::part_path(&d, &p), folder::part_name(0, next)));
                        folder::part_name(0, next)
                    })
                    .clone();
                entry_of(&p, &new);
                s.part = Some(new);
            } else if let Some(p) = s.part.clone() {
                entry_of(&p, &p);
            }
            merged.studies.push(s);
        }
    }
    merged.parts.sort_by(|a, b| a.name.cmp(&b.name));
    merged.recount();
    if !same_folder {
        let names: Vec<&str> = links.iter().map(|(_, n)| n.as_str()).collect();
        check_merge_out(out, &names)?;
        std::fs::create_dir_all(out.join(folder::DATA_DIR))
            .map_err(|e| Error::io(out.join(folder::DATA_DIR), e))?;
        for (src, name) in &links {
            link_or_copy(src, &folder::part_path(out, name))?;
        }
        crate::atomic::write_bytes(&out.join(folder::SPLITS), splits.as_bytes())?;
        let cfg = serde_json::to_string_pretty(&merged.config).expect("config serialises");
        crate::atomic::write_bytes(&out.join(folder::PREP_CONFIG), cfg.as_bytes())?;
    }
    let json = serde_json::to_string_pretty(&merged).expect("manifest serialises");
    crate::atomic::write_bytes(&out.join(folder::MANIFEST), json.as_bytes())?;
    Ok(merged)
}

fn read_splits(dir: &Path) -> Result<String> {
    let p = dir.join(folder::SPLITS);
    std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))
}

/// The merged folder may hold only what this merge writes (it replaces those files).
fn check_merge_out(out: &Path, parts: &[&str]) -> Result<()> {
    let listing = |d: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(d)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let name = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string()
    };
    for p in listing(out) {
        let n = name(&p);
        let ok = (n == folder::DATA_DIR && p.is_dir())
            || [folder::MANIFEST, folder::SPLITS, folder::PREP_CONFIG].contains(&n.as_str())
            || n.starts_with('.') && n.contains(".tmp");
        if !ok {
            return Err(Error::invalid(
                &p,
                "the merge output folder holds a file merge does not write: use a new --out",
            ));
        }
    }
    for p in listing(&out.join(folder::DATA_DIR)) {
        let n = name(&p);
        let ours_tmp = n.starts_with('.') && n.ends_with(".tmp");
        if !parts.contains(&n.as_str()) && !ours_tmp {
            return Err(Error::invalid(
                &p,
                "the merge output folder holds a part this merge does not write: use a new --out",
            ));
        }
    }
    Ok(())
}

/// Hard-links `src` to `dest` (same file system), else copies it, via a temporary name that
/// replaces `dest` when complete.
fn link_or_copy(src: &Path, dest: &Path) -> Result<()> {
    let tmp = dest.with_file_name(format!(
        ".{}.tmp",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("part")
    ));
    let _ = std::fs::remove_file(&tmp);
    std::fs::hard_link(src, &tmp)
        .or_else(|_| std::fs::copy(src, &tmp).map(|_| ()))
        .and_then(|_| std::fs::rename(&tmp, dest))
        .map_err(|e| Error::io(dest, e))
}
