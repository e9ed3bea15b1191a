//! Evaluation of a network on the labeled slices of a split (eval mode, average of the two
//! decoders' softmax, argmax; paper §4.2): slice-pooled metrics (IoU, mIoU, Dice, HD95), the
//! per-case 3-D metrics of the LA literature (Dice, Jaccard, HD95, ASD per volume) and the
//! collapse diagnostics (foreground fractions, agreement between the decoders).
use super::batch::to_tensors;
use super::data::{self, SliceRef, StreamSpec};
use super::trainer::load_weights;
use crate::artifact::{CheckpointKind, RunConfig, RunDir};
use crate::cli::DeviceChoice;
use crate::metrics::{
    CaseAccumulator, CaseMetrics, CaseSummary, Diagnostics, DiagnosticsAccumulator,
    MetricsAccumulator, SegMetrics,
};
use crate::model::DmNet;
use crate::shard::schema::SliceRecord;
use crate::shard::Split;
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
    /// Per-case 3-D metrics (when asked for).
    pub cases: Vec<CaseMetrics>,
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
    /// Slice-pooled metrics.
    pub metrics: SegMetrics,
    /// Foreground fractions and decoder agreement.
    pub diagnostics: Diagnostics,
    /// Means of the per-case metrics.
    pub case_summary: CaseSummary,
    /// Per-case 3-D metrics (also in `eval-<split>-<checkpoint>-cases.csv`).
    pub cases: Vec<CaseMetrics>,
}

/// Argmax class maps `[N·S·S]` on the CPU.
fn labels(p: &Tensor) -> Result<Vec<u8>> {
    let t = p
        .argmax(1, false)
        .to_kind(Kind::Uint8)
        .to_device(Device::Cpu);
    Vec::<u8>::try_from(t.flatten(0, -1)).map_err(|e| Error::Torch(e.to_string()))
}

/// Where a slice sits in its case: case name, slice index, spacing (rows, cols, slices).
fn case_of(r: &SliceRecord) -> (String, i64, [f64; 3]) {
    let axis = usize::try_from(r.slice_axis).unwrap_or(2).min(2);
    (
        format!("{}/{}", r.patient_key, r.source_path),
        r.slice_index as i64,
        [r.pixel_spacing[0], r.pixel_spacing[1], r.spacing[axis]],
    )
}

/// Evaluates `net` on the labeled slices `refs`; `cases` adds the per-case 3-D metrics.
pub(crate) fn evaluate_net(
    net: &DmNet,
    (files, refs): (Arc<Vec<PathBuf>>, &[SliceRef]),
    batch: usize,
    device: Device,
    cases: bool,
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
    let mut per_case = CaseAccumulator::new(cfg.num_classes);
    let s = cfg.input_size;
    let bar = crate::cli::progress(refs.len() as u64, "eval");
    let _g = tch::no_grad_guard();
    for records in rx {
        let records = records?;
        let b = to_tensors(&records, s, cfg.in_channels, device)?;
        let out = net.forward_t(&b.images, false);
        let (pv, d1, d2) = (
            labels(&out.probabilities())?,
            labels(&out.logits1)?,
            labels(&out.logits2)?,
        );
        let gt = b
            .masks
            .as_ref()
            .ok_or_else(|| Error::Torch("evaluation slices without masks".into()))?
            .to_kind(Kind::Uint8)
            .to_device(Device::Cpu);
        let gv = Vec::<u8>::try_from(gt.flatten(0, -1)).map_err(|e| Error::Torch(e.to_string()))?;
        for (i, r) in records.iter().enumerate() {
            let px = i * s * s..(i + 1) * s * s;
            acc.add(&pv[px.clone()], &gv[px.clone()], s, s, b.spacing[i]);
            diag.add(
                &pv[px.clone()],
                &gv[px.clone()],
                &d1[px.clone()],
                &d2[px.clone()],
            );
            if cases {
                let (name, idx, spacing) = case_of(r);
                per_case.add(&name, idx, &pv[px.clone()], &gv[px], (s, s), spacing);
            }
        }
        bar.inc(records.len() as u64);
    }
    bar.finish_and_clear();
    Ok(Evaluation {
        metrics: acc.finish(),
        diagnostics: diag.finish(),
        cases: per_case.finish(),
    })
}

/// Evaluates a run's checkpoint on the labeled slices of `split` of `shards` and writes
/// `RUN/eval-<split>-<checkpoint>.json` and `…-cases.csv` (and `RUN/eval-<split>.json` for the
/// best checkpoint). The shards must hold what the run was trained on (channels, modality,
/// classes, slice size: `artifact::compat`); `allow_mismatch` turns a difference into a warning.
pub fn evaluate(
    run_dir: &Path,
    shards: &Path,
    split: Split,
    kind: CheckpointKind,
    device: DeviceChoice,
    allow_mismatch: bool,
) -> Result<EvalReport> {
    let rc = RunConfig::load(run_dir)?;
    crate::artifact::compat::check_run_against_shards(run_dir, &rc, shards, allow_mismatch)?;
    let run = RunDir::new(run_dir);
    let device = crate::device::select(device)?;
    let mut vs = nn::VarStore::new(device);
    let net = DmNet::new(&vs.root(), &rc.train.model)?;
    load_weights(&mut vs, &run, kind)?;
    let state = run.state(kind)?;
    let (files, refs) = data::split_refs(shards, split)?;
    let ev = evaluate_net(&net, (files, &refs), rc.train.eval_batch, device, true)?;
    let report = EvalReport {
        split,
        checkpoint: kind,
        epoch: state.epoch,
        step: state.global_step,
        shards: shards.into(),
        metrics: ev.metrics,
        diagnostics: ev.diagnostics,
        case_summary: CaseSummary::of(&ev.cases),
        cases: ev.cases,
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
    crate::atomic::write_bytes(&csv, cases_csv(&report.cases))
}

/// One row per case and foreground class.
fn cases_csv(cases: &[CaseMetrics]) -> String {
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.4}"));
    let mut out = String::from(
        "case,class,slices,dice,jaccard,hd95_mm,asd_mm,predicted_voxels,true_voxels\n",
    );
    for c in cases {
        for (i, m) in c.classes.iter().enumerate() {
            out += &format!(
                "{},{},{},{:.4},{:.4},{},{},{},{}\n",
                c.case,
                i + 1,
                c.slices,
                m.dice,
                m.jaccard,
                opt(m.hd95_mm),
                opt(m.asd_mm),
                m.predicted_voxels,
                m.true_voxels
            );
        }
    }
    out
}
