"""Helpers of scripts/gpu_check.sh (standard library only: the bare GPU host has python3 and its
torch, nothing else from this project).

  measure      run one step under coreutils `timeout`, sampling peak memory while it runs
               (cuda: GPU memory.used from nvidia-smi, minus the idle baseline; cpu: the resident
               memory of the step's process tree from /proc), plus the peak RSS from getrusage
  unpack       the carry's gzipped binaries and ONNX Runtime into the work folder
  probe-torch  where this Python's torch is (its lib/ folder), its version and CUDA
  probe-ort    whether this Python's onnxruntime has the CUDA execution provider, and its library
  train        seconds per step, losses and device of a dmnet-train run directory
  note-train   the one-line note of a train step
  record       append one step's record to OUT/steps.jsonl
  host         OUT/host.json: GPU, CPU, glibc, torch, onnxruntime, the carry's manifest
  json         print one field of a JSON file or of stdin (-) (for the shell)
  flops        GFLOP per slice and per training step from the architecture, cross-checked against
               the exported model's Conv nodes where the onnx package imports
  summary      the JSON summary and the short table, from the steps' records
"""
import argparse
import glob
import gzip
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- measure
def smi_used_mib(index):
    """memory.used (MiB) of GPU `index` from nvidia-smi, or None."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", str(index)],
            capture_output=True, text=True, timeout=10).stdout
        return float(out.strip().splitlines()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def tree_rss_mib(root):
    """Resident memory (MiB) of `root` and its descendants, from /proc."""
    kids = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                s = f.read()
            pid = int(s.split(" ", 1)[0])
            ppid = int(s.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(kids.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total / 1024


class Sampler(threading.Thread):
    """Polls a memory probe every `period` seconds and keeps the maximum."""

    def __init__(self, probe, period):
        super().__init__(daemon=True)
        self.probe, self.period, self.peak, self.samples = probe, period, None, 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            v = self.probe()
            if v is not None:
                self.samples += 1
                self.peak = v if self.peak is None else max(self.peak, v)
            self.stop.wait(self.period)


def cmd_measure(a):
    gpu = a.device == "cuda"
    baseline = smi_used_mib(a.gpu_index) if gpu else None
    with open(a.log, "ab") as log:
        log.write(f"$ {' '.join(a.command)}\n".encode())
        log.flush()
        t0 = time.monotonic()
        p = subprocess.Popen(["timeout", "-k", "10", str(a.timeout)] + a.command, stdout=log,
                             stderr=subprocess.STDOUT)
        # `timeout` runs the step in its own process group: pass a kill of this script on to it
        # (it passes it on to the step), so nothing outlives the check.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda signum, _frame: p.send_signal(signum))
        probe = (lambda: smi_used_mib(a.gpu_index)) if gpu else (lambda: tree_rss_mib(p.pid))
        s = Sampler(probe, a.period)
        s.start()
        rc = p.wait()
        secs = time.monotonic() - t0
        s.stop.set()
        s.join()
    peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    r = {"rc": rc, "timed_out": rc in (124, 137), "seconds": round(secs, 2), "limit_s": a.timeout,
         "peak_rss_mib": round(peak_rss, 1), "memory_samples": s.samples,
         "memory_probe": "nvidia-smi memory.used" if gpu else "/proc VmRSS of the process tree"}
    if gpu:
        r["gpu_baseline_mib"] = baseline
        r["gpu_peak_used_mib"] = s.peak
        r["gpu_peak_mib"] = None if s.peak is None or baseline is None else s.peak - baseline
    else:
        r["tree_peak_rss_mib"] = None if s.peak is None else round(s.peak, 1)
    write_json(a.result, r)
    return 0


# ---------------------------------------------------------------- unpack
def cmd_unpack(a):
    """CARRY/{bin,lib}/X.gz -> WORK/{bin,lib}/X (executable); anything else is linked."""
    done = []
    for sub in ("bin", "lib"):
        src_dir, dst_dir = os.path.join(a.carry, sub), os.path.join(a.work, sub)
        os.makedirs(dst_dir, exist_ok=True)
        for name in sorted(os.listdir(src_dir)):
            src = os.path.join(src_dir, name)
            if name.endswith(".gz"):
                dst = os.path.join(dst_dir, name[:-3])
                with gzip.open(src, "rb") as f, open(dst + ".tmp", "wb") as g:
                    shutil.copyfileobj(f, g, 1 << 20)
                os.chmod(dst + ".tmp", 0o755)
                os.replace(dst + ".tmp", dst)
                done.append(f"{sub}/{name[:-3]} (gunzipped)")
            else:
                dst = os.path.join(dst_dir, name)
                if os.path.lexists(dst):
                    os.remove(dst)
                os.symlink(os.path.realpath(src), dst)
                done.append(f"{sub}/{name} (linked)")
    gz = sum(d.endswith("(gunzipped)") for d in done)
    print(f"{len(done)} files ({gz} gunzipped, {len(done) - gz} linked)")
    return 0


# ---------------------------------------------------------------- probes
def cmd_probe_torch(a):
    r = {"python": sys.executable}
    try:
        import torch
        d = os.path.dirname(torch.__file__)
        r.update(ok=True, version=torch.__version__, dir=d, lib=os.path.join(d, "lib"),
                 cuda_build=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                 gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    except Exception as e:  # noqa: BLE001 - any import failure means "no importable torch"
        r.update(ok=False, error=f"{type(e).__name__}: {e}".splitlines()[0][:300])
    print(json.dumps(r))
    return 0


def nvidia_lib_dirs(site):
    """The lib/ folders of the nvidia-* wheels (cuDNN, cuBLAS, …) under a site-packages."""
    return sorted({os.path.dirname(p) for p in glob.glob(os.path.join(site, "nvidia", "**", "lib*.so*"),
                                                          recursive=True)})


def cmd_probe_ort(a):
    r = {"python": sys.executable, "cuda_ep": False}
    try:
        import onnxruntime as ort
        capi = os.path.join(os.path.dirname(ort.__file__), "capi")
        libs = sorted(glob.glob(os.path.join(capi, "libonnxruntime.so.1.*")))
        providers = ort.get_available_providers()
        v = tuple(int(x) for x in re.findall(r"\d+", ort.__version__)[:2])
        r.update(version=ort.__version__, providers=providers, lib=libs[0] if libs else None)
        if "CUDAExecutionProvider" not in providers:
            r["why_not"] = f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (not onnxruntime-gpu)"
        elif v < (1, 31):
            r["why_not"] = f"onnxruntime-gpu {ort.__version__} is older than 1.31 (dmnet binds API 31)"
        elif not libs:
            r["why_not"] = f"no libonnxruntime.so.1.* in {capi}"
        else:
            r["cuda_ep"] = True
            site = os.path.dirname(os.path.dirname(ort.__file__))
            r["lib_dirs"] = [capi] + nvidia_lib_dirs(site)
    except Exception as e:  # noqa: BLE001
        r["why_not"] = f"this Python has no onnxruntime ({type(e).__name__}: {e})".splitlines()[0][:300]
    print(json.dumps(r))
    return 0


# ---------------------------------------------------------------- train run
def finite(v):
    return isinstance(v, (int, float)) and math.isfinite(v)


def cmd_train(a):
    recs = []
    with open(os.path.join(a.run, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    if not recs:
        raise SystemExit(f"{a.run}/metrics.jsonl has no epoch")
    last = recs[-1]
    losses = {k: [r.get(k) for r in recs] for k in ("loss_seg", "loss_dice", "loss_semi", "loss_adv", "loss_dis")}
    with open(a.log, errors="replace") as f:
        log = f.read()
    m = re.search(r"training .* on (\w+)", log)
    on = m.group(1).lower() if m else None  # "cuda" / "cpu" (older dmnet logged "Cuda" / "Cpu")
    want = "cuda" if a.device == "cuda" else "cpu"
    r = {"epochs": len(recs), "steps_timed": last["steps"],
         "s_per_step": last["train_seconds"] / max(1, last["steps"]),
         "slices_per_s": last.get("slices_per_s"),
         "losses_finite": all(finite(v) for vs in losses.values() for v in vs),
         "loss_seg": [r.get("loss_seg") for r in recs], "trained_on": on, "device_ok": on == want,
         "amp_ignored_warning": "--amp is ignored" in log}
    print(json.dumps(r))
    return 0 if r["losses_finite"] and r["device_ok"] else 1


def cmd_json(a):
    if a.file == "-":
        v = json.loads(sys.stdin.read())
    else:
        with open(a.file) as f:
            v = json.load(f)
    for k in a.key.split("."):
        v = v[k] if isinstance(v, dict) else v[int(k)]
    print(v if not isinstance(v, (dict, list)) else json.dumps(v))
    return 0


def parse_value(v):
    try:
        return json.loads(v)
    except ValueError:
        return v


def cmd_record(a):
    r = {"step": a.step, "status": a.status, "note": a.note}
    for path in a.from_:
        with open(path) as f:
            r.update({k: v for k, v in json.load(f).items() if k not in r})
    for kv in a.set:
        k, _, v = kv.partition("=")
        r[k] = parse_value(v)
    with open(os.path.join(a.out, "steps.jsonl"), "a") as f:
        f.write(json.dumps(r) + "\n")
    return 0


def cmd_note_train(a):
    with open(a.file) as f:
        t = json.load(f)
    n = (f"{t['s_per_step']:.3f} s/step over {t['steps_timed']} warm steps, trained on {t['trained_on']}, "
         f"losses {'finite' if t['losses_finite'] else 'NOT finite'}")
    if not t["device_ok"]:
        n += ": wrong device"
    if t["amp_ignored_warning"]:
        n += "; --amp ignored on CPU"
    print(n)
    return 0


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cmd_host(a):
    carry = read_json(os.path.join(a.carry, "MANIFEST.json")) or {}
    try:
        glibc = subprocess.run(["ldd", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        glibc = None
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    h = {"device": a.device, "gpu": None if a.gpu in ("", "null") else a.gpu, "cpu": cpu,
         "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "kernel": os.uname().release,
         "glibc": glibc, "torch": read_json(a.torch), "onnxruntime_python": read_json(a.ort),
         "carry": {k: carry.get(k) for k in ("commit", "profile", "total_mib", "glibc_needed")},
         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(os.path.join(a.out, "host.json"), h)
    return 0


# ---------------------------------------------------------------- FLOPs

def disc_macs(k_classes, size):
    """The FCN discriminator (docs/contracts.md; bench_train_torch.Disc) on one K×S×S map."""
    macs, s, c = 0, size, k_classes
    for cout in (64, 128, 256):  # 4×4 stride-2 convs
        s //= 2
        macs += s * s * cout * c * 16
        c = cout
    for cout in (128, 64, 1):  # 4×4 stride-2 transposed convs
        macs += s * s * c * cout * 16
        s *= 2
        c = cout
    return macs


def ch(n, w):
    """Channels of a layer of nominal width n at width multiplier w (bench_train_torch.c)."""
    return max(8, round(n * w))


def arch_macs(depth, w, size, cin=1, k=2):
    """Forward MACs per slice of the segmenter (encoder + U-Net + DeepLab v3+), counted from the
    architecture contract (docs/contracts.md; the same layers as bench_train_torch.py), Conv
    layers only. Dilation does not change a conv's MACs."""
    bottleneck = depth in (50, 101)
    counts = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[depth]
    e = 4 if bottleneck else 1
    r = size // 2
    macs = r * r * ch(64, w) * cin * 49  # conv1 7×7 / 2
    feats = [(ch(64, w), r)]
    c_in, r = ch(64, w), r // 2  # max pool / 2
    for li, (nom, n) in enumerate(zip([64, 128, 256, 512], counts)):
        p = ch(nom, w)
        for b in range(n):
            stride = 2 if (b == 0 and li > 0) else 1
            ro, out = r // stride, p * e
            if bottleneck:
                macs += r * r * p * c_in + ro * ro * p * p * 9 + ro * ro * out * p
            else:
                macs += ro * ro * p * c_in * 9 + ro * ro * p * p * 9
            if stride != 1 or c_in != out:
                macs += ro * ro * out * c_in
            c_in, r = out, ro
        feats.append((c_in, r))
    f = feats
    # U-Net decoder: 4 skip blocks and one at full size, two 3×3 conv-BN-ReLU each, 1×1 head
    x = f[4][0]
    for i, o in enumerate([256, 128, 64, 32, 16]):
        o = ch(o, w)
        skip, res = (f[3 - i][0], f[3 - i][1]) if i < 4 else (0, size)
        macs += res * res * o * (x + skip) * 9 + res * res * o * o * 9
        x = o
    macs += size * size * k * x
    # DeepLab v3+ decoder: ASPP at f[3]'s size (1×1, three 3×3 atrous, image pooling), projection,
    # 48-channel low-level 1×1 at f[1]'s size, two 3×3, 1×1 head
    a_, r3, r1 = ch(256, w), f[3][1], f[1][1]
    macs += r3 * r3 * a_ * f[4][0] * (1 + 3 * 9) + a_ * f[4][0] + r3 * r3 * a_ * 5 * a_
    macs += r1 * r1 * 48 * f[1][0] + r1 * r1 * a_ * (a_ + 48) * 9 + r1 * r1 * a_ * a_ * 9
    macs += r1 * r1 * k * a_
    return macs


