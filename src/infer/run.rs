//! `dmnet-infer --model M --input PATH --out DIR`: detects the input kind (a NIfTI file, a
//! folder of NIfTI files, a DICOM folder with one or more series, or a shard folder), opens
//! the model with its sidecar, runs every case and writes masks (volumes) or predictions +
//! metrics (shards), with a progress bar and a summary (cases, slices/s).
use super::input::{detect_input, InputKind};
use super::{shards, volumes};
use crate::artifact::sidecar::ModelSidecar;
use crate::cli::DeviceChoice;
use crate::metrics::MetricsAccumulator;
use crate::onnxrt::session::OnnxModel;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    /// Also write probability maps (volumes: 4-D float32 NIfTI).
    pub probabilities: bool,
    /// Shards: only rows of this split.
    pub split: Option<String>,
    /// ONNX Runtime library override.
    pub ort_lib: Option<PathBuf>,
    /// Time point of 4-D inputs (`None`: a 4-D input is an error); the mask has the 3-D
    /// volume's geometry.
    pub timepoint: Option<usize>,
}

/// The run summary (also written to `OUT/summary.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct InferSummary {
    /// Input kind (`nifti`, `dicom`, `shards`).
    pub input_kind: String,
    /// Cases (volumes) or shard rows' patients processed.
    pub cases: usize,
    /// Slices run through the model.
    pub slices: usize,
    /// Wall time (s).
    pub seconds: f64,
    /// Throughput.
    pub slices_per_second: f64,
    /// The execution provider used.
    pub provider: String,
    /// Files written.
    pub outputs: Vec<PathBuf>,
}

/// Runs inference.
pub fn infer(opts: &InferOptions) -> Result<InferSummary> {
    let sidecar = ModelSidecar::read_for(&opts.model)?;
    let kind = detect_input(&opts.input, &sidecar.channel_names)?;
    let kind_name = kind.name();
    let mut model = OnnxModel::open(&opts.model, opts.device, opts.ort_lib.as_deref())?;
    let s = sidecar.size();
    model.check_input(
        &[1, sidecar.model.in_channels, s, s],
        &ModelSidecar::path_for(&opts.model),
    )?;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let batch = opts.batch.max(1);
    let t0 = Instant::now();
    let mut outputs = Vec::new();
    let (cases, slices) = match kind {
        InputKind::Nifti(cases) => {
            let loaders = cases.iter().map(|case| {
                let load = || {
                    case.files
                        .iter()
                        .map(|f| crate::volume::read_nifti_at(f, opts.timepoint))
                        .collect()
                };
                (case.name.clone(), Box::new(load) as VolumeLoader)
            });
            let cases = loaders.collect();
            run_cases(&mut model, &sidecar, cases, opts, batch, &mut outputs)?
        }
        InputKind::Dicom(series) => {
            let n = series.len();
            let loaders = series.iter().enumerate().map(|(i, se)| {
                let name = se
                    .folder()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "series".into());
                let name = if n > 1 { format!("{name}-{i}") } else { name };
                let t = opts.timepoint;
                let load = move || crate::volume::read_dicom_at(se, t).map(|v| vec![v]);
                (name, Box::new(load) as VolumeLoader)
            });
            let cases = loaders.collect();
            run_cases(&mut model, &sidecar, cases, opts, batch, &mut outputs)?
        }
        InputKind::Shards(dir) => {
            run_shards(&mut model, &sidecar, &dir, opts, batch, &mut outputs)?
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    let summary = InferSummary {
        input_kind: kind_name.into(),
        cases,
        slices,
        seconds,
        slices_per_second: slices as f64 / seconds.max(1e-9),
        provider: model.provider.clone(),
        outputs,
    };
    let path = opts.out.join("summary.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&summary).expect("serialisable"),
    )
    .map_err(|e| Error::io(&path, e))?;
    Ok(summary)
}

/// Reads one case's channel volumes, in model channel order.
type VolumeLoader<'a> = Box<dyn FnOnce() -> Result<Vec<crate::volume::Volume>> + 'a>;

/// Runs every volume case with one progress bar; returns (cases, slices).
fn run_cases(
    model: &mut OnnxModel,
    sidecar: &ModelSidecar,
    cases: Vec<(String, VolumeLoader)>,
    opts: &InferOptions,
    batch: usize,
    outputs: &mut Vec<PathBuf>,
) -> Result<(usize, usize)> {
    let bar = crate::cli::progress(cases.len() as u64, "infer");
    let (n, mut slices) = (cases.len(), 0);
    for (name, load) in cases {
        bar.set_message(name.clone());
        slices += run_volume(model, sidecar, load()?, &name, opts, batch, outputs)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((n, slices))
}

fn run_volume(
    model: &mut OnnxModel,
    sidecar: &ModelSidecar,
    vols: Vec<crate::volume::Volume>,
    name: &str,
    opts: &InferOptions,
    batch: usize,
    outputs: &mut Vec<PathBuf>,
) -> Result<usize> {
    let first = vols
        .first()
        .ok_or_else(|| Error::invalid(&opts.input, "a case without images"))?;
    let reference = crate::volume::Volume {
        data: Vec::new(),
        ..first.clone()
    };
    let seg = volumes::segment_volume(model, sidecar, vols, batch, opts.probabilities, |_| {})?;
    let out = opts.out.join(format!("{name}.nii.gz"));
    crate::volume::write_nifti_mask(&out, &seg.mask, &reference)?;
    outputs.push(out);
    if let Some(p) = seg.probabilities {
        let out = opts.out.join(format!("{name}_probabilities.nii.gz"));
        volumes::write_probabilities(&out, &p, &reference)?;
        outputs.push(out);
    }
    Ok(seg.slices)
}

fn run_shards(
    model: &mut OnnxModel,
    sidecar: &ModelSidecar,
    dir: &Path,
    opts: &InferOptions,
    batch: usize,
    outputs: &mut Vec<PathBuf>,
) -> Result<(usize, usize)> {
    let bar = crate::cli::progress(0, "slices");
    let mut acc = MetricsAccumulator::new(sidecar.model.num_classes);
    let mut preds = Vec::new();
    let mut labeled = 0usize;
    let mut patients = std::collections::BTreeSet::new();
    for group in crate::shard::schema::read_shards(dir)? {
        let rows: Vec<_> = group?
            .into_iter()
            .filter(|r| opts.split.as_ref().is_none_or(|s| &r.split == s))
            .collect();
        for chunk in rows.chunks(batch) {
            let p = shards::predict_rows(model, sidecar, chunk, dir)?;
            shards::add_metrics(&mut acc, chunk, &p);
            labeled += chunk.iter().filter(|r| r.mask.is_some()).count();
            patients.extend(chunk.iter().map(|r| r.patient_key.clone()));
            bar.inc_length(chunk.len() as u64);
            bar.inc(chunk.len() as u64);
            preds.extend(p);
        }
    }
    bar.finish_and_clear();
    let out = opts.out.join("predictions.parquet");
    shards::write_predictions(&out, &preds)?;
    outputs.push(out);
    if labeled > 0 {
        let m = shards::ShardMetrics {
            shards: dir.to_path_buf(),
            model: opts.model.clone(),
            split: opts.split.clone(),
            metrics: acc.finish(),
        };
        let out = opts.out.join("metrics.json");
        std::fs::write(
            &out,
            serde_json::to_string_pretty(&m).expect("serialisable"),
        )
        .map_err(|e| Error::io(&out, e))?;
        outputs.push(out);
    }
    Ok((patients.len(), preds.len()))
}
