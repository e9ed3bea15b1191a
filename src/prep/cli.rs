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

/// Turn raw DICOM/NIfTI studies into versioned Parquet slice shards.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Examples:
  dmnet-prep ingest --input ../shared/data/la2018 --out shards/la --pipeline pipelines/la2018.toml
  dmnet-prep ingest --input data/kits19 --out shards/kits --pipeline pipelines/kits19.toml --protocol all-slices --labeled-patients 8
  dmnet-prep ingest --input data/brats --out shards/brats --pipeline pipelines/brats18.toml --channels flair,t1ce
  dmnet-prep ingest --input dicom/ --out shards/d --layout dicom --worker-index 0 --num-workers 4   # Slurm array task 0
  dmnet-prep merge shards/d                                  # workers shared one folder
  dmnet-prep merge --out shards/all shards/w0 shards/w1      # one folder per worker
  dmnet-prep inspect shards/la
  dmnet-prep upgrade shards/old                              # schema v1 → v2, in place"
)]
pub struct Cli {
    #[command(flatten)]
    log: crate::cli::LogArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Read studies, preprocess, write data/part-*.parquet + _manifest.json + _splits.json
    /// (schemas/shard-v2.md). Exit code 2 when a study failed (listed in _manifest.json), 1 on a
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
    /// Rewrite a shard folder of schema v1 as v2, in place (rerun it if it was interrupted).
    Upgrade {
        /// The v1 shard folder.
        dir: PathBuf,
        /// Storage of the image column (float32 keeps the v1 values exactly).
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
    /// DMNET_SALT) and refuse --keep-patient-ids.
    #[arg(long)]
    shareable: bool,
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
                self.shareable,
            )?,
            worker: (self.worker_index, self.num_workers),
            max_studies: self.max_studies,
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
            println!(
                "upgraded {} to shard schema v{}: {} parts, {} rows rewritten",
                dir.display(),
                r.manifest.schema_version,
                r.parts,
                r.rows
            );
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
    for (split, roles) in &r.counts {
        let p = r.patients.get(split).copied().unwrap_or(0);
        println!("  {split:<5} patients {p:>4}  {roles:?}");
    }
    println!("channels: {:?}  sizes: {:?}", r.channels, r.sizes);
    println!(
        "slice orientations: {:?}  modalities: {:?}  source slice sizes: {:?}",
        r.orientations, r.modalities, r.source_sizes
    );
    println!("mask pixels per class: {:?}", r.class_pixels);
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
        "{prefix}{} studies ok, {} failed, {} slices; per split/role: {}",
        m.totals.ok,
        m.totals.failed,
        m.totals.slices,
        serde_json::to_string(&m.counts).unwrap_or_default()
    );
    warn_public_salt(m);
    Ok(ExitCode::from(if m.totals.failed > 0 { 2 } else { 0 }))
}
