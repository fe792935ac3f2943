"""The C plan's transposed convolutions (nnc_conv_transpose_gemm: a packed
matrix multiply over the input channels, the weights packed by the code
generator, then a scatter of each (output channel, tap) row to the output
positions it reaches) against PyTorch in float64 on odd shapes: channels not
a multiple of the register tile, input planes not a multiple of the pixel
tile (the copied last tile), strides 1 to 3, dilation, padding,
output_padding, groups, no bias, kernel = stride (each output stored once),
a depth of several panels, 1-d ones of a named length, and the U-Net
sample's layers (no scratch, the arena at its bound)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.compiler.build import compile_plan
from nnc.compiler.codegen import c as c_gen

from conftest import HAS_CC

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not HAS_CC, reason="no C compiler")
torch = pytest.importorskip("torch")

CASES_2D = [
    # (input [C, H, W], conv_transpose2d arguments)
    ((1, 5, 5), "3, 2, stride=2"),
    ((32, 8, 8), "16, 2, stride=2"),                                    # the U-Net's up2
    ((5, 7, 6), "4, 3, stride=2, padding=1, output_padding=1"),
    ((7, 3, 11), "13, (3, 2), stride=(3, 1), padding=(1, 0), output_padding=(2, 0)"),
    ((6, 5, 4), "9, 3, stride=1, padding=2"),
    ((6, 6, 5), "4, 3, stride=2, dilation=2, output_padding=1"),
    ((6, 4, 7), "9, (2, 3), stride=(1, 3), groups=3"),
    ((8, 5, 5), "8, 3, stride=2, padding=1, groups=4, bias=false"),
    ((6, 5, 3), "9, (2, 3), stride=(2, 3), groups=3"),                  # kernel = stride: stored once, with bias
    ((300, 3, 3), "5, 2, stride=2"),                                    # K deeper than one panel (NNC_KC)
    ((3, 9, 9), "40, 3, stride=3, padding=1, output_padding=2"),       # M = 360 rows: several tiles
]

CASES_1D = [
    ((4, 9), "6, 3, stride=2, padding=1, output_padding=1"),
    ((6, 10), "6, 3, stride=3, output_padding=1, dilation=2, groups=2"),
    ((3, 16), "5, 4, stride=1, padding=3"),
]


def _reference(x: np.ndarray, sd: dict, args: str, rank: int) -> np.ndarray:
    """PyTorch's transposed convolution in float64 with the plan's own weights."""
    (wkey,) = [k for k in sd if k.endswith(".weight")]
    bkey = wkey[:-len("weight")] + "bias"
    w = torch.from_numpy(sd[wkey].astype(np.float64))
    b = torch.from_numpy(sd[bkey].astype(np.float64)) if bkey in sd else None
    kw = _torch_args(args, rank)
    fn = torch.nn.functional.conv_transpose2d if rank == 2 else torch.nn.functional.conv_transpose1d
    return fn(torch.from_numpy(x.astype(np.float64)), w, b, **kw).numpy()


def _torch_args(args: str, rank: int) -> dict:
    """The keyword arguments of F.conv_transposeNd from the .nn call's text."""
    env = {"false": False, "true": True}
    call = eval(f"(lambda filters, k, stride=1, padding=0, output_padding=0, dilation=1, groups=1, bias=True: "
                f"dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, "
                f"groups=groups))({args})", env)
    return call


def _check(shape: tuple, args: str, rank: int, seed: int) -> str:
    src = f"model t(x: {list(shape)}) {{\n    conv_transpose{rank}d({args})\n}}\n"
    model = nnc.build(src, target="c")
    rng = np.random.default_rng(seed)
    sd = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in model.state_dict().items()}
    model.load_weights(sd)
    x = rng.standard_normal((1, *shape)).astype(np.float32)
    got = np.asarray(model(x))
    want = _reference(x, sd, args, rank)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))
    return compile_plan(src, target="c").files["t.c"]


@pytest.mark.parametrize("shape,args", CASES_2D, ids=[a for _, a in CASES_2D])
def test_conv_transpose2d_matches_pytorch(shape, args):
    code = _check(shape, args, 2, seed=len(args))
    assert "nnc_conv_transpose_gemm(" in code


@pytest.mark.parametrize("shape,args", CASES_1D, ids=[a for _, a in CASES_1D])
def test_conv_transpose1d_matches_pytorch(shape, args):
    code = _check(shape, args, 1, seed=len(args))
    assert "nnc_conv_transpose_gemm(" in code


def test_a_named_length_takes_the_copied_last_tile_at_every_length():
    src = "model t(x: [3, T=40]) {\n    conv_transpose1d(5, 3, stride=2, padding=1)\n}\n"
    model = nnc.build(src, target="c")
    rng = np.random.default_rng(3)
    sd = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in model.state_dict().items()}
    model.load_weights(sd)
    w, b = torch.from_numpy(sd["conv_transpose1d_0.weight"].astype(np.float64)), \
        torch.from_numpy(sd["conv_transpose1d_0.bias"].astype(np.float64))
    for t in (1, 7, 32, 33, 40):
        x = rng.standard_normal((1, 3, t)).astype(np.float32)
        want = torch.nn.functional.conv_transpose1d(torch.from_numpy(x.astype(np.float64)), w, b, stride=2,
                                                    padding=1).numpy()
        np.testing.assert_allclose(np.asarray(model(x)), want, rtol=1e-4, atol=1e-4)


def test_the_weights_are_packed_as_one_matrix_per_group_of_output_channel_and_tap_rows():
    w = np.arange(4 * 3 * 2 * 2, dtype=np.float32).reshape(4, 3, 2, 2)    # 2 groups: cin 4, cout 6
    packed = c_gen.pack_conv_transpose(w, 2)
    m, k = 3 * 4, 2                                   # rows (co, a, b) per group, columns ci per group
    mb = -(-m // c_gen.MR)
    assert packed.size == 2 * mb * c_gen.MR * k
    blocks = packed.reshape(2, mb, k, c_gen.MR)
    for g in range(2):
        for row in range(m):
            co, tap = divmod(row, 4)
            for ci in range(k):
                assert blocks[g, row // c_gen.MR, ci, row % c_gen.MR] == w[g * k + ci, co, tap // 2, tap % 2]


def test_the_unet_sample_runs_its_upsampling_as_matrix_multiplies_within_its_arena():
    plan = compile_plan(ROOT / "samples" / "unet.nn", target="c")
    code = plan.files["unet.c"]
    assert code.count("nnc_conv_transpose_gemm(") == 2 and "nnc_conv_transpose(&" not in code
    lay = plan.layout      # 8x8 and 16x16 input planes: whole pixel tiles read in place, no scratch
    assert not [b.name for b in lay.buffers if b.name.startswith(("up1#", "up2#"))]
    assert lay.plan.arena_bytes <= 1.10 * lay.lower_bound_bytes
