//! The batching engine: one thread owns the ONNX Runtime session and runs the slices it is
//! sent in batches of at most `max_batch` slices, merging the jobs of concurrent callers
//! (Triton's dynamic batcher: it waits at most `max_delay` after the first job for more).
//! `dmnet-infer` on a folder uses it with no delay (each volume's slices in runs of
//! `--max-batch`), `dmnet-infer serve` with a delay, a bounded queue and per-request
//! deadlines. Everything that runs slices through the model ([`super::tta::predict`],
//! volumes, shards) takes a [`SliceRunner`]: the session itself or an [`EngineHandle`].
use crate::artifact::sidecar::PROBABILITIES;
use crate::onnxrt::session::OnnxModel;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `[N, C, S, S]` slices through the model.
pub trait SliceRunner {
    /// The `probabilities` output of `x` (shape `shape`), with its dims.
    fn run(&mut self, x: Vec<f32>, shape: [usize; 4]) -> Result<(Vec<usize>, Vec<f32>)>;
    /// Checks a batch shape against the model; the error names `source`.
    fn check_input(&self, shape: &[usize], source: &Path) -> Result<()>;
    /// The model file (for messages).
    fn path(&self) -> &Path;
    /// The execution provider.
    fn provider(&self) -> String;
}

impl SliceRunner for OnnxModel {
    fn run(&mut self, x: Vec<f32>, shape: [usize; 4]) -> Result<(Vec<usize>, Vec<f32>)> {
        self.run_f32(x, shape, PROBABILITIES)
    }
    fn check_input(&self, shape: &[usize], source: &Path) -> Result<()> {
        OnnxModel::check_input(self, shape, source)
    }
    fn path(&self) -> &Path {
        OnnxModel::path(self)
    }
    fn provider(&self) -> String {
        self.provider.clone()
    }
}

/// How the engine batches.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// The most slices in one ONNX Runtime run (`--max-batch`).
    pub max_batch: usize,
    /// How long the first job of a batch waits for others (`--max-delay-ms`; 0: none).
    pub max_delay: Duration,
    /// Jobs that may wait in the queue; a job beyond is refused ([`Error::Overloaded`]).
    pub queue: usize,
}

/// What one batch did, for metrics: slices run, jobs merged, time in ONNX Runtime.
pub type BatchHook = Arc<dyn Fn(usize, usize, Duration) + Send + Sync>;

/// One job: a caller's slices and where the probabilities go.
struct Job {
    x: Vec<f32>,
    n: usize,
    deadline: Option<Instant>,
    reply: mpsc::Sender<Result<Vec<f32>>>,
}

/// A handle on the engine thread; cheap to clone, one per caller.
#[derive(Clone)]
pub struct EngineHandle {
    tx: SyncSender<Job>,
    queued: Arc<AtomicUsize>,
    chw: [usize; 3],
    k: usize,
    max_batch: usize,
    path: PathBuf,
    provider: String,
    /// The deadline of this caller's jobs (`None`: none).
    pub deadline: Option<Instant>,
}

