"""Shape inference, parameters and MACs of the front end (`frontend.check`).

Pins, for every op of `ops.CATALOG`, the output shape and the parameter names
and shapes a small model infers, and (when torch is importable) that the
equivalent PyTorch module gives the same output shape on a random tensor and
a `state_dict` of the same keys and shapes. Then: conv1d's padding modes
crossed with stride, dilation and groups; symbolic sizes and their bounds;
automatic labels and block prefixes; `NAME.shape[i]` arguments,
destructuring, shadowing and chain continuation; the published parameter
counts; and every sample against its PyTorch twin in `tests/torch_twins.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from nnc import CompileError
from nnc.compiler.dims import Sym, evaluate, floordiv
from nnc.compiler.frontend import check
from nnc.compiler.ir import Graph
from nnc.compiler.ops import CATALOG
from torch_twins import DIMS, TWINS

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
T = Sym.var("T")


# ---------------------------------------------------------------- helpers

def model(inputs: dict[str, tuple], body: str) -> str:
    """The text of a model `m` with the given inputs and statements."""
    header = ", ".join(f"{name}: [{', '.join(map(str, shape))}]" for name, shape in inputs.items())
    lines = "\n".join(f"    {line}" for line in body.strip().splitlines())
    return f"model m({header}) {{\n{lines}\n}}\n"


def output_shape(graph: Graph, index: int = 0) -> tuple:
    return graph.shape_of(graph.outputs[index].value)


def param_shapes(graph: Graph) -> dict[str, tuple[int, ...]]:
    return {key: tuple(spec.shape) for key, spec in graph.param_specs().items()}


def codes(error: CompileError) -> list[str]:
    return [d.code for d in error.diagnostics]


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return torch


def functional(torch, fn: Callable) -> Any:
    """A parameter-free torch module that computes `fn` of its inputs."""

    class Functional(torch.nn.Module):
        def forward(self, *xs):
            return fn(*xs)

    return Functional()


def causal_conv1d(torch, cin: int, cout: int, k: int, dilation: int = 1, groups: int = 1, stride: int = 1) -> Any:
    """A Conv1d whose input is left-padded by d*(k-1), as `padding=causal`."""
    conv = torch.nn.Conv1d(cin, cout, k, stride=stride, dilation=dilation, groups=groups)
    pad = dilation * (k - 1)
    conv.forward = lambda x: torch.nn.Conv1d.forward(conv, torch.nn.functional.pad(x, (pad, 0)))
    return conv


def twin_state_shapes(module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


# ---------------------------------------------------------------- one case per op

@dataclass(frozen=True, slots=True)
class OpCase:
    """A small model exercising `op`: its text, the output shape and parameters
    nnc must infer, and a PyTorch twin (torch -> module) computing the same.
    Single-step cases label their step `layer`, so the twin is registered
    under that name and the state_dict keys line up."""

    id: str
    op: str                                   # the CATALOG key the case covers
    inputs: dict[str, tuple[int, ...]]
    body: str
    out: tuple[int, ...]
    params: dict[str, tuple[int, ...]]
    twin: Callable[[Any], Any]

    @property
    def source(self) -> str:
        return model(self.inputs, self.body)


def step(id: str, op: str, shape: tuple[int, ...], text: str, out: tuple[int, ...],
         params: dict[str, tuple[int, ...]], twin: Callable) -> OpCase:
    """A case of one labelled step `layer: TEXT` on an input `x` of `shape`."""
    named = {f"layer.{k}": v for k, v in params.items()}
    return OpCase(id, op, {"x": shape}, f"layer: {text}", out, named, twin)


def merge(id: str, op: str, shapes: list[tuple[int, ...]], text: str, out: tuple[int, ...],
          twin: Callable) -> OpCase:
    """A case of a merge over model inputs `a`, `b`, `c`, ..."""
    inputs = {name: shape for name, shape in zip("abcdef", shapes)}
    return OpCase(id, op, inputs, text, out, {}, twin)


def bn(c: int) -> dict[str, tuple[int, ...]]:
    return {"weight": (c,), "bias": (c,), "running_mean": (c,), "running_var": (c,)}


def rnn(gates: int, hidden: int, features: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    ps = {"weight_ih_l0": (gates * hidden, features), "weight_hh_l0": (gates * hidden, hidden)}
    if bias:
        ps |= {"bias_ih_l0": (gates * hidden,), "bias_hh_l0": (gates * hidden,)}
    return ps


ACTIVATIONS = {
    "relu": "ReLU", "relu6": "ReLU6", "sigmoid": "Sigmoid", "tanh": "Tanh", "gelu": "GELU",
    "silu": "SiLU", "selu": "SELU", "softplus": "Softplus", "hardsigmoid": "Hardsigmoid",
    "hardswish": "Hardswish",
}

OP_CASES: list[OpCase] = [
    # dense
    step("dense_on_a_vector", "dense", (12,), "dense(5)", (5,), {"weight": (5, 12), "bias": (5,)},
         lambda t: t.nn.Linear(12, 5)),
    step("dense_on_a_sequence_maps_the_last_axis", "dense", (7, 12), "dense(5)", (7, 5),
         {"weight": (5, 12), "bias": (5,)}, lambda t: t.nn.Linear(12, 5)),
    step("linear_alias_without_bias", "linear", (12,), "linear(5, bias=false)", (5,), {"weight": (5, 12)},
         lambda t: t.nn.Linear(12, 5, bias=False)),
    # convolutions (conv1d's padding modes are crossed with stride etc. below)
    step("conv1d_valid", "conv1d", (4, 20), "conv1d(6, 3)", (6, 18), {"weight": (6, 4, 3), "bias": (6,)},
         lambda t: t.nn.Conv1d(4, 6, 3)),
    step("conv2d_with_pairs", "conv2d", (3, 20, 18),
         "conv2d(8, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2))", (8, 10, 14),
         {"weight": (8, 3, 3, 5), "bias": (8,)},
         lambda t: t.nn.Conv2d(3, 8, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2))),
    step("conv2d_same_with_an_even_kernel_pads_asymmetrically", "conv2d", (3, 9, 11),
         "conv2d(4, 4, padding=same)", (4, 9, 11), {"weight": (4, 3, 4, 4), "bias": (4,)},
         lambda t: t.nn.Conv2d(3, 4, 4, padding="same")),
    step("conv2d_same_with_a_dilated_pair_kernel", "conv2d", (3, 9, 11),
         "conv2d(4, (2, 4), padding=same, dilation=2, bias=false)", (4, 9, 11), {"weight": (4, 3, 2, 4)},
         lambda t: t.nn.Conv2d(3, 4, (2, 4), padding="same", dilation=2, bias=False)),
    step("conv2d_valid_grouped", "conv2d", (4, 10, 10), "conv2d(6, 3, padding=valid, groups=2, bias=false)",
         (6, 8, 8), {"weight": (6, 2, 3, 3)}, lambda t: t.nn.Conv2d(4, 6, 3, groups=2, bias=False)),
    step("depthwise_conv2d", "depthwise_conv2d", (4, 10, 10), "depthwise_conv2d(3, padding=1)", (4, 10, 10),
         {"weight": (4, 1, 3, 3), "bias": (4,)}, lambda t: t.nn.Conv2d(4, 4, 3, padding=1, groups=4)),
    step("depthwise_conv2d_with_multiplier_and_stride", "depthwise_conv2d", (4, 10, 10),
         "depthwise_conv2d(3, multiplier=2, stride=2, bias=false)", (8, 4, 4), {"weight": (8, 1, 3, 3)},
         lambda t: t.nn.Conv2d(4, 8, 3, stride=2, groups=4, bias=False)),
    # pooling
    step("maxpool1d_stride_defaults_to_the_kernel", "maxpool1d", (3, 11), "maxpool1d(2)", (3, 5), {},
         lambda t: t.nn.MaxPool1d(2)),
    step("maxpool1d_with_padding", "maxpool1d", (3, 10), "maxpool1d(3, stride=2, padding=1)", (3, 5), {},
         lambda t: t.nn.MaxPool1d(3, stride=2, padding=1)),
    step("avgpool1d_with_padding", "avgpool1d", (3, 10), "avgpool1d(4, stride=3, padding=2)", (3, 4), {},
         lambda t: t.nn.AvgPool1d(4, stride=3, padding=2)),
    step("maxpool2d_with_padding", "maxpool2d", (2, 9, 9), "maxpool2d(3, stride=2, padding=1)", (2, 5, 5), {},
         lambda t: t.nn.MaxPool2d(3, stride=2, padding=1)),
    step("avgpool2d_with_pairs", "avgpool2d", (2, 9, 10), "avgpool2d((2, 3), stride=(2, 2), padding=(1, 1))",
         (2, 5, 5), {}, lambda t: t.nn.AvgPool2d((2, 3), stride=(2, 2), padding=(1, 1))),
    step("global_avgpool_of_an_image", "global_avgpool", (5, 6, 7), "global_avgpool", (5,), {},
         lambda t: functional(t, lambda x: x.mean(dim=(2, 3)))),
    step("global_avgpool_of_a_signal", "global_avgpool", (5, 9), "global_avgpool", (5,), {},
         lambda t: functional(t, lambda x: x.mean(dim=2))),
    # normalisation
    step("batchnorm_of_an_image", "batchnorm", (6, 4, 4), "batchnorm", (6, 4, 4), bn(6),
         lambda t: t.nn.BatchNorm2d(6)),
    step("batchnorm_of_a_signal", "batchnorm", (6, 10), "batchnorm(eps=0.001)", (6, 10), bn(6),
         lambda t: t.nn.BatchNorm1d(6, eps=0.001)),
    step("batchnorm_of_a_vector", "batchnorm", (6,), "batchnorm", (6,), bn(6), lambda t: t.nn.BatchNorm1d(6)),
    step("layernorm_of_the_last_axis", "layernorm", (7, 10), "layernorm", (7, 10),
         {"weight": (10,), "bias": (10,)}, lambda t: t.nn.LayerNorm(10)),
    step("prelu_per_channel", "prelu", (3, 5, 5), "prelu", (3, 5, 5), {"weight": (3,)},
         lambda t: t.nn.PReLU(3)),
    step("prelu_shared", "prelu", (3, 5, 5), "prelu(shared=true)", (3, 5, 5), {"weight": (1,)},
         lambda t: t.nn.PReLU()),
    # recurrent
    step("gru", "gru", (9, 6), "gru(5)", (9, 5), rnn(3, 5, 6), lambda t: t.nn.GRU(6, 5, batch_first=True)),
    step("gru_without_bias", "gru", (9, 6), "gru(5, bias=false)", (9, 5), rnn(3, 5, 6, bias=False),
         lambda t: t.nn.GRU(6, 5, bias=False, batch_first=True)),
    step("lstm", "lstm", (9, 6), "lstm(4)", (9, 4), rnn(4, 4, 6), lambda t: t.nn.LSTM(6, 4, batch_first=True)),
    # section 6's signature, gru(hidden, bias): a true/false second argument is the bias, not v2's `layers`
    step("gru_v1_positional_bias", "gru", (9, 6), "gru(5, false)", (9, 5), rnn(3, 5, 6, bias=False),
         lambda t: t.nn.GRU(6, 5, bias=False, batch_first=True)),
    step("lstm_v1_positional_bias", "lstm", (9, 6), "lstm(4, true)", (9, 4), rnn(4, 4, 6),
         lambda t: t.nn.LSTM(6, 4, batch_first=True)),
    # section 9: stacked and two-way layers, and nn.RNN (helper 13C)
    step("lstm_two_layers_bidirectional", "lstm", (9, 6), "lstm(4, layers=2, bidirectional=true)", (9, 8),
         {f"{w}_l{k}{d}": s for k in range(2) for d in ("", "_reverse")
          for w, s in (("weight_ih", (16, 6 if k == 0 else 8)), ("weight_hh", (16, 4)), ("bias_ih", (16,)),
                       ("bias_hh", (16,)))},
         lambda t: t.nn.LSTM(6, 4, num_layers=2, bidirectional=True, batch_first=True)),
    step("gru_three_layers", "gru", (9, 6), "gru(5, layers=3, bias=false)", (9, 5),
         {f"{w}_l{k}": s for k in range(3) for w, s in (("weight_ih", (15, 6 if k == 0 else 5)),
                                                         ("weight_hh", (15, 5)))},
         lambda t: t.nn.GRU(6, 5, num_layers=3, bias=False, batch_first=True)),
    step("rnn_tanh", "rnn", (9, 6), "rnn(5)", (9, 5), rnn(1, 5, 6), lambda t: t.nn.RNN(6, 5, batch_first=True)),
    step("rnn_relu_bidirectional", "rnn", (9, 6), "rnn(5, nonlinearity=relu, bidirectional=true)", (9, 10),
         {**rnn(1, 5, 6), **{f"{k}_reverse": v for k, v in rnn(1, 5, 6).items()}},
         lambda t: t.nn.RNN(6, 5, nonlinearity="relu", bidirectional=True, batch_first=True)),
    # activations
    *(step(name, name, (3, 4), name, (3, 4), {}, lambda t, cls=cls: getattr(t.nn, cls)())
      for name, cls in ACTIVATIONS.items()),
    step("leaky_relu", "leaky_relu", (3, 4), "leaky_relu(0.2)", (3, 4), {}, lambda t: t.nn.LeakyReLU(0.2)),
    step("elu", "elu", (3, 4), "elu(alpha=0.5)", (3, 4), {}, lambda t: t.nn.ELU(0.5)),
    step("softmax_default_axis", "softmax", (3, 4, 5), "softmax", (3, 4, 5), {}, lambda t: t.nn.Softmax(dim=-1)),
    step("softmax_axis_0", "softmax", (3, 4, 5), "softmax(axis=0)", (3, 4, 5), {}, lambda t: t.nn.Softmax(dim=1)),
    step("log_softmax_axis_1", "log_softmax", (3, 4, 5), "log_softmax(axis=1)", (3, 4, 5), {},
         lambda t: t.nn.LogSoftmax(dim=2)),
    # shape ops
    step("flatten", "flatten", (3, 4, 5), "flatten", (60,), {}, lambda t: t.nn.Flatten()),
    step("reshape_with_minus_one", "reshape", (3, 4, 5), "reshape((-1, 10))", (6, 10), {},
         lambda t: functional(t, lambda x: x.reshape(x.shape[0], -1, 10))),
    step("reshape_without_minus_one", "reshape", (3, 4, 5), "reshape((5, 12))", (5, 12), {},
         lambda t: functional(t, lambda x: x.reshape(x.shape[0], 5, 12))),
    step("transpose", "transpose", (3, 4, 5), "transpose((2, 0, 1))", (5, 3, 4), {},
         lambda t: functional(t, lambda x: x.permute(0, 3, 1, 2))),
    step("upsample_1d", "upsample", (3, 5), "upsample(2)", (3, 10), {},
         lambda t: t.nn.Upsample(scale_factor=2, mode="nearest")),
    step("upsample_2d", "upsample", (3, 4, 5), "upsample(2)", (3, 8, 10), {},
         lambda t: t.nn.Upsample(scale_factor=2, mode="nearest")),
    step("upsample_2d_with_a_pair", "upsample", (3, 4, 5), "upsample((2, 3))", (3, 8, 15), {},
         lambda t: t.nn.Upsample(scale_factor=(2, 3), mode="nearest")),
    step("dropout", "dropout", (3, 4), "dropout(0.3)", (3, 4), {}, lambda t: t.nn.Dropout(0.3)),
    step("identity", "identity", (3, 4), "identity", (3, 4), {}, lambda t: t.nn.Identity()),
    # section 9: elementwise math and axis ops (helper 13C)
    *(step(name, name, (3, 4), name, (3, 4), {}, lambda t, name=name: functional(t, getattr(t, name)))
      for name in ("neg", "abs", "exp", "log", "sqrt", "square")),
    step("clamp_max_only", "clamp", (3, 4), "clamp(max=0.5)", (3, 4), {},
         lambda t: functional(t, lambda x: t.clamp(x, max=0.5))),
    step("glu_last_axis", "glu", (3, 8), "glu(-1)", (3, 4), {}, lambda t: t.nn.GLU(dim=-1)),
    step("slice_negative_start_clamped_end", "slice", (7, 4), "slice(0, -5, 100, 2)", (3, 4), {},
         lambda t: functional(t, lambda x: x[:, -5:100:2])),
    step("select_last_step", "select", (7, 4), "select(0, -1)", (4,), {},
         lambda t: functional(t, lambda x: x[:, -1])),
    step("mean_of_two_axes", "mean", (3, 4, 5), "mean((0, -1))", (4,), {},
         lambda t: functional(t, lambda x: x.mean(dim=(1, 3)))),
    step("sum_of_one_axis", "sum", (3, 4, 5), "sum(1)", (3, 5), {}, lambda t: functional(t, lambda x: x.sum(dim=2))),
    step("max_as_amax", "max", (3, 4, 5), "max(-1)", (3, 4), {}, lambda t: functional(t, lambda x: x.amax(dim=3))),
    # section 9: spatial ops (helper 13B)
    step("conv_transpose2d_output_padding_groups", "conv_transpose2d", (4, 5, 6),
         "conv_transpose2d(6, 3, stride=2, padding=1, output_padding=1, groups=2)", (6, 10, 12),
         {"weight": (4, 3, 3, 3), "bias": (6,)},
         lambda t: t.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)),
    step("conv_transpose1d_dilated", "conv_transpose1d", (3, 9), "conv_transpose1d(5, 4, stride=3, dilation=2)",
         (5, 31), {"weight": (3, 5, 4), "bias": (5,)}, lambda t: t.nn.ConvTranspose1d(3, 5, 4, stride=3, dilation=2)),
    step("pad_reflect_last_two", "pad", (3, 4, 5), "pad((1, 2, 3, 0), mode=reflect)", (3, 7, 8), {},
         lambda t: t.nn.ReflectionPad2d((1, 2, 3, 0))),
    step("global_maxpool_of_an_image", "global_maxpool", (5, 6, 7), "global_maxpool", (5,), {},
         lambda t: functional(t, lambda x: x.amax(dim=(2, 3)))),
    step("adaptive_avgpool2d_pair", "adaptive_avgpool2d", (3, 7, 9), "adaptive_avgpool2d((2, 4))", (3, 2, 4), {},
         lambda t: t.nn.AdaptiveAvgPool2d((2, 4))),
    step("adaptive_avgpool1d", "adaptive_avgpool1d", (3, 10), "adaptive_avgpool1d(4)", (3, 4), {},
         lambda t: t.nn.AdaptiveAvgPool1d(4)),
    step("groupnorm", "groupnorm", (6, 4, 4), "groupnorm(3)", (6, 4, 4), {"weight": (6,), "bias": (6,)},
         lambda t: t.nn.GroupNorm(3, 6)),
    step("instancenorm_affine", "instancenorm", (6, 10), "instancenorm(affine=true)", (6, 10),
         {"weight": (6,), "bias": (6,)}, lambda t: t.nn.InstanceNorm1d(6, affine=True)),
    # section 9: the transformer family (helper 13A; edge cases in tests/test_v2_attention.py)
    step("positional", "positional", (6, 8), "positional(10)", (6, 8), {"weight": (10, 8)},
         lambda t: _Positional(t, 10, 8)),
    step("attention_causal", "attention", (6, 8), "attention(2, causal=true)", (6, 8),
         {"in_proj_weight": (24, 8), "in_proj_bias": (24,), "out_proj.weight": (8, 8), "out_proj.bias": (8,)},
         lambda t: _SelfAttention(t, 8, 2)),
    merge("matmul", "matmul", [(2, 3, 4), (2, 4, 5)], "matmul(a, b)", (2, 3, 5),
          lambda t: functional(t, lambda a, b: a @ b)),
    merge("div", "div", [(3, 4), (3, 4)], "div(a, b)", (3, 4), lambda t: functional(t, lambda a, b: a / b)),
    # merges
    merge("add_of_two", "add", [(3, 4), (3, 4)], "add(a, b)", (3, 4), lambda t: functional(t, lambda a, b: a + b)),
    merge("add_of_three", "add", [(3, 4)] * 3, "add(a, b, c)", (3, 4),
          lambda t: functional(t, lambda a, b, c: a + b + c)),
    merge("sub", "sub", [(3, 4), (3, 4)], "sub(a, b)", (3, 4), lambda t: functional(t, lambda a, b: a - b)),
    merge("mul", "mul", [(2, 3, 4), (2, 3, 4)], "mul(a, b)", (2, 3, 4), lambda t: functional(t, lambda a, b: a * b)),
    merge("concat_on_axis_0_by_default", "concat", [(3, 4), (2, 4)], "concat(a, b)", (5, 4),
          lambda t: functional(t, lambda a, b: t.cat([a, b], dim=1))),
    merge("concat_on_axis_1", "concat", [(3, 4), (3, 6), (3, 1)], "concat(a, b, c, axis=1)", (3, 11),
          lambda t: functional(t, lambda a, b, c: t.cat([a, b, c], dim=2))),
    merge("concat_on_axis_minus_1", "concat", [(2, 3, 4), (2, 3, 5)], "concat(a, b, axis=-1)", (2, 3, 9),
          lambda t: functional(t, lambda a, b: t.cat([a, b], dim=3))),
]


# `embedding` takes an integer input, which these float cases cannot feed: its
# shape, parameter and twin cases are in tests/test_v2_attention.py.
ELSEWHERE = {"embedding"}


def test_every_catalog_op_has_a_shape_case():
    covered = {case.op for case in OP_CASES} | ELSEWHERE
    assert set(CATALOG) - covered == set()


def _Positional(t, max_len, e):
    class Positional(t.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = t.nn.Parameter(t.zeros(max_len, e))

        def forward(self, x):
            return x + self.weight[: x.shape[1]]
    return Positional()


def _SelfAttention(t, e, heads):
    class SelfAttention(t.nn.MultiheadAttention):
        def forward(self, x):
            mask = t.nn.Transformer.generate_square_subsequent_mask(x.shape[1])
            return super().forward(x, x, x, attn_mask=mask, need_weights=False)[0]
    return SelfAttention(e, heads, batch_first=True)


@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.id)
def test_op_infers_output_shape_and_parameters(case):
    graph = check(case.source).graph
    assert any(n.op is CATALOG[case.op] for n in graph.nodes)
    assert output_shape(graph) == case.out
    assert param_shapes(graph) == case.params


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.id)
def test_op_agrees_with_pytorch_on_output_shape_and_state_dict(torch, case):
    graph = check(case.source).graph
    layer = case.twin(torch).eval()
    root = torch.nn.ModuleDict({"layer": layer})
    inputs = [torch.randn(2, *shape) for shape in case.inputs.values()]
    with torch.no_grad():
        y = layer(*inputs)
    if isinstance(y, tuple):        # recurrent modules return (output, state)
        y = y[0]
    assert tuple(y.shape) == (2, *output_shape(graph))
    assert param_shapes(graph) == twin_state_shapes(root)


# ---------------------------------------------------------------- conv1d padding modes

def expected_conv1d_size(n: int, k: int, stride: int, padding, dilation: int) -> int:
    """PyTorch's rule, with the language's padding words turned into amounts."""
    if padding == "same":
        return n
    if padding == "causal":                   # a left pad of d*(k-1): at stride 1 the length is kept
        return (n - 1) // stride + 1
    pad = 0 if padding == "valid" else 2 * padding
    return (n + pad - dilation * (k - 1) - 1) // stride + 1


def conv1d_twin(torch, cin, cout, k, stride, padding, dilation, groups):
    if padding == "causal":
        return causal_conv1d(torch, cin, cout, k, dilation, groups, stride)
    return torch.nn.Conv1d(cin, cout, k, stride=stride, padding=padding, dilation=dilation, groups=groups)


CONV1D_GRID = [(padding, stride, dilation, groups)
               for padding in (0, 2, "valid", "same", "causal")
               for stride in (1, 2)
               for dilation in (1, 2)
               for groups in (1, 2)
               if not (padding == "same" and stride != 1)]     # causal at stride 2 too (it was E0306)


@pytest.mark.parametrize("padding, stride, dilation, groups", CONV1D_GRID)
def test_conv1d_padding_modes_with_stride_dilation_and_groups(padding, stride, dilation, groups):
    text = f"conv1d(6, 3, stride={stride}, padding={padding}, dilation={dilation}, groups={groups})"
    graph = check(model({"x": (4, 21)}, text)).graph
    assert output_shape(graph) == (6, expected_conv1d_size(21, 3, stride, padding, dilation))
    assert param_shapes(graph) == {"conv1d_0.weight": (6, 4 // groups, 3), "conv1d_0.bias": (6,)}


@pytest.mark.parametrize("padding, stride, dilation, groups", CONV1D_GRID)
def test_conv1d_padding_modes_agree_with_pytorch(torch, padding, stride, dilation, groups):
    text = f"conv1d_0: conv1d(6, 3, stride={stride}, padding={padding}, dilation={dilation}, groups={groups})"
    graph = check(model({"x": (4, 21)}, text)).graph
    conv = conv1d_twin(torch, 4, 6, 3, stride, padding, dilation, groups)
    with torch.no_grad():
        y = conv(torch.randn(1, 4, 21))
    assert tuple(y.shape) == (1, *output_shape(graph))
    assert param_shapes(graph) == twin_state_shapes(torch.nn.ModuleDict({"conv1d_0": conv}))


def test_causal_padding_pads_only_the_past():
    node = check(model({"x": (2, 16)}, "conv1d(2, 3, dilation=4, padding=causal)")).graph.nodes[0]
    assert node.attrs["pads"] == ((8, 0),)


def test_same_padding_with_an_even_kernel_puts_the_extra_zero_after():
    node = check(model({"x": (2, 16)}, "conv1d(2, 4, padding=same)")).graph.nodes[0]
    assert node.attrs["pads"] == ((1, 2),)


def test_same_padding_with_stride_2_is_refused():
    with pytest.raises(CompileError) as e:        # (causal is a left pad at any stride: the grid above)
        check(model({"x": (2, 16)}, "conv1d(2, 3, stride=2, padding=same)"))
    assert codes(e.value) == ["E0306"]


def test_groups_that_do_not_divide_the_channels_are_refused():
    with pytest.raises(CompileError) as e:
        check(model({"x": (6, 16)}, "conv1d(8, 3, groups=4)"))
    assert codes(e.value) == ["E0202"]
    assert "6 input channels" in e.value.diagnostics[0].message


def test_kernel_larger_than_the_padded_input_is_refused():
    with pytest.raises(CompileError) as e:
        check(model({"x": (1, 6, 6)}, "conv2d(4, 5, padding=valid) -> conv2d(4, 3)"))
    assert codes(e.value) == ["E0201"]


def test_dense_after_an_image_without_flatten_is_refused_with_a_hint():
    with pytest.raises(CompileError) as e:
        check(model({"x": (16, 5, 5)}, "dense(120)"))
    (diag,) = e.value.diagnostics
    assert diag.code == "E0203" and "flatten" in diag.hint


# ---------------------------------------------------------------- symbolic sizes

def test_valid_conv1d_on_a_named_length_gives_t_minus_4():
    graph = check(model({"x": (1, "T")}, "conv1d(4, 5)")).graph
    assert graph.inputs[0].shape == (1, T)
    assert output_shape(graph) == (4, T - 4)
    assert str(output_shape(graph)[1]) == "T - 4"
    assert graph.time_dim == "T"


def test_strided_conv1d_on_a_named_length_keeps_the_floor_division():
    graph = check(model({"x": (1, "T")}, "conv1d(4, 3, stride=2, padding=1)")).graph
    assert output_shape(graph) == (4, floordiv(T - 1, 2) + 1)


def test_compile_time_bound_is_recorded_but_shapes_stay_symbolic():
    graph = check(model({"x": (1, "T")}, "conv1d(4, 5)"), {"T": 100}).graph
    assert graph.bounds == {"T": 100}
    assert output_shape(graph) == (4, T - 4)
    assert evaluate(output_shape(graph)[1], graph.bounds) == 96


def test_bound_written_in_the_source_is_recorded():
    graph = check("model m(x: [1, T=4096]) {\n    conv1d(4, 5)\n}\n").graph
    assert graph.bounds == {"T": 4096}


def test_compile_time_bound_for_an_unknown_dimension_is_refused():
    with pytest.raises(CompileError) as e:
        check(model({"x": (1, "T")}, "relu"), {"N": 10})
    assert codes(e.value) == ["E0207"]


def test_flatten_of_a_signal_with_a_named_length_multiplies_out():
    graph = check(model({"x": (3, "T")}, "flatten")).graph
    assert output_shape(graph) == (3 * T,)


def test_dense_over_a_named_number_of_steps_counts_macs_per_step():
    graph = check(model({"x": ("T", 8)}, "dense(4)")).graph
    assert output_shape(graph) == (T, 4)
    assert graph.nodes[0].macs == 32 * T


def test_symbolic_channel_count_is_refused():
    with pytest.raises(CompileError) as e:
        check(model({"x": ("T", 9)}, "conv1d(4, 3)"))
    assert codes(e.value) == ["E0206"]


def test_slice_of_a_named_axis_is_refused_with_help_that_fits_the_time_axis():
    with pytest.raises(CompileError) as e:
        check(model({"x": (4, "T")}, "slice(1, 2)"))
    (d,) = e.value.diagnostics
    assert d.code == "E0206" and "`T` is a named size" in d.hint and "select(1, -1)" in d.hint
    assert "only the time axis" not in d.hint       # the old help said so of the time axis itself


def test_two_pools_match_one_pool_of_their_product_in_a_merge():
    # T // 2 // 3 == T // 6 for every T, so the shapes are equal and add is valid.
    body = "a = x -> maxpool1d(2) -> maxpool1d(3)\nb = x -> maxpool1d(6)\nadd(a, b)"
    graph = check(model({"x": (2, "T")}, body)).graph
    assert output_shape(graph) == (2, floordiv(T, 6))


# ---------------------------------------------------------------- labels and statements

def test_unlabelled_steps_count_each_op_from_zero():
    graph = check(model({"x": (8,)}, "dense(6) -> relu\ndense(4) -> relu\ndense(2)")).graph
    assert [n.label for n in graph.nodes] == ["dense_0", "relu_0", "dense_1", "relu_1", "dense_2"]
    assert list(param_shapes(graph)) == ["dense_0.weight", "dense_0.bias", "dense_1.weight", "dense_1.bias",
                                         "dense_2.weight", "dense_2.bias"]


BASIC = """\
block basic(c)(x) {
    h = x -> conv1: conv2d(c, 3, padding=1, bias=false) -> bn1: batchnorm -> relu
    return add(h, x) -> relu
}
"""


def test_block_parameters_are_prefixed_by_the_instance_label():
    graph = check(BASIC + model({"x": (4, 6, 6)}, "layer1.0: basic(4)\nlayer1.1: basic(4)")).graph
    assert param_shapes(graph)["layer1.0.conv1.weight"] == (4, 4, 3, 3)
    assert param_shapes(graph)["layer1.1.bn1.running_var"] == (4,)
    assert [n.label for n in graph.nodes][:5] == ["layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu_0",
                                                 "layer1.0.add_0", "layer1.0.relu_1"]


def test_unlabelled_block_calls_are_numbered_like_ops():
    graph = check(BASIC + model({"x": (4, 6, 6)}, "basic(4)\nbasic(4)")).graph
    assert "basic_0.conv1.weight" in param_shapes(graph)
    assert "basic_1.conv1.weight" in param_shapes(graph)
    assert graph.node("basic_1.relu_0")       # counters restart in each instance


def test_the_same_full_label_twice_is_refused():
    with pytest.raises(CompileError) as e:
        check(model({"x": (8,)}, "fc: dense(4)\nfc: dense(2)"))
    assert codes(e.value) == ["E0106"]


def test_shape_reference_in_an_argument_uses_the_inferred_size():
    graph = check(model({"x": (4, 6, 6)}, "conv2d(8, 3, padding=1)\nexpand: conv2d(x.shape[0] * 6, 1)")).graph
    assert output_shape(graph) == (24, 6, 6)
    assert param_shapes(graph)["expand.weight"] == (24, 8, 1, 1)


def test_shape_reference_of_a_named_length_is_refused_as_a_filter_count():
    with pytest.raises(CompileError) as e:
        check(model({"x": (1, "T")}, "conv1d(x.shape[1], 1)"))
    assert codes(e.value) == ["E0304"]


def test_block_returning_two_values_is_destructured():
    text = """\
