//! Training data from shard folders (`dmnet-prep ingest`, `schemas/shard-v2.md`): the index of
//! [`crate::shard::ShardIndex`] (the folder validated once, small columns only), the
//! labeled-fraction selection (paper §4.1: 10/30/50/100 % of the training labeled slices,
//! seeded), and batch streams that read one row group at a time through
//! [`crate::shard::PartCache`] (each footer parsed once per stream) on a separate thread into a
//! bounded prefetch queue, shuffled per epoch with a seed (row-group order permuted, then a
//! shuffle buffer). Torch-free: batches are plain vectors.
use crate::shard::reader::{IndexRow, PartCache, ShardIndex};
use crate::shard::schema::SliceRecord;
use crate::shard::Split;
use crate::{Error, Result};
use crossbeam_channel::{bounded, Receiver};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::shard::reader::SliceRef;

/// Which slices each stream reads.
#[derive(Debug, Clone)]
pub struct DataPlan {
    /// The shard files, sorted.
    pub files: Arc<Vec<PathBuf>>,
    /// Training slices used with their labels (after the labeled fraction).
    pub labeled: Vec<SliceRef>,
    /// Training slices used without labels: unlabeled rows plus labeled rows left out by the
    /// fraction (their masks are dropped).
    pub unlabeled: Vec<SliceRef>,
    /// Labeled training slices before the fraction was applied.
    pub labeled_total: usize,
}

/// The labeled slices of one split (validation / test), in file order.
pub(crate) fn split_refs_of(index: &ShardIndex, split: Split) -> Result<Vec<SliceRef>> {
    let refs: Vec<SliceRef> = index
        .rows
        .iter()
        .filter(|r| r.split == split && r.labeled)
        .map(|r| r.at)
        .collect();
    if refs.is_empty() {
        return Err(Error::invalid(
            &index.dir,
            format!("no labeled slices in split \"{split}\""),
        ));
    }
    Ok(refs)
}

/// Opens (validates) `dir` and returns its files and the labeled slices of one split.
pub fn split_refs(dir: &Path, split: Split) -> Result<(Arc<Vec<PathBuf>>, Vec<SliceRef>)> {
    let index = ShardIndex::open(dir)?;
    let refs = split_refs_of(&index, split)?;
    Ok((index.files(), refs))
}

impl DataPlan {
    /// Indexes `dir` and selects `fraction` (0–1] of the training labeled slices: the slices,
    /// sorted by (patient key, slice index), are shuffled with `seed` and the first
    /// ⌈fraction·n⌉ kept (at least one).
    pub fn build(dir: &Path, fraction: f64, seed: u64) -> Result<DataPlan> {
        Self::check_fraction(fraction)?;
        DataPlan::from_index(&ShardIndex::open(dir)?, None, fraction, seed)
    }

    /// The labeled training patients to keep: the first `n` in the folder's patient order
    /// (`_splits.json`'s `train` list: the input's list order for SSL4MIS folders, prep's
    /// seeded order otherwise; sorted keys shuffled with `seed` when the folder has no split
    /// file), among the patients that have labeled training slices.
    fn patients(index: &ShardIndex, lab: &[&IndexRow], n: usize, seed: u64) -> Result<Vec<String>> {
        let have: std::collections::BTreeSet<&str> =
            lab.iter().map(|r| r.patient_key.as_str()).collect();
        let mut order: Vec<String> = index
            .train_order
            .iter()
            .filter(|k| have.contains(k.as_str()))
            .cloned()
            .collect();
        if order.len() < have.len() {
            order = have.iter().map(|k| k.to_string()).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x9a71_e475));
        }
        if n > order.len() {
            return Err(Error::invalid(
                &index.dir,
                format!(
                    "labeled_patients = {n}, but the training split has {} labeled patients",
                    order.len()
                ),
            ));
        }
        order.truncate(n);
        Ok(order)
    }

    fn check_fraction(fraction: f64) -> Result<()> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(Error::Usage(format!(
                "labeled fraction must be in (0, 1], got {fraction}"
            )));
        }
        Ok(())
    }

    /// [`DataPlan::build`] on an index already open, keeping the labels of the first
    /// `patients` labeled training patients only (their other labeled slices join the
    /// unlabeled stream) before the slice `fraction` applies.
    pub(crate) fn from_index(
        index: &ShardIndex,
        patients: Option<usize>,
        fraction: f64,
        seed: u64,
    ) -> Result<DataPlan> {
        Self::check_fraction(fraction)?;
        let rows = &index.rows;
        let mut lab: Vec<&IndexRow> = rows
            .iter()
            .filter(|r| r.split == Split::Train && r.labeled)
            .collect();
        if lab.is_empty() {
            return Err(Error::invalid(
                &index.dir,
                "no labeled slices in split \"train\"",
            ));
        }
        let mut dropped: Vec<SliceRef> = Vec::new();
        if let Some(n) = patients {
            let keep = Self::patients(index, &lab, n, seed)?;
            let (kept, out): (Vec<&IndexRow>, Vec<&IndexRow>) =
                lab.into_iter().partition(|r| keep.contains(&r.patient_key));
            lab = kept;
            dropped = out.iter().map(|r| r.at).collect();
        }
        lab.sort_by(|a, b| (&a.patient_key, a.slice_index).cmp(&(&b.patient_key, b.slice_index)));
        lab.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_f4ac));
        let keep = ((fraction * lab.len() as f64).ceil() as usize).clamp(1, lab.len());
        let labeled: Vec<SliceRef> = lab[..keep].iter().map(|r| r.at).collect();
        let mut unlabeled: Vec<SliceRef> = lab[keep..].iter().map(|r| r.at).collect();
        unlabeled.extend(dropped);
        unlabeled.extend(
            rows.iter()
                .filter(|r| r.split == Split::Train && !r.labeled)
                .map(|r| r.at),
        );
        let (mut labeled, labeled_total) = (labeled, lab.len());
        labeled.sort();
        unlabeled.sort();
        Ok(DataPlan {
            files: index.files(),
            labeled,
            unlabeled,
            labeled_total,
        })
    }
}

