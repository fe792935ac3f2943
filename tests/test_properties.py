"""Property tests of the window ops' output-size rules (conv1d, conv2d, pools).

For random input sizes, kernels, strides, paddings and dilations, the size
nnc infers equals PyTorch's (or, without torch, PyTorch's documented formula
`(in + 2p - d*(k-1) - 1) // s + 1` evaluated directly); where PyTorch refuses
because the output would be empty, nnc refuses with E0201. The same rules on
a named length `T` give an expression that evaluates, for every concrete T,
to the size inferred for that T.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nnc import CompileError
from nnc.compiler.dims import evaluate
from nnc.compiler.frontend import check

try:    # PyTorch is the oracle when present; the formula stands in for it otherwise.
    import torch
    from torch.nn import functional as F
    torch.set_num_threads(1)
except ImportError:
    torch = F = None

PROPERTY = settings(max_examples=150, deadline=None)

sizes = st.integers(1, 40)
kernels = st.integers(1, 9)
strides = st.integers(1, 4)
paddings = st.integers(0, 5)
dilations = st.integers(1, 4)


def formula(n: int, k: int, s: int, p: int, d: int) -> int | None:
    """PyTorch's output size along one axis, None where it would be empty."""
    out = (n + 2 * p - d * (k - 1) - 1) // s + 1
    return out if out > 0 else None


def infer(source: str) -> tuple | str:
    """The single output shape of a model, or the codes of its diagnostics."""
    try:
        graph = check(source).graph
    except CompileError as e:
        return ",".join(d.code for d in e.diagnostics)
    return graph.shape_of(graph.outputs[0].value)


def reference(run, *spatial_sizes) -> tuple | None:
    """The trailing output sizes that `run` (a torch call) gives, or None when
    PyTorch refuses the input; without torch, the formula per axis."""
    if torch is None:
        sizes = [formula(*axis) for axis in spatial_sizes]
        return None if None in sizes else tuple(sizes)
    try:
        y = run()
    except RuntimeError:
        return None
    return tuple(y.shape[2:])


def expect(got, want: tuple | None, channels: int) -> None:
    if want is None:
        assert got == "E0201"
    else:
        assert got == (channels, *want)


# ---------------------------------------------------------------- convolutions

@PROPERTY
@given(sizes, kernels, strides, paddings, dilations)
def test_conv1d_output_size_is_pytorchs(n, k, s, p, d):
    got = infer(f"model m(x: [2, {n}]) {{\n    conv1d(3, {k}, stride={s}, padding={p}, dilation={d})\n}}\n")
    want = reference(lambda: F.conv1d(torch.zeros(1, 2, n), torch.zeros(3, 2, k), stride=s, padding=p,
                                      dilation=d), (n, k, s, p, d))
    expect(got, want, 3)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@PROPERTY
@given(sizes, kernels, dilations, st.sampled_from(["same", "valid"]))
def test_conv1d_same_keeps_and_valid_shrinks_the_length_as_pytorch(n, k, d, padding):
    got = infer(f"model m(x: [2, {n}]) {{\n    conv1d(3, {k}, padding={padding}, dilation={d})\n}}\n")
    if torch is None and padding == "same":
        want = (n,)     # PyTorch's documented meaning of "same"; the formula has no word for it
    else:
        want = reference(lambda: F.conv1d(torch.zeros(1, 2, n), torch.zeros(3, 2, k), padding=padding,
                                          dilation=d),
                         (n, k, 1, 0, d))
    expect(got, want, 3)


@PROPERTY
@given(st.tuples(sizes, sizes), st.tuples(kernels, kernels), st.tuples(strides, strides),
       st.tuples(paddings, paddings), st.tuples(dilations, dilations))
def test_conv2d_output_sizes_are_pytorchs(n, k, s, p, d):
    text = (f"model m(x: [2, {n[0]}, {n[1]}]) {{\n"
            f"    conv2d(3, {k}, stride={s}, padding={p}, dilation={d})\n}}\n")
    want = reference(lambda: F.conv2d(torch.zeros(1, 2, *n), torch.zeros(3, 2, *k), stride=s, padding=p,
                                      dilation=d),
                     *zip(n, k, s, p, d))
    expect(infer(text), want, 3)


# ---------------------------------------------------------------- pools

@st.composite
def pool_windows(draw):
    """(kernel, stride, padding) with padding at most half the kernel, as both
    PyTorch and nnc require."""
    k = draw(kernels)
    return k, draw(strides), draw(st.integers(0, k // 2))


@PROPERTY
@given(sizes, pool_windows(), st.sampled_from(["max", "avg"]))
def test_pool1d_output_size_is_pytorchs(n, window, kind):
    k, s, p = window
    got = infer(f"model m(x: [2, {n}]) {{\n    {kind}pool1d({k}, stride={s}, padding={p})\n}}\n")
    want = reference(lambda: getattr(F, f"{kind}_pool1d")(torch.zeros(1, 2, n), k, stride=s, padding=p),
                     (n, k, s, p, 1))
    expect(got, want, 2)


@PROPERTY
@given(st.tuples(sizes, sizes), pool_windows(), pool_windows(), st.sampled_from(["max", "avg"]))
def test_pool2d_output_sizes_are_pytorchs(n, window_h, window_w, kind):
    k, s, p = zip(window_h, window_w)
    got = infer(f"model m(x: [2, {n[0]}, {n[1]}]) {{\n    {kind}pool2d({k}, stride={s}, padding={p})\n}}\n")
    want = reference(lambda: getattr(F, f"{kind}_pool2d")(torch.zeros(1, 2, *n), k, stride=s, padding=p),
                     *((size, kk, ss, pp, 1) for size, kk, ss, pp in zip(n, k, s, p)))
    expect(got, want, 2)


def test_pool_stride_defaults_to_its_kernel():
    assert infer("model m(x: [2, 10, 9]) {\n    maxpool2d(3)\n}\n") == (2, 3, 3)


# ---------------------------------------------------------------- symbolic lengths

@st.composite
def window_steps(draw):
    """The text of one random conv1d or pool1d step that keeps channels 2."""
    k, s = draw(kernels), draw(strides)
    if draw(st.booleans()):
        p, d = draw(paddings), draw(dilations)
        return f"conv1d(2, {k}, stride={s}, padding={p}, dilation={d})"
    kind = draw(st.sampled_from(["max", "avg"]))
    return f"{kind}pool1d({k}, stride={s}, padding={draw(st.integers(0, k // 2))})"


@PROPERTY
@given(st.lists(window_steps(), min_size=1, max_size=4))
def test_symbolic_length_evaluates_to_the_size_inferred_for_each_concrete_length(steps):
    chain = " -> ".join(steps)
    symbolic = infer(f"model m(x: [2, T]) {{\n    {chain}\n}}\n")
    assert isinstance(symbolic, tuple), symbolic
    checked = 0
    for n in range(1, 120, 7):
        concrete = infer(f"model m(x: [2, {n}]) {{\n    {chain}\n}}\n")
        if concrete == "E0201":
            continue
        assert concrete == (2, evaluate(symbolic[1], {"T": n})), (chain, n)
        checked += 1
    assume(checked > 0)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_a_kernel_that_spans_more_than_the_padded_input_reports_e0201_once(n):
    got = infer(f"model m(x: [1, {n}]) {{\n    conv1d(4, 3, dilation=3) -> relu -> conv1d(2, 1)\n}}\n")
    assert got == "E0201"
