//! `dmnet-infer serve`: the model kept warm behind HTTP (feature `serve`; docs/serving.md).
//! - The Open Inference Protocol (KServe v2 / Triton) over REST: server and model metadata,
//!   liveness and readiness, `POST /v2/models/{name}/infer` with JSON tensors and the binary
//!   tensor data extension (`Inference-Header-Content-Length`).
//! - `POST /v1/segment`: a NIfTI (`.nii`, `.nii.gz`) or a zipped DICOM series in, the mask out
//!   (NIfTI in the source geometry, or DICOM SEG with `Accept: application/dicom`), through
//!   [`super::run::infer_with`]: the batch command's preprocessing, compatibility check, TTA
//!   and writers, on a per-request temporary folder.
//! - Every slice goes through the one batching engine ([`super::engine`]): concurrent
//!   requests share ONNX Runtime runs of up to `--max-batch` slices; a full queue is `503` with
//!   `Retry-After`; each request has a deadline.
//! - `GET /metrics` (Prometheus text), one log line per request (an id, never a file or
//!   patient name), an optional bearer token, limits on bodies and on what they expand to,
//!   and on SIGTERM: readiness off, then drain and exit 0.
use super::engine::{self, BatchHook, EngineConfig, EngineHandle};
use super::model::LoadedModel;
use super::run::{infer_with, InferOptions, OutputFormat};
use super::tta::Tta;
use crate::artifact::sidecar::{ModelSidecar, PROBABILITIES};
use crate::cli::DeviceChoice;
use crate::{Error, Result};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The ONNX model (its sidecar beside it).
    pub model: PathBuf,
    /// The name clients use (default: the model file's stem).
    pub name: Option<String>,
    /// Address to listen on (default 127.0.0.1:8000).
    pub listen: String,
    /// Execution provider.
    pub device: DeviceChoice,
    /// ONNX Runtime library override.
    pub ort_lib: Option<PathBuf>,
    /// The most slices in one ONNX Runtime run.
    pub max_batch: usize,
    /// How long a batch waits for more slices.
    pub max_delay: Duration,
    /// Jobs that may wait; beyond, 503.
    pub queue: usize,
    /// A request's deadline (body, queue and inference).
    pub timeout: Duration,
    /// Largest request body (bytes): 413 beyond.
    pub max_body: usize,
    /// Largest decompressed NIfTI or unzipped series (bytes): 413 beyond.
    pub max_expanded: u64,
    /// Most entries in a DICOM zip.
    pub max_zip_entries: usize,
    /// Bearer token required on every endpoint but the health probes.
    pub token: Option<String>,
    /// Test-time augmentation of `/v1/segment`.
    pub tta: Tta,
    /// Seconds between readiness off and the end of accepting, on SIGTERM.
    pub drain: Duration,
    /// Follow the model's embedded metadata when the sidecar disagrees.
    pub use_model_metadata: bool,
}

/// Prometheus metrics of the server.
struct Metrics {
    registry: prometheus::Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    queue: IntGauge,
    batch: Histogram,
    ort: Histogram,
}

impl Metrics {
    fn new() -> std::result::Result<Self, prometheus::Error> {
        let registry = prometheus::Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "dmnet_requests_total",
                "HTTP requests by endpoint and status",
            ),
            &["endpoint", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("dmnet_request_seconds", "request latency by endpoint").buckets(
                vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ],
            ),
            &["endpoint"],
        )?;
        let queue = IntGauge::new("dmnet_queue_depth", "inference jobs waiting in the queue")?;
        let batch = Histogram::with_opts(
            HistogramOpts::new("dmnet_batch_slices", "slices per ONNX Runtime run")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )?;
        let ort = Histogram::with_opts(
            HistogramOpts::new("dmnet_onnxruntime_seconds", "time in ONNX Runtime per run")
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(queue.clone()))?;
        registry.register(Box::new(batch.clone()))?;
        registry.register(Box::new(ort.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            queue,
            batch,
            ort,
        })
    }
}

/// The shared state of the handlers.
struct App {
    name: String,
    input_name: String,
    sidecar: ModelSidecar,
    engine: EngineHandle,
    ready: AtomicBool,
    metrics: Metrics,
    opts: ServeOptions,
    next_id: AtomicU64,
}

