"""PyTorch-eager reference of one DMNet training step, for `scripts/bench_train.sh`.

The same network as dmnet's tch model (architecture contract v1, docs/contracts.md: ResNet
encoder with stage features, U-Net decoder, DeepLab v3+ decoder, FCN discriminator) and the same
step (Dice on both decoders, sharpened L_semi, adversarial loss, then the discriminator update;
Adam with L2 weight decay), on random inputs of the same batch and size. Prints JSON with the
seconds per step (mean over --steps after --warmup). Needs torch (not in the project venv)."""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def c(n, w):
    return max(8, round(n * w))


def up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class Basic(nn.Module):
    exp = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        out = planes
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    exp = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


BLOCKS = {18: (Basic, [2, 2, 2, 2]), 34: (Basic, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3]),
          101: (Bottleneck, [3, 4, 23, 3])}


class Encoder(nn.Module):
    def __init__(self, depth, cin, w):
        super().__init__()
        block, counts = BLOCKS[depth]
        self.conv1 = nn.Conv2d(cin, c(64, w), 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c(64, w))
        ch = c(64, w)
        for li, (nom, n) in enumerate(zip([64, 128, 256, 512], counts)):
            layers = []
            for b in range(n):
                layers.append(block(ch, c(nom, w), 2 if (b == 0 and li > 0) else 1))
                ch = c(nom, w) * block.exp
            setattr(self, f"layer{li + 1}", nn.Sequential(*layers))
        self.channels = [c(64, w)] + [c(n, w) * block.exp for n in [64, 128, 256, 512]]

    def forward(self, x):
        f1 = F.relu(self.bn1(self.conv1(x)))
        y = F.max_pool2d(f1, 3, 2, 1)
        feats = [f1]
        for i in range(1, 5):
            y = getattr(self, f"layer{i}")(y)
            feats.append(y)
        return feats


def conv_bn(cin, cout, k=3, d=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, d * (k - 1) // 2, dilation=d, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    def __init__(self, f, w, k):
        super().__init__()
        outs = [c(256, w), c(128, w), c(64, w), c(32, w), c(16, w)]
        skips = [f[3], f[2], f[1], f[0], 0]
        cin = f[4]
        self.blocks = nn.ModuleList()
        for o, s in zip(outs, skips):
            self.blocks.append(nn.Sequential(conv_bn(cin + s, o), conv_bn(o, o)))
            cin = o
        self.head = nn.Conv2d(cin, k, 1)

    def forward(self, f, size):
        x = f[4]
        for i, b in enumerate(self.blocks):
            if i < 4:
                skip = f[3 - i]
                x = torch.cat([up(x, skip.shape[2:]), skip], 1)
            else:
                x = up(x, (size, size))
            x = b(x)
        return self.head(x)


class DeepLab(nn.Module):
    def __init__(self, f, w, k):
        super().__init__()
        a = c(256, w)
        self.b = nn.ModuleList([conv_bn(f[4], a, 1)] + [conv_bn(f[4], a, 3, d) for d in (6, 12, 18)])
        self.pool = nn.Conv2d(f[4], a, 1)
        self.project = conv_bn(5 * a, a, 1)
        self.low = conv_bn(f[1], 48, 1)
        self.conv1 = conv_bn(a + 48, a)
        self.conv2 = conv_bn(a, a)
        self.head = nn.Conv2d(a, k, 1)

    def forward(self, f, size):
        x = up(f[4], f[3].shape[2:])
        br = [b(x) for b in self.b]
        br.append(up(F.relu(self.pool(F.adaptive_avg_pool2d(x, 1))), x.shape[2:]))
        x = self.project(torch.cat(br, 1))
        x = up(x, f[1].shape[2:])
        x = self.conv2(self.conv1(torch.cat([x, self.low(f[1])], 1)))
        return up(self.head(x), (size, size))


class Disc(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(a, b, 4, 2, 1, bias=False) for a, b in [(k, 64), (64, 128), (128, 256)]])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(a, b, 4, 2, 1, bias=(b == 1)) for a, b in [(256, 128), (128, 64), (64, 1)]])

    def forward(self, x):
        y = x
        for cv in self.convs:
            y = F.relu(cv(y))
        for i, u in enumerate(self.ups):
            y = u(y)
            if i < 2:
                y = F.relu(y)
        return y


def dice_loss(a, b, eps=1e-5):
    inter = (a * b).sum((0, 2, 3))
    return 1 - ((2 * inter + eps) / (a.sum((0, 2, 3)) + b.sum((0, 2, 3)) + eps)).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", type=int, default=18)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--in-channels", type=int, default=1)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--labeled-batch", type=int, default=8)
    ap.add_argument("--unlabeled-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--pass", dest="pass_", choices=["separate", "joint"], default="separate",
                    help="labeled and unlabeled batches through the network in two passes (dmnet's default) or one")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    enc = Encoder(a.encoder, a.in_channels, a.width)
    seg = nn.ModuleDict({"encoder": enc, "decoder1": UNet(enc.channels, a.width, a.classes),
                         "decoder2": DeepLab(enc.channels, a.width, a.classes)}).to(dev)
    disc = Disc(a.classes).to(dev)
    opt = torch.optim.Adam(seg.parameters(), lr=1e-4, weight_decay=5e-5)
    dopt = torch.optim.Adam(disc.parameters(), lr=1e-5, weight_decay=5e-5)
    nl, nu, s, k = a.labeled_batch, a.unlabeled_batch, a.size, a.classes
    xl = torch.randn(nl, a.in_channels, s, s, device=dev)
    xu = torch.randn(nu, a.in_channels, s, s, device=dev)
    y = torch.randint(0, k, (nl, s, s), device=dev)
    onehot = F.one_hot(y, k).permute(0, 3, 1, 2).float()
    bce = F.binary_cross_entropy_with_logits

    def forward(x):
        f = seg["encoder"](x)
        return seg["decoder1"](f, s), seg["decoder2"](f, s)

    def step():
        if a.pass_ == "joint":
            l1, l2 = forward(torch.cat([xl, xu]))
            (l1l, l1u), (l2l, l2u) = (l1[:nl], l1[nl:]), (l2[:nl], l2[nl:])
        else:
            (l1l, l2l), (l1u, l2u) = forward(xl), forward(xu)
        p1, p2 = torch.cat([l1l, l1u]).softmax(1), torch.cat([l2l, l2u]).softmax(1)
        ld = dice_loss(p1[:nl], onehot) + dice_loss(p2[:nl], onehot)
        semi = dice_loss((l1u / 0.5).softmax(1), (l2u / 0.5).softmax(1))
        z = disc(torch.cat([p1, p2]))
        adv = bce(z[:nl + nu], torch.ones_like(z[:nl + nu])) + bce(z[nl + nu:], torch.ones_like(z[nl + nu:]))
        loss = ld + 0.01 * adv + 0.1 * semi
        opt.zero_grad()
        loss.backward()
        opt.step()
        dopt.zero_grad()
        n = nl + nu
        z = disc(torch.cat([p1.detach(), p2.detach(), onehot]))
        dl = bce(z[:n], torch.zeros_like(z[:n])) + bce(z[n:2 * n], torch.zeros_like(z[n:2 * n])) + bce(z[2 * n:], torch.ones_like(z[2 * n:]))
        dl.backward()
        dopt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / a.steps
    print(json.dumps({"impl": "pytorch-eager", "torch": torch.__version__, "s_per_step": dt,
                      "threads": torch.get_num_threads(), "args": vars(a)}))


if __name__ == "__main__":
    main()