block split(c)(x) {
    a = x -> left: dense(c)
    b = x -> right: dense(c + 1)
    return a, b
}
""" + model({"x": (8,)}, "p, q = halves: split(3)\nreturn q, p")
    graph = check(text).graph
    assert [(o.name, output_shape(graph, i)) for i, o in enumerate(graph.outputs)] == [("q", (4,)), ("p", (3,))]
    assert param_shapes(graph)["halves.right.weight"] == (4, 8)


def test_rebinding_a_name_shadows_the_old_value():
    body = "y = x -> dense(6)\ny = y -> dense(3)\nreturn y"
    graph = check(model({"x": (8,)}, body)).graph
    assert output_shape(graph) == (3,)
    assert graph.node("dense_1").inputs == ("dense_0",)
    assert graph.outputs[0].value == "dense_1"


def test_a_line_starting_with_an_arrow_continues_the_chain():
    body = "h = x -> dense(6)\n      -> relu   # still h\n    -> dense(2)\nreturn h"
    graph = check(model({"x": (8,)}, body)).graph
    assert output_shape(graph) == (2,)
    assert [n.label for n in graph.nodes] == ["dense_0", "relu_0", "dense_1"]


def test_model_without_return_outputs_its_last_statement_as_out():
    graph = check(model({"x": (8,)}, "fc: dense(4)")).graph
    assert [o.name for o in graph.outputs] == ["out"]


def test_model_ending_in_a_bare_op_still_names_its_output_out():
    # INTERFACES.md section 3: output names come from `return`, else "out".
    graph = check(model({"x": (8,)}, "dense(4)\nrelu")).graph
    assert [o.name for o in graph.outputs] == ["out"]


@pytest.mark.parametrize("text", [
    "model m(x: [4]) {\n}\n",
    "block nothing()(y) {\n}\n" + model({"x": (4,)}, "nothing\nrelu"),
], ids=["empty_model", "empty_block"])
def test_an_empty_body_gives_an_output_or_an_error(text):
    try:
        graph = check(text).graph
    except CompileError:
        return
    assert graph.outputs, "the model compiled without any output and without a diagnostic"


# ---------------------------------------------------------------- counts of the samples

def test_lenet_has_61706_parameters_and_416520_macs():
    graph = check(SAMPLES / "lenet.nn").graph
    assert graph.params_count == 61_706
    assert sum(n.macs for n in graph.nodes) == 416_520


@pytest.mark.parametrize("sample, count", [("resnet18", 11_689_512), ("mobilenetv2", 3_504_872)])
def test_sample_has_the_published_parameter_count(sample, count):
    assert check(SAMPLES / f"{sample}.nn").graph.params_count == count


def test_batchnorm_running_statistics_are_not_counted_as_parameters():
    graph = check(model({"x": (6, 4)}, "batchnorm")).graph
    assert graph.params_count == 12
    assert len(param_shapes(graph)) == 4


def test_gru_macs_per_step_cover_both_matrices():
    graph = check(SAMPLES / "gru.nn").graph
    assert graph.node("rec").macs == 3 * 40 * (1 + 40) * T
    assert graph.node("lin").macs == 40 * T


@pytest.mark.parametrize("sample", sorted(TWINS))
def test_sample_matches_its_pytorch_twin_in_parameters_and_output_shape(torch, sample):
    factory, input_shapes = TWINS[sample]
    graph = check(SAMPLES / f"{sample}.nn", DIMS.get(sample)).graph
    twin = factory().eval()
    assert param_shapes(graph) == twin_state_shapes(twin)
    with torch.no_grad():
        y = twin(*(torch.randn(1, *shape) for shape in input_shapes.values()))
    ours = tuple(evaluate(d, DIMS.get(sample, {})) for d in output_shape(graph))
    assert tuple(y.shape) == (1, *ours)


def test_the_earlier_recurrent_signature_takes_a_bias_and_nothing_after_it():
    """gru(hidden, bias) of LANGUAGE.md 6 beside v2's gru(hidden, layers, bidirectional, bias): a
    true/false second argument is the bias (also through a block parameter); a number is `layers`; a
    positional argument after the earlier form's bias is an error, not v2's `bidirectional`."""
    def params(body: str, block: str = "") -> set[str]:
        return set(param_shapes(check(f"{block}model m(x: [T=10, 4]) {{\n    {body}\n}}\n").graph))

    assert params("r: gru(8, false)") == {"r.weight_ih_l0", "r.weight_hh_l0"}
    assert params("r: gru(8, 2)") >= {"r.weight_ih_l1", "r.bias_ih_l1"}
    assert params("r: b(false)", "block b(flag)(x) {\n    return x -> gru(8, flag)\n}\n") == \
        {"r.gru_0.weight_ih_l0", "r.gru_0.weight_hh_l0"}
    with pytest.raises(CompileError) as info:
        check("model m(x: [T=10, 4]) {\n    r: gru(8, false, true)\n}\n")
    assert codes(info.value) == ["E0303"] and "after `bias`" in str(info.value)