/// An error answered as `{"error": "..."}` with its status.
struct Reply(StatusCode, String);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut r = (self.0, axum::Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

fn bad(msg: impl Into<String>) -> Reply {
    Reply(StatusCode::BAD_REQUEST, msg.into())
}

/// The status of a dmnet error met while serving a request.
fn reply_of(e: Error) -> Reply {
    let status = match &e {
        Error::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        Error::Runtime(_) | Error::Panic { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    Reply(status, e.to_string())
}

/// Runs the server until SIGTERM or Ctrl-C (see the module docs).
pub fn serve(opts: ServeOptions) -> Result<()> {
    let LoadedModel { onnx, sidecar } = super::model::open(
        &opts.model,
        opts.device,
        opts.ort_lib.as_deref(),
        opts.use_model_metadata,
    )?;
    let name = opts.name.clone().unwrap_or_else(|| {
        opts.model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let metrics = Metrics::new().map_err(|e| Error::Runtime(format!("metrics: {e}")))?;
    let (batch, ort) = (metrics.batch.clone(), metrics.ort.clone());
    let hook: BatchHook = Arc::new(move |n, _jobs, t| {
        batch.observe(n as f64);
        ort.observe(t.as_secs_f64());
    });
    let (c, s, k) = (
        sidecar.model.in_channels,
        sidecar.size(),
        sidecar.model.num_classes,
    );
    let input_name = onnx.input_name.clone();
    let cfg = EngineConfig {
        max_batch: opts.max_batch.max(1),
        max_delay: opts.max_delay,
        queue: opts.queue.max(1),
    };
    let engine = engine::start(onnx, [c, s, s], k, cfg, Some(hook))?;
    let app = Arc::new(App {
        name,
        input_name,
        sidecar,
        engine,
        ready: AtomicBool::new(false),
        metrics,
        opts: opts.clone(),
        next_id: AtomicU64::new(1),
    });
    warm_up(&app)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("tokio runtime: {e}")))?;
    rt.block_on(listen(app))
}

/// One inference of a zero batch: readiness waits for it.
fn warm_up(app: &App) -> Result<()> {
    let (c, s) = (app.sidecar.model.in_channels, app.sidecar.size());
    let mut h = app.engine.clone();
    let t = Instant::now();
    engine::SliceRunner::run(&mut h, vec![0.0; c * s * s], [1, c, s, s])?;
    tracing::info!(
        "model {} warm: one slice in {:.0} ms",
        app.name,
        t.elapsed().as_secs_f64() * 1e3
    );
    app.ready.store(true, Ordering::SeqCst);
    Ok(())
}

async fn listen(app: Arc<App>) -> Result<()> {
    let addr = app.opts.listen.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Error::io(PathBuf::from(&addr), e))?;
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
    tracing::info!(
        "serving model {} on http://{addr} (max batch {}, max delay {} ms, queue {})",
        app.name,
        app.opts.max_batch,
        app.opts.max_delay.as_millis(),
        app.opts.queue
    );
    let router = routes(app.clone());
    let shutdown = {
        let app = app.clone();
        async move {
            wait_for_signal().await;
            app.ready.store(false, Ordering::SeqCst);
            tracing::info!(
                "stopping: readiness off, draining for {} s",
                app.opts.drain.as_secs_f64()
            );
            tokio::time::sleep(app.opts.drain).await;
        }
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Runtime(format!("http server: {e}")))?;
    tracing::info!("stopped: every request in flight was answered");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_v),
        )
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v))
        .route("/v1/segment", post(segment))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn_with_state(app.clone(), around))
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}

/// The endpoint label of a path (metrics, logs): no model or file names.
fn endpoint_of(path: &str) -> &'static str {
    match path {
        "/v2" => "server_metadata",
        "/v2/health/live" => "live",
        "/v2/health/ready" => "ready",
        "/v1/segment" => "segment",
        "/metrics" => "metrics",
        p if p.ends_with("/infer") => "infer",
        p if p.ends_with("/ready") => "model_ready",
        p if p.starts_with("/v2/models/") => "model_metadata",
        _ => "other",
    }
}

