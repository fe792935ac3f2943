"""Small PyTorch modules for each section 9 op, exported to ONNX by
tests/test_onnx_v2_import.py and imported back with `nnc.from_onnx`.

In:  nothing (the section 9 samples' own twins are in tests/torch_twins.py:
     `UNetMini`, `GluTcn`, `BiLstmTagger`, `TinyTransformer`, `CharLM`).
Out: `OPS`, mapping a case name to `(factory, input_shapes, integer)`:
     `factory()` builds a `torch.nn.Module` for one op (or one exporter
     pattern); `input_shapes` lists its inputs without the batch axis;
     `integer` says the inputs are token ids (`int[...]` in nnc) drawn below
     `VOCAB`. `EXPECT[name]` is a fragment the imported `.nn` text must hold,
     so a case cannot pass through some other translation.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

VOCAB = 20
"""Token ids of the integer cases are drawn from [0, VOCAB)."""


class _Fn(nn.Module):
    """A parameter-free module around one function."""

    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


class _Wrap(nn.Module):
    """`inner` labelled `layer`, then `after` (a function of its output)."""

    def __init__(self, inner: nn.Module, after: Callable = lambda y: y) -> None:
        super().__init__()
        self.layer = inner
        self.after = after

    def forward(self, x):
        return self.after(self.layer(x))


class _Recurrent(nn.Module):
    """A batch-first recurrent layer labelled `rnn`, its sequence output only."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


class _Embed(nn.Module):
    """nn.Embedding labelled `emb`, then a dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, tokens):
        return self.fc(self.emb(tokens))


class _Table(nn.Module):
    def __init__(self, rows: int, embed: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(rows, embed))


class _Positional(nn.Module):
    """A learned positional table `pos.weight [12, 8]`: rows 0..T-1 added to [T, 8]."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = _Table(12, 8)

    def forward(self, x):
        return torch.relu(x + self.pos.weight[:x.shape[1]])


class _SelfAttention(nn.Module):
    """nn.MultiheadAttention(E, heads, batch_first=True) labelled `attn`, query = key = value."""

    def __init__(self, embed: int = 16, heads: int = 4, causal: bool = False, bias: bool = True,
                 need_weights: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.need_weights = need_weights
        self.attn = nn.MultiheadAttention(embed, heads, batch_first=True, bias=bias)

    def forward(self, x):
        mask = None
        if self.causal:
            t = x.shape[1]
            mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        return self.attn(x, x, x, attn_mask=mask, need_weights=self.need_weights)[0]


class _EncoderLayer(nn.Module):
    """nn.TransformerEncoderLayer(16, 2, 32, batch_first=True) labelled `enc` (relu MLP, post-norm)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)

    def forward(self, x):
        return self.enc(x)


class _PadConv(nn.Module):
    """Reflect padding before nn.Conv1d labelled `conv` (a padding Conv cannot absorb)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3)

    def forward(self, x):
        return self.conv(F.pad(x, (1, 1), mode="reflect"))


class _GroupNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.gn = nn.GroupNorm(3, 6)

    def forward(self, x):
        return self.gn(self.conv(x))


def _two(fn: Callable) -> Callable[[], nn.Module]:
    return lambda: _Fn(fn)


