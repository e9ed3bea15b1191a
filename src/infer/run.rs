//! `dmnet-infer --model M --input PATH --out DIR`: opens the model ([`super::model`]: sidecar
//! checked against the model's own metadata), detects the input ([`super::input`]), checks it
//! against what the model was trained on (`artifact::compat`; `--allow-mismatch` overrides),
//! runs every case and writes masks (`OUT/<case>.nii.gz`), optional probability maps, DICOM
//! SEG objects for DICOM inputs, per-case metrics where labels exist (`OUT/metrics.csv`), or
//! predictions + metrics for shard folders; then `OUT/summary.json`.
//!
//! A case that cannot be read or segmented is one error line naming its file; the other cases
//! go on, and the summary lists the failures (the binary exits 2). Every output file is
//! written under a hidden temporary name and renamed when the case is complete, so nothing
//! partial is visible. A panic inside one case is caught and recorded as that case's failure.
use super::engine::{EngineConfig, SliceRunner};
use super::input::{detect_input, InputKind};
use super::model::LoadedModel;
use super::tta::Tta;
use super::volumes::{self, SegmentOptions};
use super::{case_metrics, seg, shards};
use crate::artifact::compat::{enforce, DataFacts, Modality, ModelFacts};
use crate::artifact::sidecar::ModelSidecar;
use crate::cli::DeviceChoice;
use crate::metrics::{CaseCollector, CaseScore, Convention, MetricsAccumulator};
use crate::shard::Split;
use crate::volume::{DicomSeries, Volume};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which files a volume case gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// NIfTI masks; DICOM inputs also get a DICOM SEG beside the NIfTI when the series can
    /// carry one (else a warning, e.g. without FrameOfReferenceUID).
    #[default]
    Auto,
    /// NIfTI masks only.
    Nifti,
    /// DICOM SEG only (DICOM inputs).
    Seg,
    /// NIfTI mask and DICOM SEG (DICOM inputs).
    Both,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct InferOptions {
    /// The ONNX model (its sidecar `.json` must sit beside it).
    pub model: PathBuf,
    /// Input file or folder.
    pub input: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Execution provider choice.
    pub device: DeviceChoice,
    /// Slices per run.
    pub batch: usize,
    /// Also write probability maps (volumes: 5-D float32 NIfTI, vector intent).
    pub probabilities: bool,
    /// Shards: only rows of this split.
    pub split: Option<Split>,
    /// ONNX Runtime library override.
    pub ort_lib: Option<PathBuf>,
    /// Time point of 4-D inputs (`None`: a 4-D input is an error); the mask has the 3-D
    /// volume's geometry.
    pub timepoint: Option<usize>,
    /// Test-time augmentation.
    pub tta: Tta,
    /// Output files of volume cases.
    pub format: OutputFormat,
    /// Run even when the input does not match the model (logged as a warning).
    pub allow_mismatch: bool,
    /// Follow the model's embedded metadata when the sidecar disagrees with it.
    pub use_model_metadata: bool,
    /// Convention of the per-case metrics (`None`: the model's, from its sidecar).
    pub convention: Option<Convention>,
}

impl InferOptions {
    /// Options with the defaults of `dmnet-infer` for a model, an input and an output folder.
    pub fn new(model: PathBuf, input: PathBuf, out: PathBuf) -> Self {
        InferOptions {
            model,
            input,
            out,
            device: DeviceChoice::Auto,
            batch: 8,
            probabilities: false,
            split: None,
            timepoint: None,
            ort_lib: None,
            tta: Tta::None,
            format: OutputFormat::Auto,
            allow_mismatch: false,
            use_model_metadata: false,
            convention: None,
        }
    }
}

/// A case that failed, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseFailure {
    /// The case's input file or folder.
    pub input: PathBuf,
    /// The error, naming the file.
    pub error: String,
}

/// The run summary (also written to `OUT/summary.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct InferSummary {
    /// Input kind (`nifti`, `dicom`, `shards`).
    pub input_kind: String,
    /// Layout found (`file`, `msd`, `kits`, `folder`, `dicom`, `shards`).
    pub layout: String,
    /// Cases (volumes) or shard rows' patients processed successfully.
    pub cases: usize,
    /// Cases that failed, one entry each.
    pub failed: Vec<CaseFailure>,
    /// Slices run through the model (each once, whatever `tta`).
    pub slices: usize,
    /// Wall time (s).
    pub seconds: f64,
    /// Throughput.
    pub slices_per_second: f64,
    /// The execution provider used.
    pub provider: String,
    /// Test-time augmentation used.
    pub tta: Tta,
    /// Files written.
    pub outputs: Vec<PathBuf>,
}