/// Authentication, the request's log line and its metrics.
async fn around(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let id = app.next_id.fetch_add(1, Ordering::SeqCst);
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let endpoint = endpoint_of(&path);
    let t = Instant::now();
    let open = path.starts_with("/v2/health/");
    let authorised = match (&app.opts.token, open) {
        (Some(token), false) => req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|got| constant_time_eq(got.as_bytes(), token.as_bytes())),
        _ => true,
    };
    let resp = if authorised {
        next.run(req).await
    } else {
        let mut r = Reply(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required (Authorization: Bearer <token>)".into(),
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    };
    let status = resp.status().as_u16();
    let secs = t.elapsed().as_secs_f64();
    app.metrics
        .requests
        .with_label_values(&[endpoint, &status.to_string()])
        .inc();
    app.metrics
        .latency
        .with_label_values(&[endpoint])
        .observe(secs);
    tracing::info!(
        "request {id}: {method} {endpoint} -> {status} in {:.1} ms",
        secs * 1e3
    );
    resp
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn server_metadata() -> axum::Json<Value> {
    axum::Json(json!({
        "name": "dmnet",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

async fn server_ready(State(app): State<Arc<App>>) -> StatusCode {
    if app.ready.load(Ordering::SeqCst) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn known(app: &App, name: &str) -> std::result::Result<(), Reply> {
    if name == app.name {
        Ok(())
    } else {
        Err(Reply(
            StatusCode::NOT_FOUND,
            format!("unknown model {name:?}: this server serves {:?}", app.name),
        ))
    }
}

fn known_version(version: &str) -> std::result::Result<(), Reply> {
    if version == "1" || version.is_empty() {
        Ok(())
    } else {
        Err(Reply(
            StatusCode::NOT_FOUND,
            format!("unknown model version {version:?}: the model has version \"1\""),
        ))
    }
}

async fn model_ready(
    State(app): State<Arc<App>>,
    UrlPath(name): UrlPath<String>,
) -> std::result::Result<StatusCode, Reply> {
    known(&app, &name)?;
    Ok(server_ready(State(app)).await)
}

async fn model_ready_v(
    State(app): State<Arc<App>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
) -> std::result::Result<StatusCode, Reply> {
    known_version(&version)?;
    model_ready(State(app), UrlPath(name)).await
}

async fn model_metadata(
    State(app): State<Arc<App>>,
    UrlPath(name): UrlPath<String>,
) -> std::result::Result<axum::Json<Value>, Reply> {
    known(&app, &name)?;
    let (c, s, k) = (
        app.sidecar.model.in_channels,
        app.sidecar.size(),
        app.sidecar.model.num_classes,
    );
    Ok(axum::Json(json!({
        "name": app.name,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": app.input_name, "datatype": "FP32", "shape": [-1, c, s, s]}],
        "outputs": [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, k, s, s]}],
        "parameters": {
            "channel_names": app.sidecar.channel_names,
            "class_names": app.sidecar.class_names,
        },
    })))
}

async fn model_metadata_v(
    State(app): State<Arc<App>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
) -> std::result::Result<axum::Json<Value>, Reply> {
    known_version(&version)?;
    model_metadata(State(app), UrlPath(name)).await
}

/// Reads a request body within the server's deadline and size limit. A body over the limit
/// is still read (and dropped) up to four times the limit, so that the client, still
/// sending, gets the 413 rather than a reset connection.
async fn read_body(app: &App, body: Body) -> std::result::Result<Bytes, Reply> {
    use http_body_util::BodyExt;
    let max = app.opts.max_body;
    let read = async move {
        let mut body = body;
        let (mut buf, mut seen, mut over) = (Vec::new(), 0usize, false);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| bad(format!("reading the request body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if !over && buf.len() + data.len() > max {
                    over = true;
                    buf = Vec::new();
                }
                if !over {
                    buf.extend_from_slice(&data);
                }
                if seen > max.saturating_mul(4) {
                    break;
                }
            }
        }
        if over {
            return Err(Reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than --max-body-mb ({} MB)",
                    max >> 20
                ),
            ));
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(app.opts.timeout, read).await {
        Err(_) => Err(Reply(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                app.opts.timeout.as_secs_f64()
            ),
        )),
        Ok(r) => r,
    }
}

async fn infer_v(
    state: State<Arc<App>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = known_version(&version) {
        return r.into_response();
    }
    infer(state, UrlPath(name), headers, body).await
}

/// `POST /v2/models/{name}/infer`.
async fn infer(
    State(app): State<Arc<App>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let deadline = Instant::now() + app.opts.timeout;
    let result = async {
        known(&app, &name)?;
        let bytes = read_body(&app, body).await?;
        let req = parse_infer(&app, &headers, &bytes)?;
        let mut h = app.engine.clone();
        h.deadline = Some(deadline);
        let shape = req.shape;
        let x = req.x;
        let out = tokio::task::spawn_blocking(move || engine::SliceRunner::run(&mut h, x, shape))
            .await
            .map_err(|e| Reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(reply_of)?;
        Ok::<_, Reply>(infer_response(&app, req.id, req.binary, out))
    }
    .await;
    match result {
        Ok(r) => r,
        Err(r) => r.into_response(),
    }
}

/// A parsed inference request.
struct InferRequest {
    id: Option<Value>,
    x: Vec<f32>,
    shape: [usize; 4],
    binary: bool,
}

fn parse_infer(
    app: &App,
    headers: &HeaderMap,
    bytes: &[u8],
) -> std::result::Result<InferRequest, Reply> {
    let json_len = match headers.get("inference-header-content-length") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n <= bytes.len())
            .ok_or_else(|| {
                bad("Inference-Header-Content-Length is not a length within the body")
            })?,
        None => bytes.len(),
    };
    let (head, mut binary) = bytes.split_at(json_len);
    let req: Value =
        serde_json::from_slice(head).map_err(|e| bad(format!("the request is not JSON: {e}")))?;
    let inputs = req["inputs"]
        .as_array()
        .ok_or_else(|| bad("the request has no `inputs` array"))?;
    let [input] = inputs.as_slice() else {
        return Err(bad(format!(
            "the model takes one input, `{}`; the request has {}",
            app.input_name,
            inputs.len()
        )));
    };
    let iname = input["name"].as_str().unwrap_or("");
    if iname != app.input_name {
        return Err(bad(format!(
            "unknown input {iname:?}: the model's input is {:?}",
            app.input_name
        )));
    }
    let dtype = input["datatype"].as_str().unwrap_or("");
    if dtype != "FP32" {
        return Err(bad(format!(
            "input {iname:?} has datatype {dtype:?}; the model takes FP32"
        )));
    }
    let shape: Vec<usize> = input["shape"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_u64().map(|d| d as usize))
                .collect()
        })
        .unwrap_or_default();
    let (c, s) = (app.sidecar.model.in_channels, app.sidecar.size());
    let ok_shape = shape.len() == 4 && shape[0] >= 1 && shape[1..] == [c, s, s];
    if !ok_shape {
        return Err(bad(format!(
            "input {iname:?} has shape {shape:?}; the model takes [N, {c}, {s}, {s}] with N ≥ 1"
        )));
    }
    let n = shape[0];
    let count = n * c * s * s;
    let x: Vec<f32> = match input["parameters"]["binary_data_size"].as_u64() {
        Some(size) => {
            let size = size as usize;
            if size != count * 4 || binary.len() < size {
                return Err(bad(format!(
                    "input {iname:?}: binary_data_size {size} for {count} FP32 values ({} bytes), {} bytes after the JSON",
                    count * 4,
                    binary.len()
                )));
            }
            let (data, rest) = binary.split_at(size);
            binary = rest;
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        }
        None => {
            let mut flat = Vec::with_capacity(count);
            flatten(&input["data"], &mut flat)?;
            if flat.len() != count {
                return Err(bad(format!(
                    "input {iname:?}: {} values for shape {shape:?} ({count} expected)",
                    flat.len()
                )));
            }
            flat
        }
    };
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes after the declared binary input data",
            binary.len()
        )));
    }
    let mut wants_binary = req["parameters"]["binary_data_output"]
        .as_bool()
        .unwrap_or(false);
    if let Some(outs) = req["outputs"].as_array() {
        for o in outs {
            let oname = o["name"].as_str().unwrap_or("");
            if oname != PROBABILITIES {
                return Err(bad(format!(
                    "unknown output {oname:?}: the model's output is {PROBABILITIES:?}"
                )));
            }
            if let Some(b) = o["parameters"]["binary_data"].as_bool() {
                wants_binary = b;
            }
        }
    }
    Ok(InferRequest {
        id: req.get("id").cloned(),
        x,
        shape: [n, c, s, s],
        binary: wants_binary,
    })
}

