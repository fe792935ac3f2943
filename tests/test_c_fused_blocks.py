"""The C plan's block fusion: a 1x1 convolution whose output only a depthwise
convolution reads is computed inside that convolution's kernel
(`c.fuse_blocks`, nnc_pw_depthwise) and never stored. Fused plans match the
NumPy plan (which keeps the two steps apart) on every build the kernels
have (AVX-512's ring of channels side by side, the matrix-multiply planes
elsewhere in blocks of 16 or of multiples of 48 channels, plain C), and
under the sanitizers; the fusion takes only the pairs it can compute,
keeps the weights' order and never grows an arena; MobileNetV2's arena
halves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.compiler.build import compile_plan
from nnc.compiler.codegen import c as c_gen

from conftest import HAS_CC
from test_c_conv_kernels import BUILDS, _skip_unless_runnable
from test_c_plan import build_harness, call, cc, run

pytestmark = pytest.mark.skipif(not HAS_CC, reason="no C compiler")

ROOT = Path(__file__).resolve().parent.parent

# inverted residual blocks at odd sizes: channels not a multiple of 16 (a partial block), blocks of 16 whose
# register tiles stop at a block of 48 weights (large), of 48 and of 192 (deep) elsewhere, strides 1 and 2,
# planes narrower than a register tile of pixels and rows of 32 or more (the depthwise kernel reads those
# row by row elsewhere), a 5x5 and a dilated depthwise kernel, folded batchnorms, relu6 / relu / none
# on either convolution, an expansion deeper than a tile, a bias on both
BLOCKS = {
    "strided": """model strided(x: [5, 13, 11]) {
    e: conv2d(20, 1, bias=false) -> en: batchnorm -> relu6
    d: depthwise_conv2d(3, stride=2, padding=1, bias=false) -> dn: batchnorm -> relu6
    p: conv2d(7, 1)
}""",
    "wide": """model wide(x: [3, 6, 40]) {
    e: conv2d(33, 1) -> relu
    d: depthwise_conv2d(3, padding=1) -> relu
}""",
    "plain": """model plain(x: [40, 8, 9]) {
    e: conv2d(17, 1)
    d: depthwise_conv2d(5, padding=2) -> sigmoid
}""",
    "deep": """model deep(x: [24, 14, 14]) {
    e: conv2d(200, 1) -> relu6
    d: depthwise_conv2d(3, padding=1) -> relu6
}""",
    "large": """model large(x: [4, 30, 30]) {
    e: conv2d(50, 1) -> relu6
    d: depthwise_conv2d(3, stride=2, padding=1) -> relu
}""",
    "dilated": """model dilated(x: [8, 9, 10]) {
    e: conv2d(16, 1, bias=false) -> en: batchnorm -> relu6
    d: depthwise_conv2d(3, padding=2, dilation=2, bias=false) -> dn: batchnorm
}""",
}


def _state(model, seed: int) -> dict[str, np.ndarray]:
    """Random weights, batchnorms with real statistics (a fold that changes both weights and biases)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, value in model.state_dict().items():
        v = rng.standard_normal(value.shape).astype(np.float32) * 0.5
        out[key] = np.abs(v) + 0.5 if key.endswith("running_var") else v
    return out


def _fused(plan) -> list[str]:
    return [n.label for n in plan.graph.nodes if n.pre is not None]


