//! The `dmnet-prep` command line: subcommands, flags, and how flags merge into a
//! [`PrepConfig`] (a pipeline's `[prep]` table, then each given flag on top). The binary
//! `src/bin/dmnet-prep.rs` only parses and calls [`run`].
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use super::{IngestOptions, Layout, PrepConfig, Protocol};
use crate::artifact::Fraction;
use crate::shard::ImageDtype;
use crate::{Error, Result};

/// Examples, one command per paragraph; no line is wider than 78 columns, so clap never wraps
/// them inside a command (tested: they paste into a shell as written).
const EXAMPLES: &str = "\
Examples:
  # the LA2018 cases of ../shared: all slices, 20 % of training patients labeled
  dmnet-prep ingest --input ../shared/data/la2018 --out shards/la \\
      --pipeline pipelines/la2018.toml

  # KiTS19 under the paper's protocol, 224x224
  dmnet-prep ingest --input data/kits19 --out shards/kits \\
      --pipeline pipelines/kits19.toml

  # ACDC in SSL4MIS's h5 layout: its lists are the split, 7 labeled patients
  dmnet-prep ingest --input ../shared/data/acdc --out shards/acdc \\
      --pipeline pipelines/acdc-cpu.toml

  # shards that will leave this machine: private salt, no names inside
  DMNET_SALT='a-long-private-salt' dmnet-prep ingest --input dicom/ \\
      --out shards/share --shareable

  # one worker of four (Slurm array task 0), then join the workers
  dmnet-prep ingest --input dicom/ --out shards/d --layout dicom \\
      --worker-index 0 --num-workers 4
  dmnet-prep merge shards/d

  # check a folder (exit 1 when an invariant is broken)
  dmnet-prep inspect shards/la

  # rewrite an old folder (schema v1 or v2) as v3, in place
  dmnet-prep upgrade shards/old

Exit status: 0 every study ok, 2 some studies failed (one error line each,
listed in OUT/_manifest.json; the others are written), 1 nothing could run.";