/// Flattens a JSON tensor (`data`, flat or nested) of numbers.
fn flatten(v: &Value, out: &mut Vec<f32>) -> std::result::Result<(), Reply> {
    match v {
        Value::Array(a) => a.iter().try_for_each(|x| flatten(x, out)),
        Value::Number(n) => {
            out.push(n.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        _ => Err(bad(
            "input data must be numbers (a flat or nested array), or binary data",
        )),
    }
}

fn infer_response(
    app: &App,
    id: Option<Value>,
    binary: bool,
    out: (Vec<usize>, Vec<f32>),
) -> Response {
    let (dims, p) = out;
    let mut output = json!({"name": PROBABILITIES, "datatype": "FP32", "shape": dims});
    let mut head = json!({"model_name": app.name, "model_version": "1", "outputs": []});
    if let Some(id) = id {
        head["id"] = id;
    }
    if !binary {
        output["data"] = json!(p);
        head["outputs"] = json!([output]);
        return axum::Json(head).into_response();
    }
    let data: Vec<u8> = p.iter().flat_map(|v| v.to_le_bytes()).collect();
    output["parameters"] = json!({"binary_data_size": data.len()});
    head["outputs"] = json!([output]);
    let text = head.to_string();
    let mut bytes = Vec::with_capacity(text.len() + data.len());
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(&data);
    let mut r = Response::new(Body::from(bytes));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&text.len().to_string()) {
        h.insert("inference-header-content-length", v);
    }
    r
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    app.metrics.queue.set(app.engine.queue_depth() as i64);
    let mut buf = Vec::new();
    let enc = prometheus::TextEncoder::new();
    if let Err(e) = enc.encode(&app.metrics.registry.gather(), &mut buf) {
        return Reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let mut r = Response::new(Body::from(buf));
    if let Ok(v) = HeaderValue::from_str(enc.format_type()) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// A per-request folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(id: u64) -> Result<Self> {
        let p = std::env::temp_dir().join(format!("dmnet-serve-{}-{id}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `POST /v1/segment`.
async fn segment(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let deadline = Instant::now() + app.opts.timeout;
    let result = async {
        if !app.ready.load(Ordering::SeqCst) {
            return Err(Reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready (starting or stopping)".into(),
            ));
        }
        let bytes = read_body(&app, body).await?;
        let kind = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let want_seg = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/dicom"));
        let app2 = app.clone();
        tokio::task::spawn_blocking(move || {
            segment_blocking(&app2, &kind, want_seg, &bytes, deadline)
        })
        .await
        .map_err(|e| Reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    }
    .await;
    match result {
        Ok(r) => r,
        Err(r) => r.into_response(),
    }
}

fn segment_blocking(
    app: &App,
    content_type: &str,
    want_seg: bool,
    bytes: &[u8],
    deadline: Instant,
) -> std::result::Result<Response, Reply> {
    let id = app.next_id.fetch_add(1, Ordering::SeqCst);
    let scratch = Scratch::new(id).map_err(reply_of)?;
    let input_dir = scratch.0.join("in");
    let out_dir = scratch.0.join("out");
    std::fs::create_dir_all(&input_dir).map_err(|e| reply_of(Error::io(&input_dir, e)))?;
    let is_zip = content_type.starts_with("application/zip") || bytes.starts_with(b"PK\x03\x04");
    let input = if is_zip {
        unzip_series(app, bytes, &input_dir)?;
        let (series, _) = crate::volume::scan_dicom_dir(&input_dir).map_err(reply_of)?;
        let images = series.iter().filter(|s| !s.is_seg).count();
        if images != 1 {
            return Err(bad(format!(
                "the zip holds {images} DICOM image series: send one series per request"
            )));
        }
        input_dir.clone()
    } else {
        if want_seg {
            return Err(Reply(
                StatusCode::NOT_ACCEPTABLE,
                "a DICOM SEG (Accept: application/dicom) needs a DICOM series (application/zip)"
                    .into(),
            ));
        }
        let path = input_dir.join("volume.nii");
        write_nifti(app, bytes, &path)?;
        path
    };
    let format = match (is_zip, want_seg) {
        (true, true) => OutputFormat::Seg,
        _ => OutputFormat::Nifti,
    };
    let mut opts = InferOptions::new(app.opts.model.clone(), input, out_dir.clone());
    opts.batch = app.opts.max_batch;
    opts.tta = app.opts.tta;
    opts.format = format;
    let mut h = app.engine.clone();
    h.deadline = Some(deadline);
    let summary = infer_with(&opts, &mut h, app.sidecar.clone()).map_err(|e| {
        let r = reply_of(e);
        Reply(r.0, hide(&r.1, &scratch.0))
    })?;
    if let Some(f) = summary.failed.first() {
        let r = reply_of(Error::invalid("upload", f.error.clone()));
        let status = if f.error.contains("overloaded:") {
            StatusCode::SERVICE_UNAVAILABLE
        } else if f.error.contains("timed out:") {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            r.0
        };
        return Err(Reply(status, hide(&f.error, &scratch.0)));
    }
    let want_ext = if format == OutputFormat::Seg {
        ".seg.dcm"
    } else {
        ".nii.gz"
    };
    let file = summary
        .outputs
        .iter()
        .find(|p| p.to_string_lossy().ends_with(want_ext))
        .ok_or_else(|| {
            Reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("no {want_ext} was written"),
            )
        })?;
    let data = std::fs::read(file).map_err(|e| reply_of(Error::io(file, e)))?;
    let ctype = if format == OutputFormat::Seg {
        "application/dicom"
    } else {
        "application/gzip"
    };
    let mut r = Response::new(Body::from(data));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    Ok(r)
}

/// A message without the server's temporary paths (the client never sees them).
fn hide(msg: &str, scratch: &Path) -> String {
    msg.replace(&scratch.join("in").display().to_string(), "upload")
        .replace(&scratch.display().to_string(), "upload")
}

/// Writes a NIfTI body as `.nii`, decompressing gzip within `--max-expanded-mb`.
fn write_nifti(app: &App, bytes: &[u8], path: &Path) -> std::result::Result<(), Reply> {
    let limit = app.opts.max_expanded;
    let data = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        let mut dec = flate2::read::MultiGzDecoder::new(bytes).take(limit + 1);
        dec.read_to_end(&mut out)
            .map_err(|e| bad(format!("the body is not a readable .nii.gz: {e}")))?;
        if out.len() as u64 > limit {
            return Err(Reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the .nii.gz decompresses past --max-expanded-mb ({} MB)",
                    limit >> 20
                ),
            ));
        }
        out
    } else {
        bytes.to_vec()
    };
    if data.len() < 348 {
        return Err(bad(format!(
            "the body is not a NIfTI file ({} bytes; a NIfTI header alone is 348), nor a DICOM zip (Content-Type: application/zip)",
            data.len()
        )));
    }
    std::fs::write(path, &data).map_err(|e| reply_of(Error::io(path, e)))
}

/// Unzips a DICOM series into `dir` within the entry-count and size limits; entries with `..`
/// or absolute paths are refused.
fn unzip_series(app: &App, bytes: &[u8], dir: &Path) -> std::result::Result<(), Reply> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| bad(format!("the body is not a readable zip: {e}")))?;
    if zip.len() > app.opts.max_zip_entries {
        return Err(Reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the zip has {} entries, more than --max-zip-entries ({})",
                zip.len(),
                app.opts.max_zip_entries
            ),
        ));
    }
    let mut total = 0u64;
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| bad(format!("zip entry {i}: {e}")))?;
        if f.is_dir() {
            continue;
        }
        let Some(rel) = f.enclosed_name() else {
            return Err(bad(format!(
                "zip entry {:?} leaves the archive (`..` or an absolute path): refused",
                f.name()
            )));
        };
        let dest = dir.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| reply_of(Error::io(parent, e)))?;
        }
        let left = app.opts.max_expanded.saturating_sub(total);
        let mut data = Vec::new();
        (&mut f)
            .take(left + 1)
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("zip entry {:?}: {e}", f.name())))?;
        total += data.len() as u64;
        if total > app.opts.max_expanded {
            return Err(Reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the zip expands past --max-expanded-mb ({} MB)",
                    app.opts.max_expanded >> 20
                ),
            ));
        }
        std::fs::write(&dest, &data).map_err(|e| reply_of(Error::io(&dest, e)))?;
    }
    Ok(())
}