def onnx_macs(path):
    """Forward MACs per slice of an exported model, from its Conv nodes: weight shapes from the
    initializers, output shapes from one ONNX Runtime run on a zero slice (shape inference
    cannot see through the Resize nodes). Returns (MACs, Conv nodes, input size)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    m = onnx.load(path)
    weights = {i.name: list(i.dims) for i in m.graph.initializer}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    if any(n.op_type == "ConvTranspose" for n in m.graph.node):
        raise ValueError("ConvTranspose in the exported segmenter: not counted")
    names = [n.output[0] for n in convs]
    known = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(x) for x in names if x not in known)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [1] + [int(d) for d in inp.shape[1:]]
    outs = sess.run(names, {inp.name: np.zeros(shape, np.float32)})
    macs = sum(math.prod(o.shape[1:]) * weights[n.input[1]][1] * math.prod(weights[n.input[1]][2:])
               for n, o in zip(convs, outs))
    return macs, len(convs), shape[-1]


def cmd_flops(a):
    """GFLOP (2 per MAC) of the segmenter's forward pass per slice, from the architecture
    (--encoder/--width/--size) and, with --onnx and the onnx package, also counted in the exported
    graph (a cross-check of the first); the discriminator's; one training step's (fwd + bwd ≈ 3 ×
    fwd): the segmenter on nl + nu slices, D on their 2(nl + nu) maps, D's update on those and
    the nl one-hot maps."""
    macs = arch_macs(a.encoder, a.width, a.size)
    r = {"net": f"ResNet-{a.encoder} x{a.width}, {a.size}", "count": "architecture"}
    if a.onnx:
        try:
            om, convs, size = onnx_macs(a.onnx)
            r.update(onnx=a.onnx, onnx_conv_nodes=convs, onnx_size=size,
                     onnx_gflop_per_slice_fwd=round(2 * om / 1e9, 4),
                     onnx_over_architecture=round(om / macs, 4))
        except ImportError:
            r["onnx"] = "skipped: no onnx and onnxruntime packages in this Python"
    d = disc_macs(2, a.size)
    nl, nu = a.labeled_batch, a.unlabeled_batch
    n = nl + nu
    step = 3 * macs * n + 3 * d * 2 * n + 3 * d * (2 * n + nl)
    r.update(segmenter_gflop_per_slice_fwd=round(2 * macs / 1e9, 4),
             discriminator_gflop_per_map_fwd=round(2 * d / 1e9, 4),
             train_step_gflop=round(2 * step / 1e9, 2), batch=f"{nl}+{nu}")
    print(json.dumps(r))
    if a.onnx and "onnx_over_architecture" in r and abs(r["onnx_over_architecture"] - 1) > 0.02:
        print(f"the exported graph has {r['onnx_over_architecture']}x the architecture's MACs",
              file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- summary
def ratio(a, b):
    return None if not a or not b else round(a / b, 3)


def fmt(v, unit="", nd=3):
    if v is None:
        return "-"
    return f"{v:.{nd}f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def cmd_summary(a):
    steps = []
    path = os.path.join(a.out, "steps.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            steps = [json.loads(line) for line in f if line.strip()]
    by = {s["step"]: s for s in steps}
    env = {}
    if os.path.exists(os.path.join(a.out, "host.json")):
        with open(os.path.join(a.out, "host.json")) as f:
            env = json.load(f)
    fp32, amp, eager = by.get("train-fp32", {}), by.get("train-amp", {}), by.get("torch-eager", {})
    g = {
        "fp32_s_per_step": fp32.get("s_per_step"),
        "amp_s_per_step": amp.get("s_per_step"),
        "pytorch_eager_s_per_step": eager.get("s_per_step"),
        "ratio_dmnet_over_pytorch_fp32": ratio(fp32.get("s_per_step"), eager.get("s_per_step")),
        "amp_speedup": ratio(fp32.get("s_per_step"), amp.get("s_per_step")),
        "peak_gpu_mib_fp32": fp32.get("gpu_peak_mib"), "peak_gpu_mib_amp": amp.get("gpu_peak_mib"),
        "peak_gpu_mib_pytorch": eager.get("gpu_peak_mib"),
        "infer_slices_per_s": by.get("infer", {}).get("slices_per_s"),
        "infer_provider": by.get("infer", {}).get("provider"),
        "infer_cpu_slices_per_s": by.get("infer-cpu", {}).get("slices_per_s"),
    }
    gflop = by.get("flops", {}).get("train_step_gflop")
    g["train_step_gflop"] = gflop
    for k, st in (("fp32", fp32), ("amp", amp), ("pytorch", eager)):
        g[f"achieved_tflops_{k}"] = None if not gflop or not st.get("s_per_step") \
            else round(gflop / st["s_per_step"] / 1e3, 3)
    g["goal_ratio_le_1_05"] = None if g["ratio_dmnet_over_pytorch_fp32"] is None or a.device != "cuda" \
        else g["ratio_dmnet_over_pytorch_fp32"] <= 1.05
    g["goal_amp_speedup_ge_1_6"] = None if g["amp_speedup"] is None or a.device != "cuda" \
        else g["amp_speedup"] >= 1.6
    bad = [s["step"] for s in steps if s["status"] in ("failed", "timeout")]
    summary = {"device": a.device, "net": a.net, "steps_per_run": a.steps, "host": env, "results": g,
               "failed_steps": bad, "ok": not bad and bool(steps), "steps": steps}
    write_json(os.path.join(a.out, "summary.json"), summary)
    lines = [f"dmnet GPU check: device {a.device}, {env.get('gpu') or env.get('cpu') or '?'}; "
             f"{a.net}, {a.steps} timed steps per run", "",
             "| step | status | seconds | result | peak memory |", "|---|---|---|---|---|"]
    for s in steps:
        mem = s.get("gpu_peak_mib")
        mem = f"{mem:.0f} MiB GPU" if mem is not None else (
            f"{s['peak_rss_mib']:.0f} MiB host" if s.get("peak_rss_mib") else "-")
        lines.append(f"| {s['step']} | {s['status']} | {fmt(s.get('seconds'), nd=1)} | {s.get('note', '')} | {mem} |")
    lines += ["", f"fp32 {fmt(g['fp32_s_per_step'], ' s/step')}, AMP {fmt(g['amp_s_per_step'], ' s/step')} "
              f"(speed-up {fmt(g['amp_speedup'], '×', 2)}, goal ≥ 1.6×), PyTorch eager fp32 "
              f"{fmt(g['pytorch_eager_s_per_step'], ' s/step')} (dmnet/PyTorch {fmt(g['ratio_dmnet_over_pytorch_fp32'], '×', 3)}, "
              f"goal ≤ 1.05×)",
              f"{fmt(gflop, ' GFLOP', 1)} per training step: achieved {fmt(g['achieved_tflops_fp32'], ' TFLOP/s')} fp32, "
              f"{fmt(g['achieved_tflops_amp'], ' TFLOP/s')} AMP, {fmt(g['achieved_tflops_pytorch'], ' TFLOP/s')} PyTorch eager",
              f"ONNX Runtime: {fmt(g['infer_slices_per_s'], ' slices/s', 1)} on {g['infer_provider'] or '-'}"
              f"; CPU provider {fmt(g['infer_cpu_slices_per_s'], ' slices/s', 1)}",
              f"overall: {'OK' if summary['ok'] else 'FAILED: ' + ', '.join(bad)}"]
    table = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(table)
    print(table, end="")
    return 0 if summary["ok"] else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--device", choices=["cpu", "cuda"], required=True)
    m.add_argument("--timeout", type=int, required=True)
    m.add_argument("--log", required=True)
    m.add_argument("--result", required=True)
    m.add_argument("--period", type=float, default=0.2)
    m.add_argument("--gpu-index", type=int, default=0)
    m.add_argument("command", nargs=argparse.REMAINDER)
    u = sub.add_parser("unpack")
    u.add_argument("--carry", required=True)
    u.add_argument("--work", required=True)
    sub.add_parser("probe-torch")
    sub.add_parser("probe-ort")
    t = sub.add_parser("train")
    t.add_argument("--run", required=True)
    t.add_argument("--log", required=True)
    t.add_argument("--device", required=True)
    j = sub.add_parser("json")
    j.add_argument("file")
    j.add_argument("key")
    r = sub.add_parser("record")
    r.add_argument("--out", required=True)
    r.add_argument("--step", required=True)
    r.add_argument("--status", required=True, choices=["ok", "failed", "timeout", "skipped", "n/a"])
    r.add_argument("--note", default="")
    r.add_argument("--from", dest="from_", action="append", default=[])
    r.add_argument("--set", action="append", default=[])
    n = sub.add_parser("note-train")
    n.add_argument("file")
    h = sub.add_parser("host")
    for k in ("out", "device", "gpu", "carry", "torch", "ort"):
        h.add_argument(f"--{k}", required=True)
    f = sub.add_parser("flops")
    f.add_argument("--encoder", type=int, choices=[18, 34, 50, 101], default=101)
    f.add_argument("--width", type=float, default=1.0)
    f.add_argument("--size", type=int, default=224)
    f.add_argument("--onnx", help="also count the Conv nodes of this exported model")
    f.add_argument("--labeled-batch", type=int, default=8)
    f.add_argument("--unlabeled-batch", type=int, default=8)
    s = sub.add_parser("summary")
    s.add_argument("--out", required=True)
    s.add_argument("--device", required=True)
    s.add_argument("--steps", type=int, required=True)
    s.add_argument("--net", required=True)
    a = ap.parse_args()
    if a.cmd == "measure":
        a.command = a.command[1:] if a.command[:1] == ["--"] else a.command
        if not a.command:
            ap.error("measure: no command")
        return cmd_measure(a)
    return {"probe-torch": cmd_probe_torch, "probe-ort": cmd_probe_ort, "train": cmd_train,
            "json": cmd_json, "summary": cmd_summary, "record": cmd_record,
            "note-train": cmd_note_train, "host": cmd_host, "unpack": cmd_unpack, "flops": cmd_flops}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
