"""Reverse-mode differentiation: the training graph's structure, and every
catalog op's backward rule run through a whole training plan against
`torch.autograd` (one step, gradients of every parameter)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.compiler import ops
from nnc.compiler.autodiff import StepKind, TensorKind, TrainingError, differentiate, verify_train
from nnc.compiler.codegen import train_numpy
from nnc.compiler.frontend import check
from nnc.runtime import kernels as K

sys.path.insert(0, str(Path(__file__).parent))
from test_train import _dropout_mask  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


# ------------------------------------------------------------------ the catalog and the tables

def test_every_catalog_op_has_a_backward_rule_and_numpy_training_entries():
    for name, spec in ops.CATALOG.items():
        assert spec.backward is not None, name
        assert spec.name in train_numpy.FORWARD, name
        assert spec.name in train_numpy.BACKWARD, name


def test_activation_rules_read_what_the_backward_kernels_read():
    for name in ops.ACTIVATIONS:
        rule = ops.CATALOG[name].backward
        reads = K.activation_backward_reads(name)
        assert (rule.needs_output, rule.needs_inputs) == (reads == "y", reads == "x"), name


# ------------------------------------------------------------------ the training graph

@pytest.mark.parametrize("sample,dims", [("lenet", None), ("mobilenetv2", None), ("resnet18", None),
                                         ("concat", None), ("wavenet", {"T": 16}), ("gru", {"T": 8}),
                                         ("lstm", {"T": 8}), ("mlp", None)])
def test_training_graphs_of_the_samples_verify(sample, dims):
    tg = differentiate(check(SAMPLES / f"{sample}.nn", dims).graph, "cross_entropy")
    verify_train(tg)
    kinds = [s.kind for s in tg.steps]
    forward = [s for s in tg.steps if s.kind is StepKind.FORWARD]
    assert kinds.index(StepKind.LOSS) == len(forward)           # the forward steps first, then the loss
    assert [n.label for s in forward for n in s.nodes] == [n.label for n in tg.graph.nodes]   # each node once
    learnable = [k for n in tg.graph.nodes for p in n.params if p.learnable for k in [n.param_key(p.name)]]
    if sample != "wavenet":
        assert sorted(tg.trainable) == sorted(learnable)


def test_a_parameter_the_loss_does_not_reach_is_not_trained():
    # wavenet's last residual convolution feeds nothing: PyTorch leaves its gradient None
    tg = differentiate(check(SAMPLES / "wavenet.nn", {"T": 16}).graph, "mse")
    assert "layers.3.residual.weight" not in tg.trainable
    assert "layers.3.skip.weight" in tg.trainable


def test_fan_out_gradients_accumulate_through_partials_or_straight_from_the_output_gradient():
    tg = differentiate(check("model m(x: [4]) {\n a = x -> l: dense(4)\n b = a -> k: dense(4) -> tanh\n"
                             " return add(a, b, a)\n}").graph, "mse")
    add = next(s for s in tg.steps if s.kind is StepKind.BACKWARD and s.node.op.name == "add")
    assert [(g.index, g.accumulate, g.partial) for g in add.input_grads] == \
        [(0, False, None), (1, False, None), (2, True, None)]
    k = next(s for s in tg.steps if s.kind is StepKind.BACKWARD and s.node.label == "k")
    (g,) = k.input_grads
    assert g.accumulate and g.partial == "d:l~k" and tg.tensors["d:l~k"].kind is TensorKind.PARTIAL


def test_a_model_without_trainable_parameters_is_a_clear_error():
    with pytest.raises(TrainingError, match="nothing to train"):
        differentiate(check("model m(x: [4]) {\n relu\n}").graph, "mse")


def test_an_unknown_loss_is_a_clear_error():
    with pytest.raises(TrainingError, match="unknown loss"):
        nnc.train("model m(x: [4]) {\n dense(2)\n}", loss="hinge", optimizer=nnc.SGD(0.1))


# ------------------------------------------------------------------ every op through a whole plan, vs autograd

def _torch_cases():
    import torch
    import torch.nn.functional as F

    def gru(x, P, prefix, hidden, bias=True):
        m = torch.nn.GRU(x.shape[-1], hidden, batch_first=True, bias=bias)
        names = ["weight_ih_l0", "weight_hh_l0"] + (["bias_ih_l0", "bias_hh_l0"] if bias else [])
        return torch.func.functional_call(m, {n: P[f"{prefix}.{n}"] for n in names}, (x,))[0]

    def lstm(x, P, prefix, hidden, bias=True):
        m = torch.nn.LSTM(x.shape[-1], hidden, batch_first=True, bias=bias)
        names = ["weight_ih_l0", "weight_hh_l0"] + (["bias_ih_l0", "bias_hh_l0"] if bias else [])
        return torch.func.functional_call(m, {n: P[f"{prefix}.{n}"] for n in names}, (x,))[0]

    def bn(x, P, name, stats):
        return F.batch_norm(x, stats[f"{name}.running_mean"], stats[f"{name}.running_var"], P[f"{name}.weight"],
                            P[f"{name}.bias"], training=True, momentum=0.1, eps=1e-5)

    return {
        "conv2d_groups_dilation_stride_padding": (
            "model m(x: [4, 9, 9]) {\n c: conv2d(6, 3, stride=2, padding=(1, 2), dilation=2, groups=2) -> "
            "leaky_relu(0.1)\n flatten\n d: dense(3)\n}", (4, 9, 9), 3,
            lambda x, P, S: F.linear(F.leaky_relu(F.conv2d(x, P["c.weight"], P["c.bias"], stride=2, padding=(1, 2),
                                                           dilation=2, groups=2), 0.1).flatten(1),
                                     P["d.weight"], P["d.bias"])),
        "depthwise_avgpool_upsample_hardswish": (
            "model m(x: [3, 8, 8]) {\n d: depthwise_conv2d(3, multiplier=2, padding=same) -> hardswish\n"
            " avgpool2d(3, stride=2, padding=1)\n upsample(2)\n p: conv2d(2, 1, bias=false)\n global_avgpool\n}",
            (3, 8, 8), 2,
            lambda x, P, S: F.conv2d(F.interpolate(F.avg_pool2d(F.hardswish(
                F.conv2d(x, P["d.weight"], P["d.bias"], padding=1, groups=3)), 3, 2, 1), scale_factor=2),
                P["p.weight"]).mean((2, 3))),
        "conv1d_pools_prelu_elu": (
            "model m(x: [3, 16]) {\n c: conv1d(6, 3, padding=same, dilation=2) -> elu(0.7)\n"
            " maxpool1d(3, stride=2, padding=1)\n avgpool1d(2)\n a: prelu\n flatten\n d: dense(4)\n}", (3, 16), 4,
            lambda x, P, S: F.linear(F.prelu(F.avg_pool1d(F.max_pool1d(F.elu(
                F.conv1d(x, P["c.weight"], P["c.bias"], padding=2, dilation=2), 0.7), 3, 2, 1), 2),
                P["a.weight"]).flatten(1), P["d.weight"], P["d.bias"])),
        "sequence_dense_layernorm_gelu_silu_softmaxes": (
            "model m(x: [5, 6]) {\n l: dense(8) -> n: layernorm -> gelu -> silu\n softmax(axis=0)\n"
            " log_softmax\n o: dense(3, bias=false)\n}", (5, 6), (5, 3),
            lambda x, P, S: F.linear(F.log_softmax(F.softmax(F.silu(F.gelu(F.layer_norm(
                F.linear(x, P["l.weight"], P["l.bias"]), (8,), P["n.weight"], P["n.bias"]))), dim=1), dim=-1),
                P["o.weight"])),
        "activations_batchnorm_dropout": (
            "model m(x: [6]) {\n a: dense(12, bias=false) -> b: batchnorm -> selu -> softplus\n dropout(0.3)\n"
            " c: dense(12) -> hardsigmoid -> relu6\n e: dense(12) -> sigmoid -> tanh -> relu\n"
            " s: prelu(shared=true)\n f: dense(2)\n}", (6,), 2,
            lambda x, P, S: F.linear(F.prelu(F.relu(torch.tanh(torch.sigmoid(F.linear(F.relu6(F.hardsigmoid(
                F.linear(F.softplus(F.selu(bn(F.linear(x, P["a.weight"]), P, "b", S))) * S["mask"],
                         P["c.weight"], P["c.bias"]))), P["e.weight"], P["e.bias"])))), P["s.weight"]),
                P["f.weight"], P["f.bias"])),
        "maxpool2d_padding_reshape_transpose": (
            "model m(x: [2, 7, 7]) {\n c: conv2d(4, 2) -> relu\n maxpool2d(3, stride=2, padding=1)\n"
            " reshape((4, 3, 3))\n identity\n transpose((2, 0, 1))\n flatten\n d: dense(3)\n}", (2, 7, 7), 3,
            lambda x, P, S: F.linear(F.max_pool2d(F.relu(F.conv2d(x, P["c.weight"], P["c.bias"])), 3, 2, 1)
                                     .permute(0, 3, 1, 2).flatten(1), P["d.weight"], P["d.bias"])),
        "gru_and_lstm_without_bias_merged": (
            "model m(x: [6, 3]) {\n g = x -> r: gru(5, bias=false)\n h = x -> s: lstm(5, bias=false)\n"
            " u = x -> q: gru(5)\n m = mul(g, h)\n sub(m, u) -> o: dense(2)\n}", (6, 3), (6, 2),
            lambda x, P, S: F.linear(gru(x, P, "r", 5, False) * lstm(x, P, "s", 5, False) - gru(x, P, "q", 5),
                                     P["o.weight"], P["o.bias"])),
    }


CASES = ["conv2d_groups_dilation_stride_padding", "depthwise_avgpool_upsample_hardswish", "conv1d_pools_prelu_elu",
         "sequence_dense_layernorm_gelu_silu_softmaxes", "activations_batchnorm_dropout",
         "maxpool2d_padding_reshape_transpose", "gru_and_lstm_without_bias_merged"]


@pytest.mark.parametrize("case", CASES)
def test_one_training_step_gives_autograds_loss_and_gradients(case):
    torch = pytest.importorskip("torch")
    text, in_shape, out_shape, forward = _torch_cases()[case]
    batch = 4
    trainer = nnc.train(text, loss="mse", optimizer=nnc.SGD(0.1), batch=batch, keep_gradients=True, seed=1)
    state = trainer.state_dict()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, *in_shape)).astype(np.float32)
    out = (out_shape,) if isinstance(out_shape, int) else out_shape
    y = rng.standard_normal((batch, *out)).astype(np.float32)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in state.items()
         if k in trainer.TRAINABLE}
    S = {k: torch.tensor(np.array(v), dtype=torch.float64) for k, v in state.items() if k not in trainer.TRAINABLE}
    if "dropout" in text:
        S["mask"] = torch.tensor(_dropout_mask(np.random.Generator(np.random.PCG64(1)), (batch, 12), 0.3),
                                 dtype=torch.float64)
    loss = trainer.step(x, y)
    value = torch.nn.functional.mse_loss(forward(torch.tensor(x, dtype=torch.float64), P, S),
                                         torch.tensor(y, dtype=torch.float64))
    value.backward()
    assert abs(loss - value.item()) <= 1e-5 * abs(value.item()), (loss, value.item())
    grads = trainer.gradients()
    assert sorted(grads) == sorted(P)
    for k, p in P.items():
        ref = p.grad.numpy()
        err = np.linalg.norm(grads[k] - ref) / max(np.linalg.norm(ref), 1e-8)
        assert err < 1e-4, (k, err)
    if "batchnorm" in text:       # running statistics as PyTorch's (updated in place by F.batch_norm)
        for k in ("b.running_mean", "b.running_var"):
            np.testing.assert_allclose(trainer.state_dict()[k], S[k].numpy(), rtol=1e-5, atol=1e-6)
