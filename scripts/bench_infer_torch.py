"""PyTorch eager reference for `bench infer`: the DMNet inference forward (contract "DMNet
architecture v1") written independently with torch.nn.functional, weights read from the run's
safetensors checkpoint named in the model sidecar, timed on a random batch on CPU.

Usage: python bench_infer_torch.py MODEL.json [BATCH] [ITERS] [THREADS] [DUMP]  -> one JSON line;
with DUMP, also DUMP-{input,probabilities}.f32 (raw little-endian) + .json (shape), for the
parity check in bench_infer.sh. Needs only torch (no numpy).
Needs a Python whose `import torch` works (not the project venv's libtorch carrier).
"""
import json, struct, sys, time

import torch
import torch.nn.functional as F


def load_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(raw[base + a:base + b]), dtype=torch.float32)
        out[name] = t.reshape(info["shape"])
    return out


class DMNet:
    def __init__(self, cfg, w):
        self.cfg, self.w = cfg, w
        self.c = lambda n: max(8, round(n * cfg["width"]))
        self.blocks = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3],
                       "resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}[cfg["encoder"]]
        self.bottleneck = cfg["encoder"] in ("resnet50", "resnet101")

    def conv(self, x, p, stride=1, pad=0, dil=1):
        return F.conv2d(x, self.w[p + ".weight"], self.w.get(p + ".bias"), stride, pad, dil)

    def bn(self, x, p):
        w = self.w
        return F.batch_norm(x, w[p + ".running_mean"], w[p + ".running_var"], w[p + ".weight"],
                            w[p + ".bias"], False, 0.1, 1e-5)

    @staticmethod
    def up(x, h, w):
        if x.shape[2] == h and x.shape[3] == w:
            return x
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)

    def block(self, x, q, stride):
        if self.bottleneck:
            y = F.relu(self.bn(self.conv(x, q + ".conv1"), q + ".bn1"))
            y = F.relu(self.bn(self.conv(y, q + ".conv2", stride, 1), q + ".bn2"))
            y = self.bn(self.conv(y, q + ".conv3"), q + ".bn3")
        else:
            y = F.relu(self.bn(self.conv(x, q + ".conv1", stride, 1), q + ".bn1"))
            y = self.bn(self.conv(y, q + ".conv2", 1, 1), q + ".bn2")
        if q + ".downsample.0.weight" in self.w:
            x = self.bn(self.conv(x, q + ".downsample.0", stride), q + ".downsample.1")
        return F.relu(y + x)

    def encoder(self, x, p):
        f1 = F.relu(self.bn(self.conv(x, p + ".conv1", 2, 3), p + ".bn1"))
        x = F.max_pool2d(f1, 3, 2, 1)
        feats = [f1]
        for li, n in enumerate(self.blocks):
            for b in range(n):
                x = self.block(x, f"{p}.layer{li + 1}.{b}", 2 if (b == 0 and li > 0) else 1)
            feats.append(x)
        return feats

    def decoder1(self, f, s):
        x = f[4]
        for i in range(5):
            if i < 4:
                skip = f[3 - i]
                x = torch.cat([self.up(x, skip.shape[2], skip.shape[3]), skip], 1)
            else:
                x = self.up(x, s, s)
            p = f"decoder1.blocks.{i}"
            x = F.relu(self.bn(self.conv(x, p + ".conv1", 1, 1), p + ".bn1"))
            x = F.relu(self.bn(self.conv(x, p + ".conv2", 1, 1), p + ".bn2"))
        return self.conv(x, "decoder1.head")

    def cbr(self, x, p, pad=0, dil=1):
        return F.relu(self.bn(self.conv(x, p + ".conv", 1, pad, dil), p + ".bn"))

    def decoder2(self, f, s):
        h, w = f[3].shape[2:]
        x = self.up(f[4], h, w)
        br = [self.cbr(x, "decoder2.aspp.b0")]
        for i, d in ((1, 6), (2, 12), (3, 18)):
            br.append(self.cbr(x, f"decoder2.aspp.b{i}", d, d))
        pooled = F.relu(self.conv(F.adaptive_avg_pool2d(x, 1), "decoder2.aspp.pool.conv"))
        br.append(self.up(pooled, h, w))
        x = self.cbr(torch.cat(br, 1), "decoder2.aspp.project")
        x = self.up(x, f[1].shape[2], f[1].shape[3])
        x = torch.cat([x, self.cbr(f[1], "decoder2.low")], 1)
        x = self.cbr(self.cbr(x, "decoder2.conv1", 1), "decoder2.conv2", 1)
        return self.up(self.conv(x, "decoder2.head"), s, s)

    def __call__(self, x):
        s = x.shape[2]
        f = self.encoder(x, "encoder")
        f2 = self.encoder(x, "encoder2") if self.cfg["variant"] == "separate-encoders" else f
        return (F.softmax(self.decoder1(f, s), 1) + F.softmax(self.decoder2(f2, s), 1)) / 2


def main():
    side = json.load(open(sys.argv[1]))
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    iters = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    if len(sys.argv) > 4:
        torch.set_num_threads(int(sys.argv[4]))
    cfg = side["model"]
    net = DMNet(cfg, load_safetensors(side["source"]["checkpoint_file"]))
    torch.manual_seed(0)
    x = torch.randn(batch, cfg["in_channels"], cfg["input_size"], cfg["input_size"])
    with torch.inference_mode():
        p = net(x)
        if len(sys.argv) > 5:  # DUMP prefix: input and probabilities as .npy (parity checks)
            for name, t in (("input", x), ("probabilities", p)):
                with open(f"{sys.argv[5]}-{name}.f32", "wb") as f:
                    f.write(struct.pack(f"<{t.numel()}f", *t.flatten().tolist()))
                json.dump(list(t.shape), open(f"{sys.argv[5]}-{name}.json", "w"))
        t = time.perf_counter()
        for _ in range(iters):
            net(x).sum().item()
        sps = batch * iters / (time.perf_counter() - t)
    print(json.dumps({"slices_per_s": sps, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "batch": batch}))


if __name__ == "__main__":
    main()