OPS: dict[str, tuple[Callable[[], nn.Module], tuple[tuple[int, ...], ...], bool]] = {
    "conv_transpose1d": (lambda: _Wrap(nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1)),
                         ((4, 10),), False),
    "conv_transpose2d": (lambda: _Wrap(nn.ConvTranspose2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0),
                                                          dilation=(1, 2), groups=2, bias=False)),
                         ((4, 5, 6),), False),
    "upsample_nearest": (_two(lambda x: F.interpolate(x, scale_factor=2, mode="nearest")), ((3, 4, 5),), False),
    "upsample_linear": (_two(lambda x: F.interpolate(x, scale_factor=3, mode="linear")), ((3, 7),), False),
    "upsample_bilinear": (lambda: _Wrap(nn.Upsample(scale_factor=(2, 3), mode="bilinear")), ((2, 4, 5),), False),
    "pad_constant": (_two(lambda x: torch.sigmoid(F.pad(x, (1, 2, 0, 3), value=0.5))), ((2, 4, 5),), False),
    "pad_reflect": (_two(lambda x: F.pad(x, (2, 1, 1, 3), mode="reflect")), ((2, 5, 6),), False),
    "pad_replicate": (_two(lambda x: F.pad(x, (3, 1), mode="replicate")), ((3, 6),), False),
    "pad_reflect_before_conv": (lambda: _PadConv(), ((3, 8),), False),
    "global_maxpool": (lambda: _Wrap(nn.AdaptiveMaxPool2d(1), lambda y: torch.flatten(y, 1)), ((3, 5, 6),), False),
    "adaptive_avgpool2d": (lambda: _Wrap(nn.AdaptiveAvgPool2d((2, 3))), ((3, 8, 9),), False),
    "adaptive_avgpool1d_uneven": (lambda: _Wrap(nn.AdaptiveAvgPool1d(3)), ((2, 10),), False),
    "groupnorm": (_GroupNorm, ((3, 5, 5),), False),
    "instancenorm_affine": (lambda: _Wrap(nn.InstanceNorm2d(3, affine=True)), ((3, 5, 6),), False),
    "instancenorm": (lambda: _Wrap(nn.InstanceNorm1d(3, eps=1e-3)), ((3, 9),), False),
    "gru_2layer_bidirectional": (lambda: _Recurrent(nn.GRU(5, 6, num_layers=2, bidirectional=True,
                                                           batch_first=True)), ((7, 5),), False),
    "lstm_2layer_bidirectional": (lambda: _Recurrent(nn.LSTM(5, 6, num_layers=2, bidirectional=True,
                                                             batch_first=True)), ((7, 5),), False),
    "rnn_relu_2layer": (lambda: _Recurrent(nn.RNN(5, 6, num_layers=2, nonlinearity="relu", batch_first=True)),
                        ((7, 5),), False),
    "rnn_tanh_bidirectional_nobias": (lambda: _Recurrent(nn.RNN(5, 6, bidirectional=True, bias=False,
                                                                batch_first=True)), ((7, 5),), False),
    "embedding": (_Embed, ((6,),), True),
    "positional": (_Positional, ((9, 8),), False),
    "attention": (lambda: _SelfAttention(), ((6, 16),), False),
    "attention_causal": (lambda: _SelfAttention(causal=True), ((6, 16),), False),
    "attention_nobias": (lambda: _SelfAttention(8, 2, bias=False), ((5, 8),), False),
    "attention_with_weights": (lambda: _SelfAttention(12, 3, causal=True, need_weights=True), ((7, 12),), False),
    "encoder_layer": (_EncoderLayer, ((6, 16),), False),
    "matmul": (_two(lambda a, b: torch.matmul(a, b)), ((3, 4), (4, 5)), False),
    "div": (_two(lambda a, b: a / torch.sigmoid(b)), ((3, 4), (3, 4)), False),
    "glu": (_two(lambda x: F.glu(x, dim=-1)), ((3, 8),), False),
    "slice": (_two(lambda x: x[:, 1:, 2:7:2]), ((4, 9),), False),
    "slice_negative": (_two(lambda x: x[..., -3:]), ((2, 6),), False),
    "select": (_two(lambda x: x[:, -1]), ((5, 4),), False),
    "mean": (_two(lambda x: x.mean(-1)), ((3, 4, 5),), False),
    "mean_keepdim": (_two(lambda x: torch.relu(x.mean(1, keepdim=True))), ((3, 4),), False),
    "sum": (_two(lambda x: x.sum((1, 2))), ((3, 4, 5),), False),
    "max": (_two(lambda x: x.amax(1)), ((3, 4),), False),
    "clamp": (_two(lambda x: torch.clamp(x, -0.5, 0.7)), ((3, 4),), False),
    "clamp_min": (_two(lambda x: torch.clamp(x, min=0.1)), ((3, 4),), False),
    "neg_abs_exp": (_two(lambda x: torch.exp(-torch.abs(x))), ((3, 4),), False),
    "log_sqrt": (_two(lambda x: torch.log(torch.sqrt(torch.sigmoid(x)))), ((3, 4),), False),
    "square_mul": (_two(lambda x: x * x), ((3, 4),), False),
    "square_pow": (_two(lambda x: x ** 2), ((3, 4),), False),
}
"""Case name -> (module factory, input shapes without batch, integer inputs)."""

EXPECT: dict[str, str] = {
    "conv_transpose1d": "layer: conv_transpose1d(6, 3, stride=2, padding=1, output_padding=1)",
    "conv_transpose2d": "layer: conv_transpose2d(6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), "
                        "groups=2, bias=false)",
    "upsample_nearest": "upsample(2)",
    "upsample_linear": "upsample(3, mode=linear)",
    "upsample_bilinear": "upsample((2, 3), mode=bilinear)",
    "pad_constant": "pad((1, 2, 0, 3), value=0.5)",
    "pad_reflect": "pad((2, 1, 1, 3), mode=reflect)",
    "pad_replicate": "pad((3, 1), mode=replicate)",
    "pad_reflect_before_conv": "pad((1, 1), mode=reflect)",
    "global_maxpool": "global_maxpool",
    "adaptive_avgpool2d": "avgpool2d((4, 3))",
    "adaptive_avgpool1d_uneven": "adaptive_avgpool1d(3)",
    "groupnorm": "gn: groupnorm(3)",
    "instancenorm_affine": "layer: instancenorm(affine=true)",
    "instancenorm": "instancenorm(eps=0.001)",
    "gru_2layer_bidirectional": "rnn: gru(6, layers=2, bidirectional=true)",
    "lstm_2layer_bidirectional": "rnn: lstm(6, layers=2, bidirectional=true)",
    "rnn_relu_2layer": "rnn: rnn(6, nonlinearity=relu, layers=2)",
    "rnn_tanh_bidirectional_nobias": "rnn: rnn(6, bidirectional=true, bias=false)",
    "embedding": "emb: embedding(20, 8)",
    "positional": "pos: positional(12)",
    "attention": "attn: attention(4)",
    "attention_causal": "attn: attention(4, causal=true)",
    "attention_nobias": "attn: attention(2, bias=false)",
    "attention_with_weights": "attn: attention(3, causal=true)",
    "encoder_layer": "enc.self_attn: attention(2)",
    "matmul": "matmul(",
    "div": "div(",
    "glu": "glu(1)",
    "slice": "slice(1, 2, 7, step=2)",
    "slice_negative": "slice(1, -3)",
    "select": "select(0, -1)",
    "mean": "mean(2)",
    "mean_keepdim": "mean(0)",
    "sum": "sum((0, 1))",
    "max": "max(0)",
    "clamp": "clamp(min=-0.5, max=0.7)",
    "clamp_min": "clamp(min=0.1)",
    "neg_abs_exp": "neg",
    "log_sqrt": "sqrt",
    "square_mul": "square",
    "square_pow": "square",
}
"""Case name -> a fragment of the imported text (the op the case must become)."""
