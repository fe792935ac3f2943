"""PyTorch twins of the sample models, and the seeded weights both sides share.

In:  nothing (the samples are `samples/<name>.nn`; each twin here is written by
     hand to match one of them).
Out: `TWINS`, mapping each sample's file stem to `(factory, input_shapes)`:
     `factory()` builds a `torch.nn.Module` whose `state_dict()` keys and shapes
     equal the parameter names the sample's labels produce, and whose forward
     pass computes the same function on batch-first inputs `[B, *shape]`
     (a tuple when the sample has several outputs). Samples with a named time
     dimension list their inputs at `TIME_STEPS` steps; `DIMS` gives that
     binding by name (`{"T": 64}`) for building the nnc side.
     `seeded_state_dict(shapes, seed)` draws deterministic weights with NumPy
     alone, so a test without torch regenerates exactly the weights that
     `scripts/make_reference.py` gave the twins.

ResNet-18 and MobileNetV2 follow torchvision's module structure (torchvision
itself is not a dependency): `torchvision.models.resnet18().state_dict()` and
`mobilenet_v2().state_dict()` have the same keys and shapes as these twins.
"""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
    _Module = nn.Module
except ImportError:  # seeded_state_dict, TWINS' input shapes and DIMS need only NumPy
    torch = nn = F = None
    _Module = object


# ---------------------------------------------------------------- seeded weights

