"""Independent listing of DMNet weight names/shapes (architecture contract v1, docs/contracts.md)
for resnet18, in_channels 1, K 2, width 1. Writes weights-resnet18-in1-k2.txt beside it.
Run: .dmnet/python tests/golden/weights.py"""
import pathlib

IN, K = 1, 2
out = []


def conv(p, cin, cout, k, bias=False):
    out.append(f"{p}.weight [{cout}, {cin}, {k}, {k}]")
    if bias:
        out.append(f"{p}.bias [{cout}]")


def bn(p, c):
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        out.append(f"{p}.{leaf} [{c}]")


def encoder(p):
    conv(f"{p}.conv1", IN, 64, 7)
    bn(f"{p}.bn1", 64)
    cin = 64
    for li, planes in enumerate([64, 128, 256, 512]):
        for b in range(2):
            q = f"{p}.layer{li + 1}.{b}"
            stride = 2 if (b == 0 and li > 0) else 1
            conv(f"{q}.conv1", cin, planes, 3)
            bn(f"{q}.bn1", planes)
            conv(f"{q}.conv2", planes, planes, 3)
            bn(f"{q}.bn2", planes)
            if stride != 1 or cin != planes:
                conv(f"{q}.downsample.0", cin, planes, 1)
                bn(f"{q}.downsample.1", planes)
            cin = planes


encoder("encoder")
cin = 512
for i, (skip, c) in enumerate([(256, 256), (128, 128), (64, 64), (64, 32), (0, 16)]):
    conv(f"decoder1.blocks.{i}.conv1", cin + skip, c, 3)
    bn(f"decoder1.blocks.{i}.bn1", c)
    conv(f"decoder1.blocks.{i}.conv2", c, c, 3)
    bn(f"decoder1.blocks.{i}.bn2", c)
    cin = c
conv("decoder1.head", 16, K, 1, bias=True)
A = 256
for b, k in [("b0", 1), ("b1", 3), ("b2", 3), ("b3", 3)]:
    conv(f"decoder2.aspp.{b}.conv", 512, A, k)
    bn(f"decoder2.aspp.{b}.bn", A)
conv("decoder2.aspp.pool.conv", 512, A, 1, bias=True)
conv("decoder2.aspp.project.conv", 5 * A, A, 1)
bn("decoder2.aspp.project.bn", A)
conv("decoder2.low.conv", 64, 48, 1)
bn("decoder2.low.bn", 48)
conv("decoder2.conv1.conv", A + 48, A, 3)
bn("decoder2.conv1.bn", A)
conv("decoder2.conv2.conv", A, A, 3)
bn("decoder2.conv2.bn", A)
conv("decoder2.head", A, K, 1, bias=True)
conv("discriminator.conv1", K, 64, 4)
conv("discriminator.conv2", 64, 128, 4)
conv("discriminator.conv3", 128, 256, 4)
out.append("discriminator.up1.weight [256, 128, 4, 4]")  # ConvTranspose: [in, out, k, k]
out.append("discriminator.up2.weight [128, 64, 4, 4]")
out.append("discriminator.up3.weight [64, 1, 4, 4]")
out.append("discriminator.up3.bias [1]")
path = pathlib.Path(__file__).with_name("weights-resnet18-in1-k2.txt")
path.write_text("\n".join(out) + "\n")
print(f"{len(out)} tensors -> {path}")