/// What a stream yields: a batch of slices (masks dropped for unlabeled streams).
pub(crate) type Batch = Vec<SliceRecord>;

/// How a stream walks its slices.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Slices per batch.
    pub batch: usize,
    /// Batches to yield; the slices are cycled (a new shuffle each pass) when they run out.
    /// `None`: one pass, last batch possibly short (evaluation).
    pub steps: Option<usize>,
    /// Shuffle seed; `None` keeps file order.
    pub seed: Option<u64>,
    /// Drop the masks (unlabeled use of labeled slices).
    pub drop_masks: bool,
    /// Shuffle-buffer size in slices.
    pub window: usize,
    /// Prefetch queue capacity in batches.
    pub prefetch: usize,
}

/// Groups slice refs by (file, row group).
fn groups(refs: &[SliceRef]) -> Vec<(usize, usize, Vec<usize>)> {
    let mut sorted = refs.to_vec();
    sorted.sort();
    let mut out: Vec<(usize, usize, Vec<usize>)> = Vec::new();
    for r in sorted {
        match out.last_mut() {
            Some((f, g, rows)) if *f == r.file && *g == r.row_group => rows.push(r.row),
            _ => out.push((r.file, r.row_group, vec![r.row])),
        }
    }
    out
}

/// The producer's state between row groups.
struct Producer {
    tx: crossbeam_channel::Sender<Result<Batch>>,
    rng: ChaCha8Rng,
    spec: StreamSpec,
    buffer: Vec<SliceRecord>,
    pending: Batch,
    sent: usize,
}

impl Producer {
    /// Moves slices from the buffer into batches while it holds at least `keep` slices.
    /// Returns false when the stream is finished (enough batches, or the receiver is gone).
    fn pump(&mut self, keep: usize) -> bool {
        let shuffled = self.spec.seed.is_some();
        while !self.buffer.is_empty() && self.buffer.len() >= keep {
            let r = if shuffled {
                let i = self.rng.random_range(0..self.buffer.len());
                self.buffer.swap_remove(i)
            } else {
                self.buffer.remove(0)
            };
            self.pending.push(r);
            if self.pending.len() == self.spec.batch {
                if self.tx.send(Ok(std::mem::take(&mut self.pending))).is_err() {
                    return false;
                }
                self.sent += 1;
                if self.spec.steps.is_some_and(|s| self.sent >= s) {
                    return false;
                }
            }
        }
        true
    }

    fn run(mut self, files: Arc<Vec<PathBuf>>, refs: &[SliceRef]) {
        let mut parts = PartCache::new(files);
        let mut groups = groups(refs);
        loop {
            if self.spec.seed.is_some() {
                groups.shuffle(&mut self.rng);
            }
            for (fi, rg, rows) in &groups {
                let records = match parts.read(*fi, *rg) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = self.tx.send(Err(e));
                        return;
                    }
                };
                let mut records: Vec<Option<SliceRecord>> = records.into_iter().map(Some).collect();
                for &row in rows {
                    if let Some(mut r) = records.get_mut(row).and_then(Option::take) {
                        if self.spec.drop_masks {
                            r.mask = None;
                        }
                        self.buffer.push(r);
                    }
                }
                if !self.pump(self.spec.window.max(1)) {
                    return;
                }
            }
            if !self.pump(1) {
                return; // end of a pass: drain the shuffle buffer
            }
            if self.spec.steps.is_none() {
                if !self.pending.is_empty() {
                    let _ = self.tx.send(Ok(std::mem::take(&mut self.pending)));
                }
                return;
            }
        }
    }
}

/// Starts a producer thread and returns the receiving end of its bounded queue. The thread
/// stops when the receiver is dropped.
pub fn stream(
    files: Arc<Vec<PathBuf>>,
    refs: Vec<SliceRef>,
    spec: StreamSpec,
) -> Receiver<Result<Batch>> {
    let (tx, rx) = bounded(spec.prefetch.max(1));
    if refs.is_empty() || spec.batch == 0 {
        return rx; // tx dropped: the stream is empty
    }
    std::thread::spawn(move || {
        let producer = Producer {
            tx,
            rng: ChaCha8Rng::seed_from_u64(spec.seed.unwrap_or(0)),
            spec,
            buffer: Vec::new(),
            pending: Vec::new(),
            sent: 0,
        };
        producer.run(files, &refs);
    });
    rx
}