/// Turn raw DICOM/NIfTI studies into versioned Parquet slice shards.
#[derive(Parser)]
#[command(version, about, max_term_width = 100, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    log: crate::cli::LogArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Read studies, preprocess, write data/part-*.parquet + _manifest.json + _splits.json
    /// (schemas/shard-v3.md). Exit code 2 when a study failed (listed in _manifest.json), 1 on a
    /// fatal error.
    Ingest(Box<IngestArgs>),
    /// Counts per split and role, label statistics, invariant checks (exit 1 when broken).
    Inspect {
        /// Shard folder.
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Join the workers' _manifest-wI.json into _manifest.json: `merge DIR` when the workers
    /// shared one folder, `merge --out ALL W0 W1 …` when each wrote its own (parts are linked
    /// or copied into ALL and renumbered).
    Merge {
        /// Merged output folder (default: the single input folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The workers' folder(s).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Rewrite a shard folder of schema v1 or v2 as v3, in place, recording each part's
    /// SHA-256 (rerun it if it was interrupted).
    Upgrade {
        /// The v1 or v2 shard folder.
        dir: PathBuf,
        /// Precision of v1 images (float32 keeps the v1 values exactly); v2 keeps its own.
        #[arg(long, value_enum, default_value = "float32")]
        image_dtype: ImageDtype,
    },
    /// Write a small SYNTHETIC phantom cohort (KiTS19 layout + DICOM) for demos.
    Synth {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Labelled patients.
        #[arg(long, default_value_t = 24)]
        patients: usize,
        /// Extra DICOM-only patients.
        #[arg(long, default_value_t = 1)]
        dicom_patients: usize,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// In-plane size.
        #[arg(long, default_value_t = 96)]
        size: usize,
    },
}

#[derive(Args)]
struct IngestArgs {
    /// Input folder (or manifest CSV).
    #[arg(long)]
    input: PathBuf,
    /// Output shard folder (rerun with the same arguments to resume).
    #[arg(long)]
    out: PathBuf,
    /// Pipeline file; its [prep] table is the base config.
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Input layout.
    #[arg(long, value_enum)]
    layout: Option<Layout>,
    /// Slice protocol.
    #[arg(long, value_enum)]
    protocol: Option<Protocol>,
    /// Seed (split and slice draws).
    #[arg(long)]
    seed: Option<u64>,
    /// In-plane size S (slices are S×S).
    #[arg(long)]
    size: Option<usize>,
    /// Channels (comma-separated), e.g. brats file suffixes `t1,t1ce,t2`.
    #[arg(long, value_delimiter = ',')]
    channels: Option<Vec<String>>,
    /// all-slices: training patients that keep labels.
    #[arg(long, conflicts_with = "labeled_patient_fraction")]
    labeled_patients: Option<usize>,
    /// all-slices: fraction of the training patients that keep labels (0.2 or 20%).
    #[arg(long, alias = "labeled-fraction")]
    labeled_patient_fraction: Option<Fraction>,
    /// Reuse a _splits.json (same patients, same salt).
    #[arg(long)]
    splits: Option<PathBuf>,
    /// Write raw patient ids instead of salted hashes.
    #[arg(long)]
    keep_patient_ids: bool,
    /// Salt for patient keys (default: $DMNET_SALT; without either, a PUBLIC built-in salt
    /// is used with a warning: anyone with the PatientIDs could recompute the keys).
    #[arg(long)]
    salt: Option<String>,
    /// The output will be shared: require a private salt (>= 16 characters, from --salt or
    /// DMNET_SALT), refuse --keep-patient-ids, and write no input file or folder name into the
    /// folder (source paths and study names become salted keys; the key → path map goes to
    /// --source-map, outside the folder).
    #[arg(long)]
    shareable: bool,
    /// With --shareable: where to write the study key → input path map (default:
    /// OUT.source-map.json beside the output folder). Keep it private.
    #[arg(long, requires = "shareable")]
    source_map: Option<PathBuf>,
    /// Slices per row group.
    #[arg(long)]
    row_group_slices: Option<usize>,
    /// Target part file size in MB.
    #[arg(long)]
    file_mb: Option<u64>,
    /// Storage of the image column: float16 (half the size, |error| ≤ 2^-11·|value|) or
    /// float32 (exact).
    #[arg(long, value_enum)]
    image_dtype: Option<ImageDtype>,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// This worker's index (Slurm array / Kubernetes Indexed Job).
    #[arg(long, default_value_t = 0)]
    worker_index: usize,
    /// Number of workers.
    #[arg(long, default_value_t = 1)]
    num_workers: usize,
    /// Only the first N studies (sorted by name).
    #[arg(long)]
    max_studies: Option<usize>,
    /// 4-D inputs (4-D NIfTI, DICOM series with repeated positions): ingest this time point
    /// (0-based); 3-D volumes are read as they are. Without it a 4-D study fails by name.
    #[arg(long)]
    timepoint: Option<usize>,
}

impl IngestArgs {
    /// What an ingest run needs besides its config (folders, threads, the resolved salt).
    fn options(&self, cfg: &PrepConfig) -> Result<IngestOptions> {
        Ok(IngestOptions {
            input: self.input.clone(),
            out: self.out.clone(),
            threads: self.threads,
            splits: self.splits.clone(),
            salt: super::split::resolve_salt(
                self.salt.as_deref(),
                std::env::var("DMNET_SALT").ok().as_deref(),
                cfg.keep_patient_ids,
                cfg.shareable,
            )?,
            worker: (self.worker_index, self.num_workers),
            max_studies: self.max_studies,
            source_map: self.source_map.clone(),
        })
    }

    /// The pipeline's `[prep]` table (or the defaults) with the given flags on top.
    fn config(&self) -> Result<PrepConfig> {
        let mut c = match &self.pipeline {
            Some(p) => PrepConfig::from_pipeline(p)?,
            None => PrepConfig::default(),
        };
        if let Some(v) = self.layout {
            c.layout = v;
        }
        if let Some(v) = self.protocol {
            c.protocol = v;
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        if let Some(v) = self.size {
            c.preprocess.size = v;
        }
        if let Some(v) = &self.channels {
            c.preprocess.channels = v.clone();
        }
        if self.labeled_patients.is_some() || self.labeled_patient_fraction.is_some() {
            c.labeled_patients = self.labeled_patients;
            c.labeled_patient_fraction = self.labeled_patient_fraction;
        }
        if self.keep_patient_ids {
            c.keep_patient_ids = true;
        }
        if self.shareable {
            c.shareable = true;
        }
        if let Some(v) = self.row_group_slices {
            c.row_group_slices = v;
        }
        if let Some(v) = self.file_mb {
            c.file_bytes = v << 20;
        }
        if let Some(v) = self.image_dtype {
            c.image_dtype = v;
        }
        if self.timepoint.is_some() {
            c.timepoint = self.timepoint;
        }
        c.validate().map_err(|msg| Error::Config {
            path: self
                .pipeline
                .clone()
                .unwrap_or_else(|| "<command line>".into()),
            msg,
        })?;
        Ok(c)
    }
}

/// `dmnet-prep`: installs the logger, runs the subcommand, maps its result to the exit code
/// (0; 2 when a study failed; 1 on an error, after one `error:` line).
pub fn run(cli: Cli) -> ExitCode {
    cli.log.init();
    crate::cli::exit_code(run_cmd(cli.cmd))
}

fn run_cmd(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Ingest(a) => {
            let cfg = a.config()?;
            report("", &super::ingest(&cfg, &a.options(&cfg)?)?)
        }
        Cmd::Inspect { dir, json } => inspect(&dir, json),
        Cmd::Merge { out, dirs } => {
            let out = match (out, dirs.as_slice()) {
                (Some(o), _) => o,
                (None, [one]) => one.clone(),
                (None, _) => {
                    let msg = "several worker folders: give --out for the merged folder";
                    return Err(Error::Usage(msg.into()));
                }
            };
            report("merged: ", &super::merge(&dirs, &out)?)
        }
        Cmd::Upgrade { dir, image_dtype } => {
            let r = super::upgrade::upgrade(&dir, image_dtype)?;
            match &r.from {
                Some(v) => println!(
                    "upgraded {} from shard schema v{v} to v{}: {} parts, {} rows rewritten, each part's SHA-256 recorded.\n\
                     note: the v{v} folder carried no hash, so nothing proves its bytes were intact before this upgrade; \
                     it had no source-grid labels either (evaluations use the shard grid until you re-ingest)",
                    dir.display(),
                    r.manifest.schema_version,
                    r.parts,
                    r.rows
                ),
                None => println!(
                    "{} is already shard schema v{}: nothing to do",
                    dir.display(),
                    r.manifest.schema_version
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Synth {
            out,
            patients,
            dicom_patients,
            seed,
            size,
        } => {
            let cfg = super::synth::SynthConfig {
                patients,
                dicom_patients,
                seed,
                size,
            };
            let s = super::synth::synthesize(&out, &cfg)?;
            println!(
                "SYNTHETIC: {} NIfTI cases in {}, {} DICOM series in {}",
                s.nifti_cases,
                s.kits19.display(),
                s.dicom_series,
                s.dicom.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `dmnet-prep inspect`: the report as text (or JSON); exit code 1 when an invariant is broken.
fn inspect(dir: &std::path::Path, json: bool) -> Result<ExitCode> {
    let r = super::inspect(dir)?;
    if let Ok(m) = super::Manifest::load(&dir.join(crate::shard::folder::MANIFEST)) {
        warn_public_salt(&m);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        print_report(&r);
    }
    Ok(ExitCode::from(if r.problems.is_empty() { 0 } else { 1 }))
}

fn print_report(r: &super::InspectReport) {
    println!("rows: {}", r.rows);
    let counted = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (split, roles) in &r.counts {
        let p = r.patients.get(split).copied().unwrap_or(0);
        let roles: Vec<String> = roles
            .iter()
            .map(|(role, n)| format!("{n} {role}"))
            .collect();
        println!("  {split:<5} patients {p:>4}  slices: {}", roles.join(", "));
    }
    println!(
        "channels: {}  sizes: {}",
        r.channels.join(", "),
        r.sizes.join(", ")
    );
    println!(
        "slice orientations: {}  modalities: {}  source slice sizes: {}",
        counted(&r.orientations),
        counted(&r.modalities),
        counted(&r.source_sizes)
    );
    println!("mask pixels per class: {}", counted(&r.class_pixels));
    println!(
        "labeled slices with foreground: {}",
        r.labeled_with_foreground
    );
    for p in &r.problems {
        println!("BROKEN: {p}");
    }
    if r.problems.is_empty() {
        println!("all invariants hold");
    }
}

/// Warns when the folder's patient keys were salted with the public built-in salt.
fn warn_public_salt(m: &super::Manifest) {
    if !m.config.keep_patient_ids && super::split::is_public_salt(&m.salt_fingerprint) {
        tracing::warn!("{}", super::split::PUBLIC_SALT_WARNING);
    }
}

/// Prints a manifest's one-line summary; exit code 2 when any study failed.
fn report(prefix: &str, m: &super::Manifest) -> Result<ExitCode> {
    println!(
        "{prefix}{} studies ok, {} failed, {} slices; {}",
        m.totals.ok,
        m.totals.failed,
        m.totals.slices,
        super::ingest::counts_line(&m.counts)
    );
    warn_public_salt(m);
    Ok(ExitCode::from(if m.totals.failed > 0 { 2 } else { 0 }))
}