/// Where one volume case comes from.
enum Source<'a> {
    Nifti(&'a [PathBuf]),
    Dicom(&'a DicomSeries),
}

/// One volume case to run.
struct VolumeCase<'a> {
    name: String,
    input: PathBuf,
    source: Source<'a>,
    label: Option<PathBuf>,
}

impl VolumeCase<'_> {
    /// Reads the case's channel volumes (time point `t` of 4-D inputs).
    fn load(&self, t: Option<usize>) -> Result<Vec<Volume>> {
        match self.source {
            Source::Nifti(files) => files
                .iter()
                .map(|f| crate::volume::read_nifti_at(f, t))
                .collect(),
            Source::Dicom(series) => crate::volume::read_dicom_at(series, t).map(|v| vec![v]),
        }
    }
    fn modality(&self) -> Option<Modality> {
        match self.source {
            Source::Dicom(s) => Modality::from_name(&s.modality),
            Source::Nifti(_) => None,
        }
    }
}

/// The state of a run.
struct Run<'a> {
    onnx: &'a mut dyn SliceRunner,
    sidecar: ModelSidecar,
    facts: ModelFacts,
    opts: &'a InferOptions,
    outputs: Vec<PathBuf>,
    failed: Vec<CaseFailure>,
    metrics: Vec<CaseScore>,
    cases: usize,
    slices: usize,
}

/// Runs inference (see the module docs): opens the model and runs its slices through the
/// batching engine in runs of `--max-batch`.
pub fn infer(opts: &InferOptions) -> Result<InferSummary> {
    let LoadedModel { onnx, sidecar } = super::model::open(
        &opts.model,
        opts.device,
        opts.ort_lib.as_deref(),
        opts.use_model_metadata,
    )?;
    let (c, s, k) = (
        sidecar.model.in_channels,
        sidecar.size(),
        sidecar.model.num_classes,
    );
    let cfg = EngineConfig {
        max_batch: opts.batch.max(1),
        max_delay: std::time::Duration::ZERO,
        queue: 64,
    };
    let mut engine = super::engine::start(onnx, [c, s, s], k, cfg, None)?;
    infer_with(opts, &mut engine, sidecar)
}

/// Runs inference with a model already open (`runner`, described by `sidecar`): what
/// `dmnet-infer` does with a folder and `dmnet-infer serve` with one request.
pub fn infer_with(
    opts: &InferOptions,
    runner: &mut dyn SliceRunner,
    sidecar: ModelSidecar,
) -> Result<InferSummary> {
    let input = detect_input(&opts.input, &sidecar.channel_names)?;
    let facts = sidecar.facts(&opts.model);
    enforce(&facts, &input.facts, opts.allow_mismatch)?;
    let is_dicom = matches!(input.kind, InputKind::Dicom(_));
    if matches!(opts.format, OutputFormat::Seg | OutputFormat::Both) && !is_dicom {
        return Err(Error::invalid(
            &opts.input,
            format!(
                "--format {:?} writes DICOM SEG, which needs a DICOM input; this input is {}",
                opts.format,
                input.kind.name()
            )
            .to_lowercase(),
        ));
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let t0 = Instant::now();
    let mut run = Run {
        onnx: runner,
        sidecar,
        facts,
        opts,
        outputs: Vec::new(),
        failed: Vec::new(),
        metrics: Vec::new(),
        cases: 0,
        slices: 0,
    };
    for (path, why) in &input.bad {
        run.fail(path, format!("{}: {why}", path.display()));
    }
    match &input.kind {
        InputKind::Nifti(cases) => {
            let cases = cases.iter().map(|c| VolumeCase {
                name: c.name.clone(),
                input: c.files.first().cloned().unwrap_or_default(),
                source: Source::Nifti(&c.files),
                label: c.label.clone(),
            });
            run.volumes(cases.collect());
        }
        InputKind::Dicom(series) => run.volumes(dicom_cases(series)),
        InputKind::Shards(dir) => run.shards(dir)?,
    }
    run.finish(input.kind.name(), input.layout, t0)
}

/// DICOM series as cases, named after their folder (`-<i>` when a folder tree has several).
fn dicom_cases(series: &[DicomSeries]) -> Vec<VolumeCase<'_>> {
    let n = series.len();
    series
        .iter()
        .enumerate()
        .map(|(i, se)| {
            let folder = se.folder();
            let name = folder
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "series".into());
            VolumeCase {
                name: if n > 1 { format!("{name}-{i}") } else { name },
                input: folder,
                source: Source::Dicom(se),
                label: None,
            }
        })
        .collect()
}