@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("block", list(BLOCKS))
def test_fused_block_matches_the_numpy_plan(block, build, tmp_path):
    _skip_unless_runnable(build)
    source = BLOCKS[block]
    model = nnc.build(source, batch=2)
    state = _state(model, 3)
    model.load_weights(state)
    assert _fused(_plan(source)) == ["d"]
    exe = build_harness(block, tmp_path, ["-std=c99", *BUILDS[build]], source=source, state=state)
    x = np.random.default_rng(4).standard_normal((2, *model.input_shapes["x"])).astype(np.float32) * 2
    got = call(exe, "forward", x, tmp_path)
    want = np.asarray(model(x)).reshape(-1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fused_block_through_the_python_api_keeps_nan_in_its_pixel():
    """nnc.build(target="c") on a fused plan: the same numbers as NumPy's, and a NaN in one input pixel
    reaches only the outputs whose taps cover it (the padding and the other lanes are zeros)."""
    source = BLOCKS["wide"]
    ref = nnc.build(source)
    state = _state(ref, 5)
    ref.load_weights(state)
    model = nnc.build(source, target="c")
    model.load_weights(state)
    x = np.random.default_rng(6).standard_normal((1, 3, 6, 40)).astype(np.float32)
    np.testing.assert_allclose(model(x), ref(x), rtol=1e-4, atol=1e-5)
    x[0, 1, 2, 20] = np.nan
    bad = np.isnan(np.asarray(model(x)))[0]
    assert bad[:, 1:4, 19:22].all() and bad.sum() == 33 * 9


def _plan(source: str, **kw):
    return compile_plan(source, target="c", render=False, **kw)


@pytest.mark.parametrize("source", [
    # the expansion's output is read twice (a shortcut from it)
    "model m(x: [4, 8, 8]) {\n    e = x -> e1: conv2d(16, 1)\n    d = e -> d1: depthwise_conv2d(3, padding=1)\n"
    "    add(e, d)\n}",
    # a 3x3 convolution, a strided 1x1 one, a padded 1x1 one: not pointwise
    "model m(x: [4, 8, 8]) {\n    conv2d(16, 3, padding=1)\n    depthwise_conv2d(3, padding=1)\n}",
    "model m(x: [4, 8, 8]) {\n    conv2d(16, 1, stride=2)\n    depthwise_conv2d(3, padding=1)\n}",
    "model m(x: [4, 8, 8]) {\n    conv2d(16, 1, padding=1)\n    depthwise_conv2d(3, padding=1)\n}",
    # an activation nnc_pw does not apply
    "model m(x: [4, 8, 8]) {\n    conv2d(16, 1) -> sigmoid\n    depthwise_conv2d(3, padding=1)\n}",
    # a channel multiplier of 2; a grouped convolution that is not depthwise
    "model m(x: [4, 8, 8]) {\n    conv2d(16, 1)\n    depthwise_conv2d(3, padding=1, multiplier=2)\n}",
    "model m(x: [4, 8, 8]) {\n    conv2d(16, 1)\n    conv2d(16, 3, padding=1, groups=8)\n}",
    # deeper than PW_DEPTH input channels; a plane of fewer than PW_MIN_PIXELS
    "model m(x: [300, 8, 8]) {\n    conv2d(16, 1)\n    depthwise_conv2d(3, padding=1)\n}",
    "model m(x: [16, 7, 7]) {\n    conv2d(96, 1) -> relu6\n    depthwise_conv2d(3, padding=1) -> relu6\n}",
    # a 1-d pair
    "model m(x: [4, 32]) {\n    conv1d(16, 1)\n    conv1d(16, 3, padding=1, groups=16)\n}",
])
def test_fusion_takes_only_the_pairs_it_computes(source):
    assert _fused(_plan(source)) == []


def test_fused_plan_draws_the_default_weights_in_the_models_order():
    """Default initialisation draws the weights in the model's order: a 1x1 convolution with another
    layer scheduled between it and its depthwise reader is not fused (fusing it moved its weights after
    that layer's, so the C plan's default weights were not the NumPy plan's)."""
    source = """model m(x: [4, 8, 8]) {
    a = x -> e: conv2d(24, 1) -> relu6
    b = x -> c: conv2d(24, 1)
    d = a -> dw: depthwise_conv2d(3, padding=1)
    add(d, b)
}"""
    assert _fused(_plan(source)) == []
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(nnc.build(source, target="c")(x), nnc.build(source)(x), rtol=1e-4, atol=1e-5)
    assert list(compile_plan(source, target="c", render=False).graph.param_specs()) == \
        list(compile_plan(source, target="numpy", render=False).graph.param_specs())


@pytest.mark.parametrize("source", [
    "model m(x: [256, 9, 9]) {\n    conv2d(32, 1)\n    depthwise_conv2d(3, padding=1)\n}",
    "model m(x: [256, 8, 8]) {\n    conv2d(16, 1)\n    depthwise_conv2d(3, padding=1)\n}",
    "model m(x: [8, 6, 40]) {\n    conv2d(16, 1)\n    depthwise_conv2d(3, padding=1)\n}",
    BLOCKS["strided"], BLOCKS["deep"], BLOCKS["wide"],
    # the fused step keeps the 1x1 convolution's input alive beside the depthwise output (a review found
    # these grew 429,056 -> 567,744 and 214,016 -> 220,672 bytes)
    "model m(x: [64, 28, 28]) {\n    conv2d(64, 3, padding=1)\n    conv2d(64, 1) -> relu6\n"
    "    depthwise_conv2d(3, padding=1) -> relu6\n    conv2d(64, 1)\n}",
    "model m(x: [256, 10, 10]) {\n    conv2d(240, 1)\n    depthwise_conv2d(3, padding=1)\n}",
])
def test_fusion_never_grows_the_arena(source, monkeypatch):
    fused = _plan(source).layout.plan.arena_bytes
    monkeypatch.setattr(c_gen, "fuse_blocks", lambda graph: graph)
    assert fused <= _plan(source).layout.plan.arena_bytes


def test_fusion_needs_the_optimiser_and_is_not_numpy():
    source = BLOCKS["strided"]
    assert _fused(_plan(source)) == ["d"]
    assert _fused(_plan(source, optimize=False)) == []
    assert all(n.pre is None for n in compile_plan(source, target="numpy", render=False).graph.nodes)


def test_mobilenetv2_expansions_are_fused_and_its_arena_halves():
    """Every inverted block's expansion is computed inside its depthwise convolution, so the largest value
    (the 96 x 112 x 112 expansion, 4.8 MB) is never stored: the arena falls from 6,057,152 bytes to the
    two 32 x 112 x 112 values of the first block (3,211,264), which is its live-set lower bound."""
    plan = _plan(ROOT / "samples" / "mobilenetv2.nn")
    fused = _fused(plan)
    # ... but the 7x7 ones (fewer than PW_MIN_PIXELS), where the whole matrix multiply is faster
    assert len(fused) == 13 and "features.2.conv.1.0" in fused and "features.14.conv.1.0" in fused
    assert "features.15.conv.1.0" not in fused and "features.17.conv.1.0" not in fused
    node = plan.graph.node("features.2.conv.1.0")
    assert node.pre.label == "features.2.conv.0.0" and node.inputs == ("features.1.conv.1",)
    assert plan.layout.plan.arena_bytes == plan.layout.lower_bound_bytes == 2 * 32 * 112 * 112 * 4
    keys = set(plan.graph.param_specs())
    assert "features.2.conv.0.0.weight" in keys and "features.2.conv.0.1.running_var" in keys
    # the weights in nnc_pw's layout (`pack_pw`: blocks of 48 channels), at their planned slots
    slots, _ = c_gen.weight_slots(plan.graph)
    assert slots["features.2.conv.0.0.weight"][1] == 96 * 16 + c_gen.MR


KERNEL = r"""
#include <stdio.h>
#include <stdlib.h>
#include "nnc_kernels.h"

static float *load(const char *dir, const char *name, long *n) {
    char path[4096];
    FILE *f;
    float *data;
    sprintf(path, "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (!f) exit(3);
    fseek(f, 0, SEEK_END);
    *n = ftell(f) / (long)sizeof(float);
    fseek(f, 0, SEEK_SET);
    data = malloc((size_t)(*n > 0 ? *n : 1) * sizeof(float));        /* exactly the file's floats */
    if (fread(data, sizeof(float), (size_t)*n, f) != (size_t)*n) exit(4);
    fclose(f);
    return data;
}

/* usage: kernel DIR cin c h w oh ow k s pad fb nc scratch_floats */
int main(int argc, char **argv) {
    long n;
    int v[11], i;
    float *x, *we, *be, *wd, *bd, *y, *scratch;
    nnc_conv g;
    nnc_pw e;
    FILE *out;
    char path[4096];
    if (argc != 14) return 2;
    for (i = 0; i < 11; i++) v[i] = atoi(argv[2 + i]);
    x = load(argv[1], "x.bin", &n), we = load(argv[1], "we.bin", &n), be = load(argv[1], "be.bin", &n);
    wd = load(argv[1], "wd.bin", &n), bd = load(argv[1], "bd.bin", &n);
    g.cin = g.cout = g.groups = v[1], g.h = v[2], g.w = v[3], g.oh = v[4], g.ow = v[5], g.kh = g.kw = v[6];
    g.sh = g.sw = v[7], g.pt = g.pl = v[8], g.dh = g.dw = 1, g.kc = v[9], g.nc = v[10];
    e.x = x, e.cin = v[0], e.w = we, e.b = be, e.act = NNC_RELU6;
    y = malloc((size_t)g.cout * g.oh * g.ow * sizeof *y);
    scratch = malloc((size_t)atol(argv[13]) * sizeof *scratch);
    nnc_pw_depthwise(&g, &e, wd, bd, y, NNC_RELU, 0.0f, scratch);
    sprintf(path, "%s/y.bin", argv[1]);
    out = fopen(path, "wb");
    fwrite(y, sizeof *y, (size_t)g.cout * g.oh * g.ow, out);
    fclose(out);
    free(x), free(we), free(be), free(wd), free(bd), free(y), free(scratch);
    return 0;
}
"""


@pytest.mark.parametrize("build", [b for b in BUILDS if "asan" in b] + ["plain"])
@pytest.mark.parametrize("cin,c,h,w,stride", [(8, 48, 30, 30, 2), (5, 96, 32, 32, 1), (7, 47, 9, 11, 1),
                                              (250, 96, 16, 16, 1)])
def test_fused_kernel_stays_in_arrays_of_exactly_their_size(tmp_path, build, cin, c, h, w, stride):
    """nnc_pw_depthwise with every array allocated at exactly its size (weights as `pack_pw` packs them,
    scratch as `_fused_scratch` reserves it), so the sanitizers see a read past any of them: the register
    tile of the other targets reads MR rows of weights even where a block ends in fewer (48 and 96
    channels in blocks of 16 read 2 floats past the last block before `pack_pw`'s padding)."""
    from test_c_conv_kernels import KERNELS, reference
    _skip_unless_runnable(build)
    source = (f"model m(x: [{cin}, {h}, {w}]) {{\n    e: conv2d({c}, 1) -> relu6\n"
              f"    d: depthwise_conv2d(3, stride={stride}, padding=1) -> relu\n}}")
    plan = _plan(source)
    node = plan.graph.node("d")
    assert node.pre is not None
    rng = np.random.default_rng(c)
    x = rng.standard_normal((cin, h, w)).astype(np.float32)
    we, be = rng.standard_normal((c, cin, 1, 1)).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    wd, bd = rng.standard_normal((c, 1, 3, 3)).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    for name, arr in (("x", x), ("we", c_gen.pack_pw(we)), ("be", be), ("wd", wd), ("bd", bd)):
        arr.tofile(tmp_path / f"{name}.bin")
    (tmp_path / "k.c").write_text(KERNEL)
    exe = tmp_path / "k"
    run([cc(), "-std=c99", *BUILDS[build], "-I", str(KERNELS), str(tmp_path / "k.c"), "-o", str(exe), "-lm"])
    mid = np.clip(reference(x, we, be, (1, 1), (0, 0), (1, 1), "none"), 0, 6).astype(np.float32)
    want = reference(mid, wd, bd, (stride, stride), (1, 1), (1, 1), "relu", depthwise=True)
    oh, ow = want.shape[1:]
    scratch = c_gen._fused_scratch(node, plan.graph)
    run([str(exe), str(tmp_path), *map(str, [cin, c, h, w, oh, ow, 3, stride, 1, c_gen.pw_block(node, plan.graph),
                                             c_gen.depthwise_rows(node, plan.graph) or 0, scratch])])
    got = np.fromfile(tmp_path / "y.bin", np.float32).reshape(want.shape)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
