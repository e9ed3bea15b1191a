#!/usr/bin/env python3
"""Benchmark of `dmnet-infer serve` (issue 25), every ratio against a reference measured in the
same run, on the same volumes:

1. the batch command (`dmnet-infer --input DIR`) on the volumes: slices/s (the reference);
2. the server at saturation: CLIENTS concurrent clients POSTing the volumes to /v1/segment for
   SECONDS: slices/s, and its ratio to 1 (goal ≥ 0.9);
3. the same load with dynamic batching off (`--max-batch 1`): the ratio of 2 to 3 (goal ≥ 1.5);
4. /v1/segment latency for one volume, idle (sequential) and at saturation: p50, p99;
5. with --soak-s: that many seconds at saturation; errors other than 503, and the server's RSS
   at the end against minute one (goal: within 10 %).

    .dmnet/python scripts/bench_serve.py --bin target/release/dmnet-infer \\
        --model models/la.onnx --volumes ../shared/data/la2018/imagesTr --n 8

Prints the machine and its load average beside the figures. Needs only the standard library.
"""
import argparse
import concurrent.futures as cf
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), load average {os.getloadavg()[0]:.2f}"


def start(bin_, model, extra):
    p = subprocess.Popen([bin_, "serve", "--device", "cpu", "--listen", "127.0.0.1:0", "--model", model, *extra],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in p.stderr:
        if "on http://" in line:
            addr = line.split("on http://")[1].split()[0]
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, addr
    raise SystemExit("the server did not start")


def stop(p):
    p.terminate()
    p.wait(timeout=60)


def post(addr, body):
    t = time.perf_counter()
    req = urllib.request.Request(f"http://{addr}/v1/segment", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, time.perf_counter() - t


def load(addr, bodies, clients, seconds):
    """CLIENTS threads posting the volumes round-robin for SECONDS: (statuses, latencies, volumes done)."""
    end = time.perf_counter() + seconds
    out, lock = [], threading.Lock()

    def client(k):
        i = k
        while time.perf_counter() < end:
            s, dt = post(addr, bodies[i % len(bodies)])
            with lock:
                out.append((s, dt, i % len(bodies)))
            i += clients

    with cf.ThreadPoolExecutor(clients) as ex:
        list(ex.map(client, range(clients)))
    return out


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="dmnet-infer built with the serve feature")
    ap.add_argument("--model", required=True)
    ap.add_argument("--volumes", required=True, help="folder of .nii.gz volumes")
    ap.add_argument("--n", type=int, default=8, help="volumes used")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--soak-s", type=float, default=0)
    a = ap.parse_args()
    vols = sorted(pathlib.Path(a.volumes).glob("*.nii.gz"))[: a.n]
    bodies = [v.read_bytes() for v in vols]
    print(f"machine: {machine()}; {len(vols)} volumes, {a.clients} clients, {a.seconds:.0f} s per load")

    with tempfile.TemporaryDirectory() as t:
        src = pathlib.Path(t) / "in"
        src.mkdir()
        for v in vols:
            (src / v.name).symlink_to(v.resolve())
        t0 = time.perf_counter()
        r = subprocess.run([a.bin, "--device", "cpu", "--max-batch", str(a.max_batch), "--model", a.model,
                            "--input", str(src), "--out", str(pathlib.Path(t) / "out"), "-q"],
                           capture_output=True, text=True, check=True)
        batch_s = time.perf_counter() - t0
        summary = json.loads(r.stdout)
    slices_per_volume = summary["slices"] / max(1, summary["cases"])
    batch_rate = summary["slices"] / batch_s
    print(f"1. batch command: {summary['slices']} slices in {batch_s:.2f} s (process start included): {batch_rate:.1f} slices/s")

    rates = {}
    for label, mb in (("batching on", a.max_batch), ("batching off", 1)):
        p, addr = start(a.bin, a.model, ["--max-batch", str(mb), "--queue", "1024"])
        if label == "batching on":
            idle = [post(addr, bodies[i % len(bodies)])[1] for i in range(10)]
        res = load(addr, bodies, a.clients, a.seconds)
        ok = [x for x in res if x[0] == 200]
        rates[label] = len(ok) * slices_per_volume / a.seconds
        errors = sorted({s for s, _, _ in res if s != 200})
        lat = [dt for s, dt, _ in ok]
        print(f"2. server, {label} (--max-batch {mb}): {rates[label]:.1f} slices/s, {len(ok)} volumes, "
              f"errors {errors or 'none'}; latency at saturation p50 {pct(lat, .5):.3f} s, p99 {pct(lat, .99):.3f} s")
        if label == "batching on":
            print(f"4. latency idle (10 sequential): p50 {pct(idle, .5):.3f} s, p99 {pct(idle, .99):.3f} s")
            if a.soak_s > 0:
                first = None
                t_end = time.perf_counter() + a.soak_s
                bad = set()
                while time.perf_counter() < t_end:
                    res = load(addr, bodies, a.clients, min(60, t_end - time.perf_counter()))
                    bad |= {s for s, _, _ in res if s not in (200, 503)}
                    rss = rss_kb(p.pid)
                    first = first or rss
                print(f"5. soak {a.soak_s:.0f} s: errors other than 503: {sorted(bad) or 'none'}; "
                      f"RSS {first / 1024:.0f} MB after minute one, {rss / 1024:.0f} MB at the end "
                      f"({100 * (rss - first) / first:+.1f} %)")
        stop(p)
    on, off = rates["batching on"], rates["batching off"]
    print(f"ratios: server / batch command {on / batch_rate:.2f}× (goal ≥ 0.9); batching on / off {on / off:.2f}× (goal ≥ 1.5)")
    print(f"machine at the end: {machine()}")


if __name__ == "__main__":
    sys.exit(main())