impl Run<'_> {
    fn fail(&mut self, input: &Path, error: String) {
        tracing::error!("{error}");
        self.failed.push(CaseFailure {
            input: input.to_path_buf(),
            error,
        });
    }

    /// Runs every volume case with one progress bar; failures are recorded, not returned.
    fn volumes(&mut self, cases: Vec<VolumeCase>) {
        let bar = crate::cli::progress(cases.len() as u64, "infer");
        for case in &cases {
            bar.set_message(case.name.clone());
            let what = format!("case {}", case.name);
            match crate::error::catch_panic(&case.input, &what, || self.volume(case)) {
                Ok(()) => self.cases += 1,
                Err(e) => self.fail(&case.input, e.to_string()),
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
    }

    /// One volume case: read, check, segment, write its outputs, compare with its label.
    fn volume(&mut self, case: &VolumeCase) -> Result<()> {
        let vols = case.load(self.opts.timepoint)?;
        let data = DataFacts {
            source: case.input.clone(),
            num_channels: Some(vols.len()),
            modality: case.modality(),
            ..Default::default()
        };
        enforce(&self.facts, &data, self.opts.allow_mismatch)?;
        let first = vols
            .first()
            .ok_or_else(|| Error::invalid(&case.input, "a case without images"))?;
        let reference = Volume {
            data: Vec::new(),
            ..first.clone()
        };
        let opts = SegmentOptions {
            batch: self.opts.batch,
            keep_probabilities: self.opts.probabilities,
            tta: self.opts.tta,
        };
        let seg = volumes::segment_volume(self.onnx, &self.sidecar, vols, opts, |_| {})?;
        let mut staged = Staged::new(&self.opts.out);
        let (nifti, dicom_seg) = match (self.opts.format, &case.source) {
            (OutputFormat::Nifti, _) | (OutputFormat::Auto, Source::Nifti(_)) => (true, false),
            (OutputFormat::Seg, _) => (false, true),
            _ => (true, true),
        };
        if nifti {
            staged.write(&format!("{}.nii.gz", case.name), |p| {
                crate::volume::write_nifti_mask(p, &seg.mask, &reference)
            })?;
        }
        if let Some(p) = &seg.probabilities {
            staged.write(&format!("{}_probabilities.nii.gz", case.name), |path| {
                volumes::write_probabilities(path, p, &reference)
            })?;
        }
        if let (true, Source::Dicom(series)) = (dicom_seg, &case.source) {
            let input = seg::SegInput {
                series,
                volume: &reference,
                mask: &seg.mask,
                class_names: &self.sidecar.class_names,
                description: &self.opts.model.display().to_string(),
            };
            let name = format!("{}.seg.dcm", case.name);
            let written = staged.write(&name, |p| seg::write_seg(p, &input));
            match written {
                // `--format auto`: the SEG is a best effort beside the NIfTI mask.
                Err(e) if self.opts.format == OutputFormat::Auto => {
                    staged.discard_last();
                    tracing::warn!("no DICOM SEG for case {}: {e}", case.name);
                }
                r => r?,
            }
        }
        self.outputs.extend(staged.commit()?);
        self.slices += seg.slices;
        if let Some(label) = &case.label {
            // relative to --input, as prep records `source_path`, so that eval and infer
            // name a case alike (the file name when --input is the file itself)
            let source = case
                .input
                .strip_prefix(&self.opts.input)
                .ok()
                .filter(|p| !p.as_os_str().is_empty())
                .or_else(|| case.input.file_name().map(Path::new))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            match case_metrics::case_metrics(
                (&case.name, &source),
                &seg.mask,
                &reference,
                label,
                &self.sidecar,
                self.convention(),
            ) {
                Ok(score) => self.metrics.push(score),
                Err(e) => self.fail(
                    label,
                    format!("{e} (label of case {}; mask written)", case.name),
                ),
            }
        }
        Ok(())
    }

    /// The convention of the per-case metrics: `--convention`, else the model's.
    fn convention(&self) -> Convention {
        self.opts.convention.unwrap_or(self.sidecar.convention)
    }

    fn shards(&mut self, dir: &Path) -> Result<()> {
        let index = crate::shard::ShardIndex::open(dir)?;
        let keep = |s: crate::shard::Split| self.opts.split.is_none_or(|want| s == want);
        let total = index.rows.iter().filter(|r| keep(r.split)).count();
        let bar = crate::cli::progress(total as u64, "slices");
        let k = self.sidecar.model.num_classes;
        let mut acc = MetricsAccumulator::new(k);
        let mut cases = CaseCollector::new(k, self.convention());
        for r in index.rows.iter().filter(|r| keep(r.split) && r.labeled) {
            cases.expect(&r.patient_key, &r.source_path, 1);
        }
        let mut preds = Vec::new();
        let mut labeled = 0usize;
        let mut patients = std::collections::BTreeSet::new();
        let (s, kss) = (
            self.sidecar.size(),
            k * self.sidecar.size() * self.sidecar.size(),
        );
        for group in index.reader() {
            let rows: Vec<_> = group?.into_iter().filter(|r| keep(r.split)).collect();
            for chunk in rows.chunks(self.opts.batch.max(1)) {
                let (p, probs) =
                    shards::predict_rows(self.onnx, &self.sidecar, chunk, dir, self.opts.tta)?;
                shards::add_metrics(&mut acc, chunk, &p);
                for (i, r) in chunk.iter().enumerate() {
                    if r.mask.is_some() && r.height as usize == s {
                        cases.add(r, &probs[i * kss..(i + 1) * kss]);
                    }
                }
                labeled += chunk.iter().filter(|r| r.mask.is_some()).count();
                patients.extend(chunk.iter().map(|r| r.patient_key.clone()));
                bar.inc(chunk.len() as u64);
                preds.extend(p);
            }
        }
        bar.finish_and_clear();
        let mut staged = Staged::new(&self.opts.out);
        staged.write("predictions.parquet", |p| {
            shards::write_predictions(p, &preds)
        })?;
        if labeled > 0 {
            let m = shards::ShardMetrics {
                shards: dir.to_path_buf(),
                model: self.opts.model.clone(),
                split: self.opts.split,
                metrics: acc.finish(),
                cases: cases.finish(&self.sidecar.class_names),
            };
            staged.write("metrics.json", |p| write_json(p, &m))?;
        }
        self.outputs.extend(staged.commit()?);
        self.cases = patients.len();
        self.slices = preds.len();
        Ok(())
    }

    fn finish(mut self, kind: &str, layout: &str, t0: Instant) -> Result<InferSummary> {
        if !self.metrics.is_empty() {
            use crate::metrics::evaluate::{summarize, ScoreGrid, Units};
            let report = summarize(
                std::mem::take(&mut self.metrics),
                self.sidecar.model.num_classes,
                self.convention(),
                ScoreGrid::Source,
                Units::Mm,
                None,
                &self.sidecar.class_names,
            );
            tracing::info!("{}", report.footnote());
            let mut staged = Staged::new(&self.opts.out);
            staged.write("metrics.csv", |p| {
                crate::atomic::write_bytes(p, report.csv())
            })?;
            staged.write("metrics.json", |p| write_json(p, &report))?;
            self.outputs.extend(staged.commit()?);
        }
        let seconds = t0.elapsed().as_secs_f64();
        let summary = InferSummary {
            input_kind: kind.into(),
            layout: layout.into(),
            cases: self.cases,
            failed: self.failed,
            slices: self.slices,
            seconds,
            slices_per_second: self.slices as f64 / seconds.max(1e-9),
            provider: self.onnx.provider(),
            tta: self.opts.tta,
            outputs: self.outputs,
        };
        let mut staged = Staged::new(&self.opts.out);
        staged.write("summary.json", |p| write_json(p, &summary))?;
        staged.commit()?;
        Ok(summary)
    }
}

fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Error::invalid(path, format!("serialising: {e}")))?;
    crate::atomic::write_bytes(path, text + "\n")
}

/// Output files written under hidden temporary names, renamed together by [`Staged::commit`];
/// dropped uncommitted, the temporaries are removed.
struct Staged {
    dir: PathBuf,
    files: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    fn new(dir: &Path) -> Self {
        Staged {
            dir: dir.to_path_buf(),
            files: Vec::new(),
        }
    }

    /// Writes `name` through `write` (given the temporary path; it keeps the extension).
    fn write(&mut self, name: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let tmp = self
            .dir
            .join(format!(".partial-{}-{name}", std::process::id()));
        let fin = self.dir.join(name);
        self.files.push((tmp.clone(), fin));
        write(&tmp)
    }

    /// Forgets (and removes) the file of the last [`Staged::write`].
    fn discard_last(&mut self) {
        if let Some((tmp, _)) = self.files.pop() {
            let _ = std::fs::remove_file(tmp);
        }
    }

    fn commit(mut self) -> Result<Vec<PathBuf>> {
        let mut done = Vec::new();
        for (tmp, fin) in std::mem::take(&mut self.files) {
            std::fs::rename(&tmp, &fin).map_err(|e| Error::io(&fin, e))?;
            done.push(fin);
        }
        Ok(done)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.files {
            let _ = std::fs::remove_file(tmp);
        }
    }
}