/// Starts the engine thread on `model`, whose input is `[N, C, S, S]` and output K classes.
pub fn start(
    mut model: OnnxModel,
    chw: [usize; 3],
    k: usize,
    cfg: EngineConfig,
    hook: Option<BatchHook>,
) -> Result<EngineHandle> {
    let (tx, rx) = mpsc::sync_channel::<Job>(cfg.queue.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    let handle = EngineHandle {
        tx,
        queued: queued.clone(),
        chw,
        k,
        max_batch: cfg.max_batch.max(1),
        path: model.path().to_path_buf(),
        provider: model.provider.clone(),
        deadline: None,
    };
    let max_batch = cfg.max_batch.max(1);
    std::thread::Builder::new()
        .name("dmnet-engine".into())
        .spawn(move || {
            let mut pending: Option<Job> = None;
            loop {
                let first = match pending.take() {
                    Some(j) => j,
                    None => match rx.recv() {
                        Ok(j) => j,
                        Err(_) => return,
                    },
                };
                queued.fetch_sub(1, Ordering::SeqCst);
                let mut jobs = vec![first];
                let mut n = jobs[0].n;
                let until = Instant::now() + cfg.max_delay;
                while n < max_batch {
                    let next = match until.checked_duration_since(Instant::now()) {
                        Some(wait) if !wait.is_zero() => rx.recv_timeout(wait),
                        _ => rx.try_recv().map_err(|_| RecvTimeoutError::Timeout),
                    };
                    match next {
                        Ok(j) if n + j.n <= max_batch => {
                            queued.fetch_sub(1, Ordering::SeqCst);
                            n += j.n;
                            jobs.push(j);
                        }
                        Ok(j) => {
                            pending = Some(j);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                run_batch(&mut model, chw, k, jobs, hook.as_ref());
            }
        })
        .map_err(|e| Error::Runtime(format!("starting the inference engine thread: {e}")))?;
    Ok(handle)
}

/// Runs the live jobs of one batch as one ONNX Runtime run and answers each.
fn run_batch(
    model: &mut OnnxModel,
    [c, s, s2]: [usize; 3],
    k: usize,
    jobs: Vec<Job>,
    hook: Option<&BatchHook>,
) {
    let now = Instant::now();
    let (live, late): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|j| j.deadline.is_none_or(|d| d > now));
    for j in late {
        let _ = j.reply.send(Err(Error::Timeout(
            "the request's deadline passed while it waited in the queue".into(),
        )));
    }
    if live.is_empty() {
        return;
    }
    let n: usize = live.iter().map(|j| j.n).sum();
    let mut x = Vec::with_capacity(n * c * s * s2);
    for j in &live {
        x.extend_from_slice(&j.x);
    }
    let t = Instant::now();
    let out = model.run_f32(x, [n, c, s, s2], PROBABILITIES);
    if let Some(h) = hook {
        h(n, live.len(), t.elapsed());
    }
    match out {
        Ok((dims, p)) if dims == [n, k, s, s2] => {
            let mut at = 0;
            for j in live {
                let len = j.n * k * s * s2;
                let _ = j.reply.send(Ok(p[at..at + len].to_vec()));
                at += len;
            }
        }
        Ok((dims, _)) => {
            let msg = format!(
                "output `probabilities` is {dims:?}, the sidecar promises {:?}: the sidecar does not describe this model",
                [n, k, s, s2]
            );
            for j in live {
                let _ = j.reply.send(Err(Error::invalid(model.path(), msg.clone())));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for j in live {
                let _ = j.reply.send(Err(Error::Runtime(msg.clone())));
            }
        }
    }
}

impl EngineHandle {
    /// Jobs waiting in the queue now.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Submits `x` (`n` slices) in jobs of at most `max_batch` slices and waits for all.
    fn submit(&self, x: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        let per = self.chw.iter().product::<usize>();
        let mut replies = Vec::new();
        for chunk in x.chunks(self.max_batch * per.max(1)) {
            let (reply, rx) = mpsc::channel();
            let job = Job {
                x: chunk.to_vec(),
                n: chunk.len() / per.max(1),
                deadline: self.deadline,
                reply,
            };
            self.queued.fetch_add(1, Ordering::SeqCst);
            match self.tx.try_send(job) {
                Ok(()) => replies.push(rx),
                Err(TrySendError::Full(_)) => {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    return Err(Error::Overloaded(
                        "the inference queue is full; retry later".into(),
                    ));
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    return Err(Error::Runtime("the inference engine has stopped".into()));
                }
            }
        }
        let mut out = Vec::with_capacity(n * self.k * self.chw[1] * self.chw[2]);
        for rx in replies {
            let got = match self.deadline {
                Some(d) => rx
                    .recv_timeout(d.saturating_duration_since(Instant::now()))
                    .map_err(|_| Error::Timeout("the request's deadline passed".into()))?,
                None => rx
                    .recv()
                    .map_err(|_| Error::Runtime("the inference engine has stopped".into()))?,
            };
            out.extend(got?);
        }
        Ok(out)
    }
}

impl SliceRunner for EngineHandle {
    fn run(&mut self, x: Vec<f32>, shape: [usize; 4]) -> Result<(Vec<usize>, Vec<f32>)> {
        let [n, c, s, s2] = shape;
        if [c, s, s2] != self.chw || x.len() != n * c * s * s2 {
            return Err(Error::Shape {
                path: self.path.clone(),
                case: "input of the inference engine".into(),
                expected: vec![n, self.chw[0], self.chw[1], self.chw[2]],
                found: shape.to_vec(),
            });
        }
        let p = self.submit(x, n)?;
        Ok((vec![n, self.k, s, s2], p))
    }
    fn check_input(&self, shape: &[usize], source: &Path) -> Result<()> {
        if shape.len() == 4 && shape[1..] == self.chw {
            return Ok(());
        }
        Err(Error::Shape {
            path: source.to_path_buf(),
            case: format!("input of model {}", self.path.display()),
            expected: std::iter::once(shape.first().copied().unwrap_or(1))
                .chain(self.chw)
                .collect(),
            found: shape.to_vec(),
        })
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn provider(&self) -> String {
        self.provider.clone()
    }
}
