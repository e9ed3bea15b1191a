//! Issue 25, `dmnet-infer serve` (the libtorch-free binary built with `--features serve`,
//! `DMNET_NO_TORCH_BIN`): the unmodified `tritonclient[http]` client with its defaults gets
//! ONNX Runtime's probabilities; `/v1/segment` returns the batch command's mask voxel for
//! voxel and a SEG that highdicom reads for a DICOM series; bad input is a 4xx naming what is
//! wrong and the next request is served; a full queue is 503 with Retry-After; SIGTERM turns
//! readiness off, drains and exits 0; a killed server restarts and serves (it keeps no state).
use super::{exported, la_case, model_config, preprocess};
use crate::util::{python, run_ok, stdout, tmp};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The serve-enabled `dmnet-infer` (`make test` builds it into `DMNET_NO_TORCH_BIN`).
fn serve_bin(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("DMNET_NO_TORCH_BIN").map(|d| PathBuf::from(d).join("dmnet-infer"));
    if let Some(p) = p.filter(|p| p.exists()) {
        return Some(p);
    }
    assert!(
        !crate::util::in_ci(),
        "CI=1 and DMNET_NO_TORCH_BIN is unset: run the tests through `make test`"
    );
    eprintln!("SKIP {test}: DMNET_NO_TORCH_BIN is unset (`make test` builds the serve binary)");
    None
}

