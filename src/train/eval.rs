//! Evaluation of a network on the labeled slices of a split (eval mode, average of the two
//! decoders' softmax; paper §4.2): slice-pooled metrics on the shard grid (IoU, mIoU, Dice;
//! what validation selects checkpoints on), the per-case metrics of `metrics::evaluate` (each
//! case on its source grid, under the run's convention) and the collapse diagnostics
//! (foreground fractions, agreement between the decoders).
use super::batch::to_tensors;
use super::data::{self, SliceRef, StreamSpec};
use crate::artifact::{CheckpointKind, RunConfig, RunDir};
use crate::cli::DeviceChoice;
use crate::metrics::{
    CaseCollector, CaseReport, Convention, Diagnostics, DiagnosticsAccumulator, MetricsAccumulator,
    SegMetrics,
};
use crate::model::DmNet;
use crate::shard::{ShardIndex, Split};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};

/// What one evaluation found.
#[derive(Debug, Clone)]
pub(crate) struct Evaluation {
    /// Slice-pooled metrics.
    pub metrics: SegMetrics,
    /// Foreground fractions and decoder agreement.
    pub diagnostics: Diagnostics,
    /// Per-case metrics (when asked for).
    pub cases: Option<CaseReport>,
    /// The same cases under the second convention, when asked for.
    pub cases_also: Option<CaseReport>,
}

/// The result of [`evaluate`] (`RUN/eval-<split>-<checkpoint>.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// Split evaluated.
    pub split: Split,
    /// Checkpoint evaluated.
    pub checkpoint: CheckpointKind,
    /// Validation round (`epoch`) the checkpoint was saved at.
    pub epoch: usize,
    /// Optimiser steps taken when it was saved.
    pub step: usize,
    /// Shard folder evaluated on.
    pub shards: PathBuf,
    /// Slice-pooled metrics on the shard grid (mIoU as the paper reports it).
    pub metrics: SegMetrics,
    /// Foreground fractions and decoder agreement.
    pub diagnostics: Diagnostics,
    /// Per-case metrics: grid, convention, units, per-class means, counts of missed and empty
    /// structures, and every case (also in `eval-<split>-<checkpoint>-cases.csv`).
    pub cases: CaseReport,
    /// The same cases under the run's `also_convention`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cases_also: Option<CaseReport>,
    /// Whether "best" is the best-on-validation checkpoint (false: the run had no validation
    /// split, and "best" is the last round's).
    #[serde(default = "yes")]
    pub best_selected_on_validation: bool,
}

fn yes() -> bool {
    true
}

/// What the per-case part of an evaluation needs: the convention and, per case, its row count
/// (so that each case is scored as soon as its last row arrives).
#[derive(Debug, Clone)]
pub(crate) struct CaseSpec {
    pub convention: Convention,
    pub rows: Vec<((String, String), usize)>,
    /// HD95/ASD too (false: overlap only, for validation rounds).
    pub distances: bool,
    /// A second convention scored from the same predictions.
    pub also: Option<Convention>,
}

impl CaseSpec {
    /// The cases of the labeled rows of `split` in `index`.
    pub(crate) fn of(index: &ShardIndex, split: Split, convention: Convention) -> CaseSpec {
        let mut rows: std::collections::BTreeMap<(String, String), usize> = Default::default();
        for r in index.rows.iter().filter(|r| r.split == split && r.labeled) {
            *rows
                .entry((r.patient_key.clone(), r.source_path.clone()))
                .or_default() += 1;
        }
        CaseSpec {
            convention,
            rows: rows.into_iter().collect(),
            distances: true,
            also: None,
        }
    }
}

/// Loads the weights of checkpoint `kind` of `run` into `vs` (the evaluated network's
/// variables; a checkpoint's other networks, a teacher or a second CPS network, are ignored).
pub(crate) fn load_weights(
    vs: &mut nn::VarStore,
    run: &RunDir,
    kind: CheckpointKind,
) -> Result<()> {
    let p = run.checkpoint(kind)?.weights;
    vs.load(&p).map_err(|e| Error::invalid(&p, e.to_string()))
}

/// Argmax class maps `[N·S·S]` on the CPU.
fn labels(p: &Tensor) -> Result<Vec<u8>> {
    let t = p
        .argmax(1, false)
        .to_kind(Kind::Uint8)
        .to_device(Device::Cpu);
    Vec::<u8>::try_from(t.flatten(0, -1)).map_err(|e| Error::Torch(e.to_string()))
}