def seeded_state_dict(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Deterministic weights for a state dict, from its keys and shapes alone.

    Each key draws from its own generator, seeded by `seed` and the key's CRC-32,
    so a key's values depend on `(seed, key, shape)` only: the order of the keys
    and the presence of others (`num_batches_tracked`, which nnc does not list)
    change nothing. The distributions, by the last segment of the key:

    - `weight*` with two or more axes (dense, conv, recurrent matrices):
      uniform(-sqrt(3) b, sqrt(3) b), b = 1/sqrt(fan_in), fan_in = the product
      of the axes after the first: variance 1/fan_in ("LeCun uniform"), which
      keeps deep stacks input-dependent. PyTorch's default bound b makes each
      layer shrink the signal threefold, and MobileNetV2's output would not
      depend on its input beyond float32 rounding;
    - `bias*` next to such a weight (`bias` by `weight`, `bias_ih_l0` by
      `weight_ih_l0`): uniform(-b, b) with that weight's b (PyTorch's bound);
    - `weight` of one axis (a per-channel scale: batchnorm, layernorm, prelu):
      uniform(0.5, 1.5), and its `bias`: normal(0, 0.1);
    - `running_mean`: normal(0, 0.1); `running_var`: uniform(0.5, 1.5);
    - `num_batches_tracked`: 0 (an int64 scalar, as PyTorch stores it).

    Arrays are float32 (except `num_batches_tracked`). A key that fits none of
    these raises `ValueError`.
    """
    return {key: _draw(key, tuple(shape), shapes, seed) for key, shape in shapes.items()}


def _draw(key: str, shape: tuple[int, ...], shapes: dict, seed: int) -> np.ndarray:
    prefix, _, name = key.rpartition(".")
    if name == "num_batches_tracked":
        return np.zeros(shape, dtype=np.int64)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    if name == "running_mean":
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)
    if name == "running_var":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if name.startswith("weight"):
        if len(shape) >= 2:
            return _uniform(rng, shape, np.sqrt(3.0) * _fan_in_bound(shape))
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if name.startswith("bias"):
        weight_name = "weight" + name[len("bias"):]
        weight_key = f"{prefix}.{weight_name}" if prefix else weight_name
        if weight_key not in shapes:
            raise ValueError(f"cannot draw `{key}`: its weight `{weight_key}` is not in the state dict")
        weight_shape = tuple(shapes[weight_key])
        if len(weight_shape) >= 2:
            return _uniform(rng, shape, _fan_in_bound(weight_shape))
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)
    raise ValueError(f"no seeded distribution for `{key}`")


def _fan_in_bound(weight_shape: tuple[int, ...]) -> float:
    """PyTorch's default bound 1/sqrt(fan_in), fan_in from the weight's shape."""
    return 1.0 / np.sqrt(np.prod(weight_shape[1:]))


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], bound: float) -> np.ndarray:
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def load_seeded_weights(module: "nn.Module", seed: int) -> None:
    """Give `module` the weights `seeded_state_dict` draws for its state dict (strict)."""
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    weights = seeded_state_dict(shapes, seed)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)


# ---------------------------------------------------------------- mlp.nn, lenet.nn

class MLP(_Module):
    """samples/mlp.nn: 784 -> 256 -> 128 -> 10, automatic labels dense_0..dense_2."""

    def __init__(self) -> None:
        super().__init__()
        self.dense_0 = nn.Linear(784, 256)
        self.dense_1 = nn.Linear(256, 128)
        self.dense_2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.dense_0(x))
        x = F.relu(self.dense_1(x))
        return self.dense_2(x)


class LeNet(_Module):
    """samples/lenet.nn: LANGUAGE.md's LeNet-5 (`padding=same` is 2 for k=5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2d_0 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2d_1 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.avg_pool2d(F.relu(self.conv2d_0(x)), 2)
        x = F.avg_pool2d(F.relu(self.conv2d_1(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


# ---------------------------------------------------------------- resnet18.nn

class BasicBlock(_Module):
    """torchvision's ResNet BasicBlock; `downsample` when stride or width change."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(_Module):
    """samples/resnet18.nn: torchvision's resnet18 (1000 classes)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(64, 64, stride=1)
        self.layer2 = self._stage(64, 128, stride=2)
        self.layer3 = self._stage(128, 256, stride=2)
        self.layer4 = self._stage(256, 512, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    @staticmethod
    def _stage(inplanes: int, planes: int, stride: int) -> "nn.Sequential":
        return nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# ---------------------------------------------------------------- mobilenetv2.nn

def _conv_bn_relu6(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> "nn.Sequential":
    """torchvision's Conv2dNormActivation with ReLU6: keys `.0` (conv) and `.1` (bn)."""
    return nn.Sequential(
        nn.Conv2d(inp, out, kernel, stride=stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(_Module):
    """torchvision's MobileNetV2 block; no expansion convolution when expand_ratio is 1."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(inp, hidden, kernel=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(_Module):
    """samples/mobilenetv2.nn: torchvision's mobilenet_v2 (width 1.0, 1000 classes)."""

    SETTINGS = (  # expansion t, width c, repeats n, first stride s
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        features = [_conv_bn_relu6(3, 32, stride=2)]
        width = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(width, c, s if i == 0 else 1, t))
                width = c
        features.append(_conv_bn_relu6(width, 1280, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------- wavenet.nn

def _causal(x, dilation: int, kernel: int):
    """Left-pad the time axis by d*(k-1): the convolution then sees no future step."""
    return F.pad(x, (dilation * (kernel - 1), 0))


class WaveNetLayer(_Module):
    """samples/wavenet.nn's `layer(d)`: returns (residual output, skip)."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.filter = nn.Conv1d(channels, channels, 2, dilation=dilation)
        self.gate = nn.Conv1d(channels, channels, 2, dilation=dilation)
        self.skip = nn.Conv1d(channels, channels, 1)
        self.residual = nn.Conv1d(channels, channels, 1, groups=4)

    def forward(self, x):
        padded = _causal(x, self.dilation, 2)
        z = torch.tanh(self.filter(padded)) * torch.sigmoid(self.gate(padded))
        return x + self.residual(z), self.skip(z)


class WaveNet(_Module):
    """samples/wavenet.nn: causal input conv, four gated layers (d = 1, 2, 4, 8), 1x1 output convs."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.start = nn.Conv1d(1, channels, 2)
        self.layers = nn.ModuleList(WaveNetLayer(channels, d) for d in (1, 2, 4, 8))
        self.end = nn.ModuleList([nn.Conv1d(channels, channels, 1), nn.Conv1d(channels, 1, 1)])

    def forward(self, x):
        h = self.start(_causal(x, 1, 2))
        skips = []
        for layer in self.layers:
            h, skip = layer(h)
            skips.append(skip)
        y = F.relu(torch.stack(skips).sum(0))
        return self.end[1](F.relu(self.end[0](y)))


# ---------------------------------------------------------------- gru.nn, lstm.nn

class GRU40(_Module):
    """samples/gru.nn: gru(40) labelled `rec`, dense(1) labelled `lin`."""

    def __init__(self) -> None:
        super().__init__()
        self.rec = nn.GRU(1, 40, batch_first=True)
        self.lin = nn.Linear(40, 1)

    def forward(self, x):
        h, _ = self.rec(x)
        return self.lin(h)


class LSTMRegressor(_Module):
    """samples/lstm.nn: lstm(32) labelled `rnn`, dense(4) labelled `head`."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, 32, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        h, _ = self.rnn(x)
        return self.head(h)


# ---------------------------------------------------------------- concat.nn

class Inception(_Module):
    """samples/concat.nn's `inception(c1, c3)`: a 1x1 branch and a 1x1-3x3 branch, concatenated."""

    def __init__(self, inp: int, c1: int, c3: int) -> None:
        super().__init__()
        self.branch1 = nn.Conv2d(inp, c1, 1)
        self.branch3 = nn.ModuleList([nn.Conv2d(inp, c3 // 2, 1), nn.Conv2d(c3 // 2, c3, 3, padding=1)])

    def forward(self, x):
        a = F.relu(self.branch1(x))
        b = F.relu(self.branch3[1](F.relu(self.branch3[0](x))))
        return torch.cat([a, b], dim=1)


class InceptionMini(_Module):
    """samples/concat.nn: stem conv + bn, two inception blocks with max pooling, dense head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.mix1 = Inception(16, 8, 16)
        self.mix2 = Inception(24, 16, 32)
        self.head = nn.Linear(48 * 8 * 8, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.max_pool2d(self.mix1(x), 2)
        x = F.max_pool2d(self.mix2(x), 2)
        return self.head(torch.flatten(x, 1))


class _Table(_Module):
    """A learned positional table: `weight [max_len, E]`, rows 0..T-1 added."""

    def __init__(self, max_len: int, embed: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, embed))


class TinyTransformer(_Module):
    """samples/transformer.nn: embedding, positional table, two post-norm
    nn.TransformerEncoderLayer(64, 4, 128, gelu), the mean over time, a linear
    classifier. Takes integer token ids [B, T] (not in `TWINS`: its input is
    integer)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(1000, 64)
        self.pos = _Table(64, 64)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, activation="gelu",
                                                               batch_first=True) for _ in range(2))
        self.head = nn.Linear(64, 5)

    def forward(self, tokens):
        x = self.emb(tokens) + self.pos.weight[:tokens.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.head(x.mean(1))


class CharLM(_Module):
    """samples/charlm.nn: embedding(48, 32), a learned positional table of 64
    rows, one post-norm decoder layer (nn.MultiheadAttention(32, 4,
    batch_first=True) with a causal mask, a gelu MLP 32-128-32, residuals and
    LayerNorms), a linear head to the 48 characters at every step. Takes
    integer character ids [B, T]."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(48, 32)
        self.pos = _Table(64, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.norm1 = nn.LayerNorm(32)
        self.fc1 = nn.Linear(32, 128)
        self.fc2 = nn.Linear(128, 32)
        self.norm2 = nn.LayerNorm(32)
        self.head = nn.Linear(32, 48)

    def forward(self, tokens):
        t = tokens.shape[1]
        p = self.emb(tokens) + self.pos.weight[:t]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        h = self.norm1(p + self.attn(p, p, p, attn_mask=mask, need_weights=False)[0])
        return self.head(self.norm2(h + self.fc2(F.gelu(self.fc1(h)))))


# ---------------------------------------------------------------- unet.nn

class Double(_Module):
    """samples/unet.nn's `double(c)`: two 3x3 convolutions with ReLU, labelled `a` and `b`."""

    def __init__(self, inp: int, c: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(inp, c, 3, padding=1)
        self.b = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return F.relu(self.b(F.relu(self.a(x))))


class UNetMini(_Module):
    """samples/unet.nn: a two-stage U-Net with ConvTranspose2d upsampling and concatenated skips."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2, self.mid = Double(1, 8), Double(8, 16), Double(16, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = Double(32, 16)
        self.up1 = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec1 = Double(16, 8)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1)


# ---------------------------------------------------------------- the catalog

class GatedBlock(_Module):
    """samples/glu_tcn.nn's `gated(c, d)`: a dilated causal conv to 2c channels, glu, residual."""

    def __init__(self, c: int, d: int) -> None:
        super().__init__()
        self.d = d
        self.conv = nn.Conv1d(c, 2 * c, 3, dilation=d)

    def forward(self, x):
        return x + F.glu(self.conv(F.pad(x, (2 * self.d, 0))), dim=1)


class GluTcn(_Module):
    """samples/glu_tcn.nn: 1x1 input conv, three gated blocks (d = 1, 2, 4), 1x1 output conv, tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.start = nn.Conv1d(1, 16, 1)
        self.blocks = nn.ModuleList([GatedBlock(16, d) for d in (1, 2, 4)])
        self.end = nn.Conv1d(16, 1, 1)

    def forward(self, x):
        h = self.start(x)
        for b in self.blocks:
            h = b(h)
        return torch.tanh(self.end(h))


class BiLstmTagger(_Module):
    """samples/bilstm_tagger.nn: a two-layer bidirectional LSTM, a dense tag layer, log_softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(32, 64, num_layers=2, bidirectional=True, batch_first=True)
        self.tags = nn.Linear(128, 12)

    def forward(self, x):
        return F.log_softmax(self.tags(self.rnn(x)[0]), dim=-1)


TIME_STEPS = 64
"""The length the named time dimension `T` takes in tests and reference data."""

TWINS: dict[str, tuple[Callable[[], "nn.Module"], dict[str, tuple[int, ...]]]] = {
    "mlp": (MLP, {"x": (784,)}),
    "lenet": (LeNet, {"x": (1, 28, 28)}),
    "resnet18": (ResNet18, {"x": (3, 224, 224)}),
    "mobilenetv2": (MobileNetV2, {"x": (3, 224, 224)}),
    "wavenet": (WaveNet, {"x": (1, TIME_STEPS)}),
    "gru": (GRU40, {"x": (TIME_STEPS, 1)}),
    "lstm": (LSTMRegressor, {"x": (TIME_STEPS, 8)}),
    "concat": (InceptionMini, {"x": (3, 32, 32)}),
    "unet": (UNetMini, {"x": (1, 32, 32)}),
}
"""Sample file stem -> (twin factory, input shapes without the batch axis)."""

INTEGER_TWINS: dict[str, Callable[[], "nn.Module"]] = {"transformer": TinyTransformer, "charlm": CharLM}
"""Samples with integer inputs: their twins, outside `TWINS` (no float reference data)."""

V2_TWINS: dict[str, Callable[[], "nn.Module"]] = {"glu_tcn": GluTcn, "bilstm_tagger": BiLstmTagger}
"""Section 9 samples tested in test_v2_samples_13c.py and the ONNX round trips
(test_onnx_v2_*.py), outside `TWINS` (no stored reference data for their ops)."""

DIMS: dict[str, dict[str, int]] = {
    "wavenet": {"T": TIME_STEPS},
    "gru": {"T": TIME_STEPS},
    "lstm": {"T": TIME_STEPS},
}
"""Named dimensions of the samples that have them, bound as in `TWINS`' input shapes."""