/// A running server: its process and address; killed when dropped.
struct Server {
    child: Child,
    addr: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    fn start(bin: &Path, model: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--device",
                "cpu",
                "--listen",
                "127.0.0.1:0",
                "--model",
            ])
            .arg(model)
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(a) = line.split("on http://").nth(1) {
                    let _ = tx.send(a.split_whitespace().next().unwrap_or("").to_string());
                }
                keep.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server did not start: {}", log.lock().unwrap()));
        Server { child, addr, log }
    }
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status, headers (lower-case names), body.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close` (a test client, not the server's parser).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    s.write_all(head.as_bytes()).unwrap();
    // a server refusing the body may answer before reading all of it
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse(&raw)
}

fn parse(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 4 + n..];
        }
        body = out;
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn get(addr: &str, path: &str) -> Resp {
    http(addr, "GET", path, &[], b"")
}

/// An LA-sized model with random weights (64×64, 1 channel `mri`, 2 classes).
fn model(dir: &Path) -> PathBuf {
    exported(dir, "la", &model_config(1), &preprocess())
}

const TRITON: &str = r#"
import sys, numpy as np, onnxruntime as ort
import tritonclient.http as http
from tritonclient.utils import InferenceServerException
url, model, onnx = sys.argv[1], sys.argv[2], sys.argv[3]
c = http.InferenceServerClient(url)
assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(model)
md = c.get_model_metadata(model)
inp, out = md["inputs"][0], md["outputs"][0]
assert inp["datatype"] == "FP32" and inp["shape"][0] == -1 and out["name"] == "probabilities", md
x = np.random.default_rng(0).normal(size=[5] + inp["shape"][1:]).astype(np.float32)
ref = ort.InferenceSession(onnx).run(["probabilities"], {inp["name"]: x})[0]
i = http.InferInput(inp["name"], list(x.shape), "FP32")
i.set_data_from_numpy(x)                      # the client's defaults: binary in, binary out
p = c.infer(model, [i]).as_numpy("probabilities")
j = http.InferInput(inp["name"], list(x.shape), "FP32")
j.set_data_from_numpy(x, binary_data=False)   # JSON tensors both ways
o = http.InferRequestedOutput("probabilities", binary_data=False)
q = c.infer(model, [j], outputs=[o]).as_numpy("probabilities")
try:
    c.infer("no-such-model", [i])
    raise SystemExit("an unknown model was served")
except InferenceServerException as e:
    assert "unknown model" in str(e), e
print(max(float(np.abs(p - ref).max()), float(np.abs(q - ref).max())))
"#;

#[test]
fn tritonclient_gets_onnxruntimes_probabilities() {
    let Some(bin) = serve_bin("tritonclient_gets_onnxruntimes_probabilities") else {
        return;
    };
    let dir = tmp();
    let onnx = model(dir.path());
    let srv = Server::start(&bin, &onnx, &["--max-delay-ms", "2"]);
    let o = run_ok(
        python()
            .args(["-c", TRITON, srv.addr.as_str(), "la"])
            .arg(&onnx),
    );
    let diff: f64 = stdout(&o).trim().parse().unwrap();
    assert!(diff <= 1e-6, "max |Δ| = {diff}");
    let m = get(&srv.addr, "/metrics").text();
    assert!(
        m.contains("dmnet_requests_total{endpoint=\"infer\",status=\"200\"} 2"),
        "{m}"
    );
    assert!(m.contains("dmnet_batch_slices_count") && m.contains("dmnet_queue_depth"));
    // one log line per request, with an id and no file name
    let log = srv.log.lock().unwrap().clone();
    assert!(
        log.contains("request 1:") && !log.contains("la.onnx -> "),
        "{log}"
    );
}

/// `/v1/segment` with the LA volume equals `dmnet-infer` on the same file, voxel for voxel and
/// in geometry; the prostate series zipped with `Accept: application/dicom` gives a SEG that
/// highdicom reads and that references the source series.
#[test]
fn segment_returns_the_batch_commands_mask_and_a_seg_for_a_dicom_series() {
    let Some(bin) = serve_bin("segment_returns_the_batch_commands_mask") else {
        return;
    };
    let Some((img, _)) = la_case() else { return };
    let Some(adc) = crate::util::shared_data("dicom/prostate-adc", "serve_seg") else {
        return;
    };
    let dir = tmp();
    let onnx = model(dir.path());
    let srv = Server::start(&bin, &onnx, &[]);
    let r = http(
        &srv.addr,
        "POST",
        "/v1/segment",
        &[],
        &std::fs::read(&img).unwrap(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let served = dir.path().join("served.nii.gz");
    std::fs::write(&served, &r.body).unwrap();
    let out = dir.path().join("batch");
    let o = super::infer_run(&onnx, &img, &out, &[]);
    assert!(o.status.success());
    let batch = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".nii.gz"))
        .unwrap();
    let (a, b) = (
        dmnet::volume::read_nifti(&served).unwrap(),
        dmnet::volume::read_nifti(&batch).unwrap(),
    );
    assert_eq!((a.dims, a.affine), (b.dims, b.affine));
    assert!(
        a.data == b.data,
        "the served mask differs from the batch mask"
    );
    // a DICOM series as a zip, answered with a SEG
    let zip = dir.path().join("adc.zip");
    let script = "import sys, zipfile, pathlib\nz = zipfile.ZipFile(sys.argv[2], 'w')\n\
                  for p in sorted(pathlib.Path(sys.argv[1]).glob('*.dcm')): z.write(p, 'series/' + p.name)\nz.close()";
    run_ok(python().args(["-c", script]).arg(&adc).arg(&zip));
    let r = http(
        &srv.addr,
        "POST",
        "/v1/segment",
        &[
            ("Content-Type", "application/zip"),
            ("Accept", "application/dicom"),
        ],
        &std::fs::read(&zip).unwrap(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/dicom"));
    let seg = dir.path().join("seg.dcm");
    std::fs::write(&seg, &r.body).unwrap();
    let check = "import sys, glob, pydicom, highdicom as hd\nseg = hd.seg.segread(sys.argv[1])\n\
                 src = [pydicom.dcmread(f) for f in sorted(glob.glob(sys.argv[2] + '/*.dcm'))]\n\
                 ref = seg.ReferencedSeriesSequence[0]\n\
                 assert ref.SeriesInstanceUID == src[0].SeriesInstanceUID\n\
                 assert {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence} == {d.SOPInstanceUID for d in src}\n\
                 assert seg.FrameOfReferenceUID == src[0].FrameOfReferenceUID\nprint(seg.number_of_frames)";
    run_ok(python().args(["-c", check]).arg(&seg).arg(&adc));
}

/// Each bad input is a 4xx that names what is wrong, and the server then serves normally.
#[test]
fn bad_input_is_a_named_4xx_and_the_next_request_is_served() {
    let Some(bin) = serve_bin("bad_input_is_a_named_4xx") else {
        return;
    };
    let Some((img, _)) = la_case() else { return };
    let Some(dicom) = crate::util::shared_data("dicom", "serve_bad_input") else {
        return;
    };
    let dir = tmp();
    let onnx = model(dir.path());
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let srv = Server::start(
        &bin,
        &onnx,
        &[
            "--max-body-mb",
            "8",
            "--max-expanded-mb",
            "16",
            "--timeout-s",
            "2",
            "--token-file",
            token.to_str().unwrap(),
        ],
    );
    let auth = ("Authorization", "Bearer s3cret-token");
    let ok = |what: &str| {
        let r = http(&srv.addr, "GET", "/v2/models/la/ready", &[auth], b"");
        assert_eq!(r.status, 200, "after {what}: {}", r.text());
    };
    let post = |path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let mut h = vec![auth];
        h.extend_from_slice(headers);
        http(&srv.addr, "POST", path, &h, body)
    };
    let expect = |r: Resp, status: u16, words: &str, what: &str| {
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert!(r.text().contains(words), "{what}: {}", r.text());
        ok(what);
    };
    let gz = std::fs::read(&img).unwrap();
    expect(
        post("/v1/segment", &[], &gz[..gz.len() / 3]),
        400,
        ".nii.gz",
        "a truncated .nii.gz",
    );
    // a NIfTI with a zero dimension: the LA header with dim[3] = 0
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    let mut zero = raw.clone();
    zero[46..48].copy_from_slice(&0i16.to_le_bytes());
    let r = post("/v1/segment", &[], &zero);
    assert!(
        (400..500).contains(&r.status),
        "zero dim: {} {}",
        r.status,
        r.text()
    );
    ok("a zero dimension");
    // a 4-D series and a zip holding two series
    let zip_of = |name: &str, dirs: &[PathBuf]| {
        let z = dir.path().join(name);
        let script = "import sys, zipfile, pathlib\nz = zipfile.ZipFile(sys.argv[1], 'w')\n\
                      for i, d in enumerate(sys.argv[2:]):\n    for p in sorted(pathlib.Path(d).glob('*.dcm')): z.write(p, f'{i}/' + p.name)\nz.close()";
        let mut c = python();
        c.args(["-c", script]).arg(&z).args(dirs);
        run_ok(&mut c);
        std::fs::read(z).unwrap()
    };
    let four_d = zip_of("epi.zip", &[dicom.join("ge-epi-4d/series")]);
    expect(
        post(
            "/v1/segment",
            &[("Content-Type", "application/zip")],
            &four_d,
        ),
        400,
        "4-D",
        "a 4-D series",
    );
    let mixed = zip_of(
        "mixed.zip",
        &[dicom.join("prostate-adc"), dicom.join("ct-3slice/series")],
    );
    expect(
        post(
            "/v1/segment",
            &[("Content-Type", "application/zip")],
            &mixed,
        ),
        400,
        "2 DICOM image series",
        "two series in one zip",
    );
    // a zip entry leaving the archive
    let evil = dir.path().join("evil.zip");
    let script = "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w')\nz.writestr('../x.dcm', b'DICM')\nz.close()";
    run_ok(python().args(["-c", script]).arg(&evil));
    expect(
        post(
            "/v1/segment",
            &[("Content-Type", "application/zip")],
            &std::fs::read(&evil).unwrap(),
        ),
        400,
        "leaves the archive",
        "a ../ entry",
    );
    // limits: a body over --max-body-mb, a .nii.gz expanding past --max-expanded-mb
    expect(
        post("/v1/segment", &[], &vec![0u8; 9 << 20]),
        413,
        "--max-body-mb",
        "a body over the limit",
    );
    let bomb = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; 32 << 20]).unwrap();
        e.finish().unwrap()
    };
    expect(
        post("/v1/segment", &[], &bomb),
        413,
        "--max-expanded-mb",
        "a gzip bomb",
    );
    // tensors of the wrong shape, dtype or name
    let infer = |body: &str| post("/v2/models/la/infer", &[], body.as_bytes());
    expect(
        infer(r#"{"inputs":[{"name":"image","shape":[1,1,32,32],"datatype":"FP32","data":[0]}]}"#),
        400,
        "shape",
        "a wrong shape",
    );
    expect(
        infer(r#"{"inputs":[{"name":"image","shape":[1,1,64,64],"datatype":"INT8","data":[0]}]}"#),
        400,
        "datatype",
        "a wrong dtype",
    );
    expect(
        infer(r#"{"inputs":[{"name":"pixels","shape":[1,1,64,64],"datatype":"FP32","data":[0]}]}"#),
        400,
        "unknown input",
        "a wrong name",
    );
    expect(
        post("/v2/models/nope/infer", &[], b"{}"),
        404,
        "unknown model",
        "an unknown model",
    );
    // tokens: missing or wrong is 401, the health probes need none
    let r = http(&srv.addr, "GET", "/v2/models/la", &[], b"");
    assert_eq!(r.status, 401);
    let r = http(
        &srv.addr,
        "GET",
        "/v2/models/la",
        &[("Authorization", "Bearer wrong")],
        b"",
    );
    assert_eq!(r.status, 401);
    assert_eq!(get(&srv.addr, "/v2/health/ready").status, 200);
    // a slow client that never finishes its body: timed out, the server goes on
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = "POST /v1/segment HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n";
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&[0u8; 100]).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert_eq!(parse(&raw).status, 408, "{}", String::from_utf8_lossy(&raw));
    ok("a slow client");
}

/// A full queue answers 503 with Retry-After; SIGTERM turns readiness off, drains and exits
/// 0; a `kill -9`ed server restarts and serves (it keeps no state on disk).
#[test]
fn overload_is_503_and_sigterm_drains_then_exits_0() {
    let Some(bin) = serve_bin("overload_is_503") else {
        return;
    };
    let dir = tmp();
    let onnx = model(dir.path());
    let mut srv = Server::start(
        &bin,
        &onnx,
        &["--max-batch", "1", "--queue", "1", "--drain-s", "2"],
    );
    let n = 48;
    let body = format!(
        r#"{{"inputs":[{{"name":"image","shape":[{n},1,64,64],"datatype":"FP32","data":[{}]}}]}}"#,
        vec!["0.5"; n * 64 * 64].join(",")
    );
    let r = http(
        &srv.addr,
        "POST",
        "/v2/models/la/infer",
        &[],
        body.as_bytes(),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.text().contains("queue is full"), "{}", r.text());
    assert_eq!(get(&srv.addr, "/v2/health/ready").status, 200);
    // SIGTERM: readiness off during the drain, liveness on, then exit 0
    let pid = srv.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get(&srv.addr, "/v2/health/ready").status, 503);
    assert_eq!(get(&srv.addr, "/v2/health/live").status, 200);
    let status = srv.child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", srv.log.lock().unwrap());
    // kill -9 and a restart
    let mut again = Server::start(&bin, &onnx, &[]);
    let pid = again.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    let _ = again.child.wait();
    let third = Server::start(&bin, &onnx, &[]);
    assert_eq!(get(&third.addr, "/v2/health/ready").status, 200);
    let _ = third.url();
}