/// Evaluates `net` on the labeled slices `refs`; `cases` adds the per-case metrics.
pub(crate) fn evaluate_net(
    net: &DmNet,
    (files, refs): (Arc<Vec<PathBuf>>, &[SliceRef]),
    batch: usize,
    device: Device,
    cases: Option<CaseSpec>,
    class_names: &[String],
) -> Result<Evaluation> {
    let cfg = net.config();
    let spec = StreamSpec {
        batch,
        steps: None,
        seed: None,
        drop_masks: false,
        window: 1,
        prefetch: 2,
    };
    let rx = data::stream(files, refs.to_vec(), spec);
    let (mut acc, mut diag) = (
        MetricsAccumulator::new(cfg.num_classes),
        DiagnosticsAccumulator::default(),
    );
    let collector_for = |c: &CaseSpec, convention: Convention| {
        let mut col = CaseCollector::new(cfg.num_classes, convention);
        col.distances = c.distances;
        for ((key, source), n) in &c.rows {
            col.expect(key, source, *n);
        }
        col
    };
    let mut collector_also = cases
        .as_ref()
        .and_then(|c| c.also.map(|conv| collector_for(c, conv)));
    let mut collector = cases.map(|c| collector_for(&c, c.convention));
    let (s, k) = (cfg.input_size, cfg.num_classes);
    let bar = crate::cli::progress(refs.len() as u64, "eval");
    let _g = tch::no_grad_guard();
    for records in rx {
        let records = records?;
        let b = to_tensors(&records, s, cfg.in_channels, device)?;
        let out = net.forward_t(&b.images, false);
        let probs = out.probabilities().to_kind(Kind::Float);
        let (pv, d1, d2) = (
            labels(&probs)?,
            labels(&out.logits1)?,
            labels(&out.logits2)?,
        );
        let pf = Vec::<f32>::try_from(probs.to_device(Device::Cpu).flatten(0, -1))
            .map_err(|e| Error::Torch(e.to_string()))?;
        let gt = b
            .masks
            .as_ref()
            .ok_or_else(|| Error::Torch("evaluation slices without masks".into()))?
            .to_kind(Kind::Uint8)
            .to_device(Device::Cpu);
        let gv = Vec::<u8>::try_from(gt.flatten(0, -1)).map_err(|e| Error::Torch(e.to_string()))?;
        for (i, r) in records.iter().enumerate() {
            let px = i * s * s..(i + 1) * s * s;
            acc.add(&pv[px.clone()], &gv[px.clone()]);
            diag.add(&pv[px.clone()], &gv[px.clone()], &d1[px.clone()], &d2[px]);
            let probs = &pf[i * k * s * s..(i + 1) * k * s * s];
            for c in collector.iter_mut().chain(collector_also.iter_mut()) {
                c.add(r, probs);
            }
        }
        bar.inc(records.len() as u64);
    }
    bar.finish_and_clear();
    Ok(Evaluation {
        metrics: acc.finish(),
        diagnostics: diag.finish(),
        cases: collector.map(|c| c.finish(class_names)),
        cases_also: collector_also.map(|c| c.finish(class_names)),
    })
}

/// Evaluates a run's checkpoint on the labeled slices of `split` of `shards` and writes
/// `RUN/eval-<split>-<checkpoint>.json` and `…-cases.csv` (and `RUN/eval-<split>.json` for the
/// best checkpoint). The shards must hold what the run was trained on (channels, modality,
/// classes, slice size: `artifact::compat`); `allow_mismatch` turns a difference into a warning.
/// `convention` overrides the run's.
pub fn evaluate(
    run_dir: &Path,
    shards: &Path,
    split: Split,
    kind: CheckpointKind,
    device: DeviceChoice,
    allow_mismatch: bool,
    convention: Option<Convention>,
) -> Result<EvalReport> {
    let rc = RunConfig::load(run_dir)?;
    crate::artifact::compat::check_run_against_shards(run_dir, &rc, shards, allow_mismatch)?;
    let run = RunDir::new(run_dir);
    let device = crate::device::select(device)?;
    let mut vs = nn::VarStore::new(device);
    let net = DmNet::new(&vs.root(), &rc.train.model)?;
    load_weights(&mut vs, &run, kind)?;
    let state = run.state(kind)?;
    let index = ShardIndex::open(shards)?;
    let refs = data::split_refs_of(&index, split)?;
    let convention = convention.unwrap_or(rc.train.convention);
    let mut cases = CaseSpec::of(&index, split, convention);
    cases.also = rc.train.also_convention.filter(|&c| c != convention);
    let ev = evaluate_net(
        &net,
        (index.files(), &refs),
        rc.train.eval_batch,
        device,
        Some(cases),
        &rc.data.label_names,
    )?;
    let best_on_val = rc.data.val > 0;
    if kind == CheckpointKind::Best && !best_on_val {
        tracing::warn!(
            "{}: the run had no validation split, so its \"best\" checkpoint is the last round's",
            run_dir.display()
        );
    }
    let report = EvalReport {
        split,
        checkpoint: kind,
        epoch: state.epoch,
        step: state.global_step,
        shards: shards.into(),
        metrics: ev.metrics,
        diagnostics: ev.diagnostics,
        cases: ev
            .cases
            .ok_or_else(|| Error::Torch("evaluation without cases".into()))?,
        cases_also: ev.cases_also,
        best_selected_on_validation: best_on_val,
    };
    write_report(run_dir, &report)?;
    Ok(report)
}

fn write_report(run_dir: &Path, report: &EvalReport) -> Result<()> {
    let (split, kind) = (&report.split, report.checkpoint.name());
    let text =
        serde_json::to_string_pretty(report).map_err(|e| Error::Torch(e.to_string()))? + "\n";
    let mut outs = vec![run_dir.join(format!("eval-{split}-{kind}.json"))];
    if report.checkpoint == CheckpointKind::Best {
        outs.push(run_dir.join(format!("eval-{split}.json")));
    }
    for p in outs {
        crate::atomic::write_bytes(&p, &text)?;
    }
    let csv = run_dir.join(format!("eval-{split}-{kind}-cases.csv"));
    crate::atomic::write_bytes(&csv, report.cases.csv())?;
    if let Some(also) = &report.cases_also {
        let csv = run_dir.join(format!("eval-{split}-{kind}-cases-{}.csv", also.convention));
        crate::atomic::write_bytes(&csv, also.csv())?;
    }
    Ok(())
}
