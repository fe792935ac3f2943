"""The C plan's convolution kernels on their own: nnc_conv_bcast (the direct
convolution vectorised over output channels), nnc_conv_rows (the direct one
vectorised along output rows), nnc_conv_planes (the matrix
multiply over shifted input planes), nnc_winograd (Winograd's F(2x2, 3x3)
and F(4x4, 3x3)) and nnc_depthwise (by phase planes, and row by row without
scratch) against a float64 reference on odd shapes (channels not a multiple of its block, rows not a multiple of its
tile, strides, dilations, paddings, depth blocks, bands of a few rows),
built for the widest target and portably (-O2 without -march, plain C), its
scratch allocated at exactly the size the code generator plans and checked by
AddressSanitizer; and which layers of the samples it takes."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.compiler.build import compile_plan
from nnc.compiler.codegen import c as c_gen
from nnc.compiler.codegen import cbuild

from conftest import HAS_CC

pytestmark = pytest.mark.skipif(not HAS_CC, reason="no C compiler")

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "runtime" / "c"

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "nnc_kernels.h"

static float *load(const char *path, long n) {
    FILE *f = fopen(path, "rb");
    float *data = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!f || fread(data, sizeof(float), (size_t)n, f) != (size_t)n) exit(3);
    fclose(f);
    return data;
}

/* usage: harness DIR cin h w cout oh ow kh kw sh sw pt pl dh dw kc nc act has_bias scratch_floats kernel
 * (kernel: 0 nnc_conv_bcast, 1 nnc_conv_planes, 2 nnc_depthwise, 3 nnc_conv3x3_wino4, 4 nnc_conv3x3_wino,
 * 5 nnc_depthwise_cv, 6 nnc_conv_rows;
 * groups: cin for the depthwise one) */
int main(int argc, char **argv) {
    int v[18], i, kernel;
    char path[4096];
    long nx, nw, ny, ns;
    float *x, *w, *b, *y, *scratch;
    nnc_conv g;
    FILE *out;
    if (argc != 22) return 2;
    for (i = 0; i < 18; i++) v[i] = atoi(argv[2 + i]);
    ns = atol(argv[20]);
    kernel = atoi(argv[21]);
    g.cin = v[0], g.h = v[1], g.w = v[2], g.cout = v[3], g.oh = v[4], g.ow = v[5], g.kh = v[6], g.kw = v[7];
    g.sh = v[8], g.sw = v[9], g.pt = v[10], g.pl = v[11], g.dh = v[12], g.dw = v[13], g.groups = kernel == 2 || kernel == 5 ? g.cin : 1;
    g.kc = v[14], g.nc = v[15];
    nx = (long)g.cin * g.h * g.w;
    nw = kernel == 0 ? (long)(g.cout + 31) / 32 * 32 * g.cin * g.kh * g.kw     /* pack_bcast pads to 32 */
       : kernel == 6 ? (long)(g.cout + 15) / 16 * 16 * g.cin * g.kh * g.kw      /* ... for nnc_conv_rows to 16 */
       : kernel == 1 ? (long)(g.cout + NNC_MR - 1) / NNC_MR * NNC_MR * g.cin * g.kh * g.kw
       : kernel == 3 ? 36L * ((g.cout + NNC_MR - 1) / NNC_MR * NNC_MR) * g.cin
       : kernel == 4 ? 16L * ((g.cout + NNC_MR - 1) / NNC_MR * NNC_MR) * g.cin
       : (long)g.cout * g.kh * g.kw;
    ny = (long)g.cout * g.oh * g.ow;
    sprintf(path, "%s/x.bin", argv[1]), x = load(path, nx);
    sprintf(path, "%s/w.bin", argv[1]), w = load(path, nw);
    sprintf(path, "%s/b.bin", argv[1]), b = load(path, g.cout);
    y = malloc((size_t)ny * sizeof *y);
    scratch = malloc((size_t)ns * sizeof *scratch);        /* exactly what the planner reserves */
    if (kernel == 0)
        nnc_conv_bcast(&g, x, w, v[17] ? b : NULL, y, v[16], 0.1f, scratch);
    else if (kernel == 1)
        nnc_conv_planes(&g, x, w, v[17] ? b : NULL, y, v[16], 0.1f, scratch);
    else if (kernel == 2)
        nnc_depthwise(&g, x, w, v[17] ? b : NULL, y, v[16], 0.1f, ns ? scratch : NULL);
    else if (kernel == 5)
        nnc_depthwise_cv(&g, x, w, v[17] ? b : NULL, y, v[16], 0.1f, scratch);
    else if (kernel == 6)
        nnc_conv_rows(&g, x, w, v[17] ? b : NULL, y, v[16], 0.1f, scratch);
    else if (kernel == 3)
        nnc_conv3x3_wino4(&g, x, w, v[17] ? b : NULL, y, v[16], 0.1f, scratch);
    else
        nnc_conv3x3_wino(&g, x, w, v[17] ? b : NULL, y, v[16], 0.1f, scratch);
    sprintf(path, "%s/y.bin", argv[1]);
    out = fopen(path, "wb");
    fwrite(y, sizeof *y, (size_t)ny, out);
    fclose(out);
    free(x), free(w), free(b), free(y), free(scratch);
    return 0;
}
"""

ACTS = {"none": 0, "relu": 1, "relu6": 2, "sigmoid": 3, "tanh": 4}
SANITIZE = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
BUILDS = {"native": ["-O3", "-march=native"], "portable": ["-O2"], "plain": ["-O2", "-DNNC_PLAIN_C"],
          "native-asan": [*SANITIZE, "-march=native"], "portable-asan": SANITIZE,
          # the 8-lane paths (nnc_t8's transposed tile stores, 6-pixel tiles) on a host whose native build is wider
          "avx2": ["-O2", "-mavx2", "-mfma"],
          # the 16-lane paths (32-channel tiles reading two weight blocks, 7-pixel tiles) on an AVX2 host: the
          # kernels use GNU vector extensions only, which GCC lowers to pairs of AVX2 vectors
          "avx512-emulated": ["-O2", "-mavx2", "-mfma", "-D__AVX512F__", "-Wno-psabi"],
          "avx512-emulated-asan": [*SANITIZE, "-mavx2", "-mfma", "-D__AVX512F__", "-Wno-psabi"]}


def _host_runs(build: str) -> bool:
    """Whether this machine runs what `build` compiles (the AVX builds need an x86-64 CPU with AVX2 and FMA)."""
    if not build.startswith("avx"):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


def _skip_unless_runnable(build: str) -> None:
    """Skip a case of `build` where this machine cannot build or run it."""
    if "asan" in build and not sanitizers_work():
        pytest.skip("the C compiler cannot build with -fsanitize=address,undefined")
    if not _host_runs(build):
        pytest.skip("this CPU does not run AVX2 code")


@functools.cache
def sanitizers_work() -> bool:
    probe = subprocess.run([cbuild.find_compiler(), "-fsanitize=address,undefined", "-x", "c", "-", "-o", "/dev/null"],
                           input="int main(void){return 0;}", capture_output=True, text=True)
    return probe.returncode == 0


def reference(x, w, b, stride, pads, dilation, act, depthwise=False):
    """PyTorch's convolution (one group, or depthwise with channel multiplier
    cout/cin) in float64, then the activation."""
    cin, h, wd = x.shape
    cout, _, kh, kw = w.shape
    (sh, sw), (pt, pl), (dh, dw) = stride, pads, dilation
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pt), (pl, pl)))
    oh = (h + 2 * pt - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pl - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((cout, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
            if depthwise:
                y += w[:, 0, i, j, None, None] * np.repeat(patch, cout // cin, axis=0)
            else:
                y += np.einsum("oc,chw->ohw", w[:, :, i, j].astype(np.float64), patch)
    if b is not None:
        y += b[:, None, None]
    return {"none": y, "relu": np.maximum(y, 0), "relu6": np.clip(y, 0, 6), "sigmoid": 1 / (1 + np.exp(-y)),
            "tanh": np.tanh(y)}[act]


class _Node:
    """What the code generator's scratch sizes read of a graph node."""

    def __init__(self, cin, cout, oh, ow, k, s, d, pads=((1, 1), (1, 1))):
        self.attrs = {"in_channels": cin, "filters": cout, "kernel": k, "stride": s, "dilation": d, "pads": pads}
        self.shape = (cout, oh, ow)


_HARNESSES: dict[str, Path] = {}


def _harness(build: str, where: Path) -> Path:
    """The harness built for `build`, once a session (every case of a build runs the same program)."""
    if build not in _HARNESSES:
        folder = where / f"harness-{build}"
        folder.mkdir(exist_ok=True)
        (folder / "h.c").write_text(HARNESS)
        exe = folder / "h"
        proc = subprocess.run([cbuild.find_compiler(), "-std=c99", *BUILDS[build], "-I", str(KERNELS),
                               str(folder / "h.c"), "-o", str(exe), "-lm"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        _HARNESSES[build] = exe
    return _HARNESSES[build]


def run_kernel(tmp_path, kernel, build, x, wt, bias, packed, geometry, act, scratch_floats):
    """Run kernel 0/1/2 (bcast, planes, depthwise) of the harness for `build`, return its output."""
    x.tofile(tmp_path / "x.bin")
    packed.tofile(tmp_path / "w.bin")
    cout = wt.shape[0]
    (bias if bias is not None else np.zeros(cout, np.float32)).tofile(tmp_path / "b.bin")
    exe = _harness(build, tmp_path.parent)
    args = [*geometry, ACTS[act], int(bias is not None), scratch_floats, kernel]
    proc = subprocess.run([str(exe), str(tmp_path), *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return np.fromfile(tmp_path / "y.bin", np.float32)


CASES = [
    # cin, h, w, cout, kernel, stride, pad, dilation, act, depth (kc), band rows (nc)
    (5, 13, 17, 37, (3, 3), (1, 1), (1, 1), (1, 1), "relu6", 0, 0),
    (7, 20, 9, 70, (5, 5), (2, 2), (2, 2), (1, 1), "relu", 3, 4),
    (3, 15, 15, 5, (7, 7), (2, 2), (3, 3), (1, 1), "none", 0, 1),
    (40, 6, 5, 33, (1, 1), (1, 1), (0, 0), (1, 1), "sigmoid", 16, 0),
    (9, 12, 23, 64, (3, 3), (1, 1), (2, 2), (2, 2), "tanh", 4, 5),
    (6, 11, 14, 31, (3, 2), (3, 1), (0, 1), (1, 2), "relu", 0, 2),
    (64, 7, 7, 96, (3, 3), (1, 1), (1, 1), (1, 1), "none", 32, 0),
    (50, 5, 9, 40, (1, 1), (1, 1), (0, 0), (1, 1), "relu6", 16, 0),      # 1x1 read in place, 45 pixels
    (20, 2, 3, 33, (1, 1), (1, 1), (0, 0), (1, 1), "relu", 0, 0),        # fewer pixels than a tile: a band
    (16, 14, 13, 40, (3, 3), (2, 2), (1, 1), (1, 1), "relu", 8, 3),     # tiles across rows 7 wide, bands of 3
    (4, 9, 2, 9, (3, 3), (1, 1), (1, 1), (1, 1), "none", 2, 2),         # bands of 4 pixels, fewer than a tile
    (3, 9, 4, 5, (3, 3), (2, 2), (1, 1), (1, 1), "relu", 0, 1),         # ... one depth block: nothing after the band
    (4, 11, 27, 8, (3, 3), (1, 1), (1, 1), (1, 1), "relu6", 0, 3),      # nnc_conv_rows's 8 x 32 tile: 16 + 11 pixels
    (3, 8, 70, 7, (3, 3), (1, 1), (1, 1), (1, 1), "relu", 0, 2),        # ... two whole tiles along a row, then 6
    (5, 9, 20, 6, (1, 1), (3, 3), (0, 0), (1, 1), "none", 0, 2),        # a stride past the kernel: unread phases
    (2, 4, 5, 10, (2, 2), (1, 2), (3, 4), (2, 1), "tanh", 0, 0),         # padding past the input and the kernel
]


@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_bcast_convolution_matches_reference_in_exact_scratch(tmp_path, build, case):
    _skip_unless_runnable(build)
    cin, h, w, cout, k, s, p, d, act, depth, rows = CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal((cin, h, w)).astype(np.float32)
    wt = (rng.standard_normal((cout, cin, *k)) / np.sqrt(cin * k[0] * k[1])).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32) if case % 2 == 0 else None
    want = reference(x, wt, bias, s, p, d, act)
    oh, ow = want.shape[1:]
    kc, nc = depth or cin, rows or oh
    node = _Node(cin, cout, oh, ow, k, s, d, ((p[0], p[0]), (p[1], p[1])))
    scratch = c_gen._bcast_scratch(node, nc, min(kc, c_gen.BCAST_TAPS // (k[0] * k[1])))
    got = run_kernel(tmp_path, 0, build, x, wt, bias, c_gen.pack_bcast(wt),
                     [cin, h, w, cout, oh, ow, *k, *s, *p, *d, depth, rows], act, scratch // 4)
    assert np.abs(got.reshape(want.shape) - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_rows_convolution_matches_reference_in_exact_scratch(tmp_path, build, case):
    _skip_unless_runnable(build)
    cin, h, w, cout, k, s, p, d, act, _, rows = CASES[case]
    rng = np.random.default_rng(20 + case)
    x = rng.standard_normal((cin, h, w)).astype(np.float32)
    wt = (rng.standard_normal((cout, cin, *k)) / np.sqrt(cin * k[0] * k[1])).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32) if case % 2 == 0 else None
    want = reference(x, wt, bias, s, p, d, act)
    oh, ow = want.shape[1:]
    node = _Node(cin, cout, oh, ow, k, s, d, ((p[0], p[0]), (p[1], p[1])))
    scratch = c_gen._rows_scratch(node, rows or oh)
    got = run_kernel(tmp_path, 6, build, x, wt, bias, c_gen.pack_bcast(wt, c_gen.ROWS_RB),
                     [cin, h, w, cout, oh, ow, *k, *s, *p, *d, 0, rows], act, scratch // 4)
    assert np.abs(got.reshape(want.shape) - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_planes_convolution_matches_reference_in_exact_scratch(tmp_path, build, case):
    _skip_unless_runnable(build)
    cin, h, w, cout, k, s, p, d, act, _, rows = CASES[case]
    depth = (0, 7, 50, 0, 13, 0, 64, 20, 0, 40, 9, 0, 9, 27, 5, 8)[case]   # taps of a depth block (0: NNC_KC)
    rng = np.random.default_rng(10 + case)
    x = rng.standard_normal((cin, h, w)).astype(np.float32)
    wt = (rng.standard_normal((cout, cin, *k)) / np.sqrt(cin * k[0] * k[1])).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32) if case % 2 else None
    want = reference(x, wt, bias, s, p, d, act)
    oh, ow = want.shape[1:]
    scratch = c_gen._planes_scratch(_Node(cin, cout, oh, ow, k, s, d), rows or oh)
    got = run_kernel(tmp_path, 1, build, x, wt, bias, c_gen.pack_conv(wt, 1),
                     [cin, h, w, cout, oh, ow, *k, *s, *p, *d, depth, rows], act, scratch // 4)
    assert np.abs(got.reshape(want.shape) - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


WINO4_CASES = [
    # cin, h, w, cout, pad, act, tile rows of a block
    (64, 28, 28, 64, 1, "relu", 4),
    (5, 13, 11, 7, 1, "relu6", 2),     # partial tiles on both sides
    (3, 17, 9, 13, 0, "none", 1),      # no padding
    (9, 20, 33, 6, 2, "tanh", 3),      # padding 2: the output outgrows the input
    (2, 4, 5, 3, 1, "sigmoid", 5),     # fewer tile rows than a block
]


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("case", range(len(WINO4_CASES)))
def test_winograd_matches_reference_in_exact_scratch(tmp_path, build, case, m):
    _skip_unless_runnable(build)
    cin, h, w, cout, pad, act, rows = WINO4_CASES[case]
    rng = np.random.default_rng(30 + case)
    x = rng.standard_normal((cin, h, w)).astype(np.float32)
    wt = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32) if case % 2 == 0 else None
    want = reference(x, wt, bias, (1, 1), (pad, pad), (1, 1), act)
    oh, ow = want.shape[1:]
    scratch = c_gen._wino_scratch(_Node(cin, cout, oh, ow, (3, 3), (1, 1), (1, 1)), m, rows)
    packed = c_gen.pack_winograd4(wt) if m == 4 else c_gen.pack_winograd(wt)
    got = run_kernel(tmp_path, 3 if m == 4 else 4, build, x, wt, bias, packed,
                     [cin, h, w, cout, oh, ow, 3, 3, 1, 1, pad, pad, 1, 1, 0, rows], act, scratch // 4)
    # F(4x4, 3x3) rounds more than the direct sum: 1e-4 of the output's magnitude, as the plan promises
    assert np.abs(got.reshape(want.shape) - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


DW_CASES = [
    # channels, multiplier, h, w, kernel, stride, pad, dilation, act, band rows (0: all; -1: no scratch, row by row)
    (6, 1, 7, 7, (3, 3), (1, 1), (1, 1), (1, 1), "relu6", 0),
    (5, 2, 14, 13, (3, 3), (2, 2), (1, 1), (1, 1), "relu", 3),         # stride 2, odd left pad: phase 1's own head
    (4, 1, 9, 17, (5, 5), (2, 1), (2, 2), (1, 1), "none", 2),
    (3, 1, 12, 11, (3, 3), (1, 1), (2, 2), (2, 2), "tanh", 5),
    (7, 1, 4, 1, (3, 3), (1, 1), (1, 1), (1, 1), "relu6", 0),
    (2, 3, 10, 10, (3, 3), (3, 3), (0, 0), (1, 1), "sigmoid", 1),
    (6, 1, 9, 40, (3, 3), (1, 1), (1, 1), (1, 1), "relu6", -1),
    (3, 1, 11, 15, (3, 3), (2, 2), (0, 0), (1, 1), "relu6", 2),        # stride 2, odd w + left pad: phase 0's own tail
    (4, 1, 10, 9, (5, 5), (2, 2), (2, 2), (1, 1), "none", 0),         # ... with a 5x5 kernel and an even left pad
    # stride 2 on rows long enough for the deinterleave in vectors of 8 (nnc_deint2): 19 column pairs (two
    # chunks and one ending at the last pair), exactly 8 pairs, 15 pairs of a 5x5 kernel without padding
    (3, 1, 9, 40, (3, 3), (2, 2), (1, 1), (1, 1), "relu6", 3),
    (2, 2, 6, 18, (3, 3), (2, 2), (1, 1), (1, 1), "none", 0),
    (4, 1, 11, 34, (5, 5), (2, 2), (0, 0), (1, 1), "relu", 2),
]


def _depthwise_case(seed, c, mult, h, w, k, s, p, d, act):
    """Random input, weights and (even seeds) bias of a depthwise case, and the reference output."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c, h, w)).astype(np.float32)
    wt = rng.standard_normal((c * mult, 1, *k)).astype(np.float32)
    bias = rng.standard_normal(c * mult).astype(np.float32) if seed % 2 == 0 else None
    return x, wt, bias, reference(x, wt, bias, s, p, d, act, depthwise=True)


@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("case", range(len(DW_CASES)))
def test_depthwise_matches_reference_in_exact_scratch(tmp_path, build, case):
    _skip_unless_runnable(build)
    c, mult, h, w, k, s, p, d, act, rows = DW_CASES[case]
    x, wt, bias, want = _depthwise_case(20 + case, c, mult, h, w, k, s, p, d, act)
    oh, ow = want.shape[1:]
    node = _Node(c, c * mult, oh, ow, k, s, d)
    scratch = 0 if rows < 0 else c_gen._dw_scratch(node, rows or oh)
    got = run_kernel(tmp_path, 2, build, x, wt, bias, wt.reshape(-1),
                     [c, h, w, c * mult, oh, ow, *k, *s, *p, *d, 0, max(rows, 0)], act, scratch)
    assert np.abs(got.reshape(want.shape) - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


# channels side by side (nnc_depthwise_cv): blocks of 16 channels and a partial one, strides 1 to 3, a
# multiplier, dilation, rows narrower and wider than a refill of the ring, activations fused or after
DWC_CASES = [
    # channels, multiplier, h, w, kernel, stride, pad, dilation, act
    (16, 1, 7, 7, (3, 3), (1, 1), (1, 1), (1, 1), "relu6"),
    (33, 1, 14, 14, (3, 3), (2, 2), (1, 1), (1, 1), "relu"),
    (20, 1, 28, 31, (3, 3), (2, 2), (1, 1), (1, 1), "none"),
    (6, 3, 9, 17, (5, 5), (2, 1), (2, 2), (1, 1), "sigmoid"),
    (17, 1, 12, 11, (3, 3), (1, 1), (2, 2), (2, 2), "tanh"),
    (32, 1, 5, 112, (3, 3), (2, 2), (1, 1), (1, 1), "relu6"),
    (24, 2, 4, 1, (3, 3), (1, 1), (1, 1), (1, 1), "relu6"),
    (16, 1, 10, 10, (3, 3), (3, 3), (0, 0), (1, 1), "relu"),
    (18, 1, 9, 40, (1, 7), (1, 1), (0, 3), (1, 1), "none"),
]


# every build on the new cases; the phase planes' cases once natively and once under the sanitizers
DWC_RUNS = [(build, case) for build in BUILDS for case in range(len(DWC_CASES))] + \
    [(build, len(DWC_CASES) + case) for build in ("native", "native-asan") for case in range(len(DW_CASES))]


@pytest.mark.parametrize("build,case", DWC_RUNS)
def test_depthwise_side_by_side_matches_reference_in_exact_scratch(tmp_path, build, case):
    """nnc_depthwise_cv (on other targets nnc_depthwise in bands of g.nc rows, in the same scratch) in
    exactly the scratch the code generator plans: the larger of the two methods' needs."""
    _skip_unless_runnable(build)
    cases = DWC_CASES + [row[:-1] for row in DW_CASES]
    c, mult, h, w, k, s, p, d, act = cases[case]
    x, wt, bias, want = _depthwise_case(50 + case, c, mult, h, w, k, s, p, d, act)
    oh, ow = want.shape[1:]
    node = _Node(c, c * mult, oh, ow, k, s, d, pads=((p[0], p[0]), (p[1], p[1])))
    rows = max(1, min(oh, 3))
    scratch = max(c_gen._dw_scratch(node, rows), c_gen._dwc_scratch(node, h, w))
    got = run_kernel(tmp_path, 5, build, x, wt, bias, wt.reshape(-1),
                     [c, h, w, c * mult, oh, ow, *k, *s, *p, *d, 0, rows], act, scratch)
    assert np.abs(got.reshape(want.shape) - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def test_depthwise_side_by_side_keeps_nan_and_infinity_in_their_channel(tmp_path):
    """A NaN or an infinity in one channel reaches only that channel's outputs near it (the padding and
    the other lanes of a block are zeros and other channels, never multiplied into it)."""
    c, h, w = 20, 6, 6
    x = np.ones((c, h, w), np.float32)
    x[3, 2, 2], x[17, 0, 5] = np.nan, np.inf
    wt = np.ones((c, 1, 3, 3), np.float32)
    node = _Node(c, c, h, w, (3, 3), (1, 1), (1, 1))
    scratch = max(c_gen._dw_scratch(node, 2), c_gen._dwc_scratch(node, h, w))
    got = run_kernel(tmp_path, 5, "native", x, wt, None, wt.reshape(-1),
                     [c, h, w, c, h, w, 3, 3, 1, 1, 1, 1, 1, 1, 0, 2], "none", scratch).reshape(c, h, w)
    bad = ~np.isfinite(got)
    assert bad[3, 1:4, 1:4].all() and np.isnan(got[3]).sum() == 9
    assert np.isinf(got[17, 0:2, 4:6]).all() and bad[17].sum() == 4
    assert bad.sum() == 13


def test_depthwise_side_by_side_where_its_scratch_is_bounded(tmp_path):
    """MobileNetV2's strided and narrow depthwise layers run with channels side by side, its 56-wide
    stride-1 ones row by row; a layer whose ring would pass DWC_SCRATCH floats keeps the phase planes."""
    plan = compile_plan(ROOT / "samples" / "mobilenetv2.nn", target="c", render=False)
    side = {n.label: c_gen.depthwise_cv(n, plan.graph) for n in plan.graph.nodes if c_gen._is_depthwise(n)}
    assert side["features.2.conv.1.0"] and side["features.17.conv.1.0"] and side["features.14.conv.1.0"]
    assert not side["features.3.conv.1.0"] and not side["features.1.conv.0.0"]
    for size, want in ((600, False), (56, True)):
        src = tmp_path / f"m{size}.nn"
        src.write_text(f"model m(x: [8, {size}, {size}]) {{\n    c: depthwise_conv2d(3, stride=2, padding=1) -> relu6\n}}\n")
        plan = compile_plan(src, target="c", render=False)
        node = next(n for n in plan.graph.nodes if c_gen._is_depthwise(n))
        assert c_gen.depthwise_cv(node, plan.graph) is want
        assert c_gen.scratch_bytes(node, plan.graph)["panel"] <= max(c_gen.DWC_SCRATCH, c_gen.DW_SCRATCH) * 4


@pytest.mark.parametrize("build", ["native", "portable"])
@pytest.mark.parametrize("cout", [3, 20])
@pytest.mark.parametrize("act", ["relu", "relu6"])
def test_rows_propagates_nan_through_its_fused_clamps(tmp_path, build, cout, act):
    # NaN compares false: the clamps on the bits keep it (3 channels: AVX-512's 8 x 32 tile; 20: 16 + 4)
    x = np.full((2, 5, 40), np.nan, np.float32)
    wt = np.ones((cout, 2, 3, 3), np.float32)
    node = _Node(2, cout, 5, 40, (3, 3), (1, 1), (1, 1))
    got = run_kernel(tmp_path, 6, build, x, wt, np.zeros(cout, np.float32), c_gen.pack_bcast(wt, c_gen.ROWS_RB),
                     [2, 5, 40, cout, 5, 40, 3, 3, 1, 1, 1, 1, 1, 1, 0, 2], act, c_gen._rows_scratch(node, 2) // 4)
    assert np.isnan(got).all()


def test_bcast_propagates_nan_through_relu(tmp_path):
    x = np.full((2, 5, 5), np.nan, np.float32)
    (tmp_path / "h.c").write_text(HARNESS)
    x.tofile(tmp_path / "x.bin")
    c_gen.pack_bcast(np.ones((3, 2, 3, 3), np.float32)).tofile(tmp_path / "w.bin")
    np.zeros(3, np.float32).tofile(tmp_path / "b.bin")
    exe = tmp_path / "h"
    subprocess.run([cbuild.find_compiler(), "-std=c99", "-O2", "-I", str(KERNELS), str(tmp_path / "h.c"), "-o",
                    str(exe), "-lm"], check=True)
    scratch = c_gen._bcast_scratch(_Node(2, 3, 5, 5, (3, 3), (1, 1), (1, 1)), 5, 2)
    subprocess.run([str(exe), str(tmp_path), *map(str, [2, 5, 5, 3, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1,
                                                        scratch // 4, 0])], check=True)
    assert np.isnan(np.fromfile(tmp_path / "y.bin", np.float32)).all()


def test_samples_take_the_kernel_where_the_cost_model_says():
    plan = compile_plan(ROOT / "samples" / "resnet18.nn", target="c", render=False)
    kinds = {n.label: c_gen._conv_kind(n, plan.graph) for n in plan.graph.nodes if n.op.name == "conv2d"}
    # the 7x7 stem (3 channels) along output rows; strided and 7x7-output 3x3 convolutions over output
    # channels; the large stride-1 3x3 ones by Winograd's F(4x4, 3x3), the 14x14-output ones by F(2x2, 3x3)
    assert kinds["conv1"] == "rows"
    assert kinds["layer2.0.conv1"] == kinds["layer4.0.conv2"] == kinds["layer4.1.conv1"] == "bcast"
    assert kinds["layer1.0.conv1"] == kinds["layer2.1.conv1"] == "winograd4"
    assert kinds["layer3.1.conv1"] == "winograd"
    # Winograd and the bands take the whole room beside the live values where the arena stays at its
    # bound (half of it gave layer2.0.conv2 F(2x2) and the 56x56 layers blocks of two tile rows)
    assert kinds["layer2.0.conv2"] == "winograd4"
    node = {n.label: n for n in plan.graph.nodes}
    assert c_gen.wino_rows(node["layer1.0.conv1"], plan.graph, 4) >= 4
    assert plan.layout.plan.arena_bytes == plan.layout.lower_bound_bytes
    # the 7x7 3x3 layers in depth blocks of 8 channels (9 KiB of weights a 32-channel tile: L1)
    assert c_gen.direct_plan(node["layer4.1.conv1"], plan.graph)[1] == 8
    assert c_gen.direct_plan(node["layer4.0.conv1"], plan.graph)[1] == 8
    # the U-Net's layers along output rows: 16 channels as one register tile, 8 as tiles of two vectors
    # of pixels (the decoder's first layer, 16 -> 8 channels at 32x32: 100 us over nnc_conv_bcast's
    # 32-channel tiles, 62 by shifted planes, 36 along rows); its arena at the bound
    plan = compile_plan(ROOT / "samples" / "unet.nn", target="c", render=False)
    node = {n.label: n for n in plan.graph.nodes}
    assert {c_gen._conv_kind(node[f"{p}{i}.{s}"], plan.graph) for p in ("enc", "dec") for i in (1, 2)
            for s in "ab"} == {"rows"}
    assert plan.layout.plan.arena_bytes == plan.layout.lower_bound_bytes
    shares = c_gen._room(plan.graph)[2]
    assert shares["dec1.a"] == c_gen.WINO_ROOMS[0] and len(shares) < len(plan.graph.nodes)
    # the concat sample's shallow 3x3 layers (3 -> 16, 8 -> 16 at 32x32, 16 -> 32 at 16x16) along output
    # rows, not by F(2x2, 3x3), whose transforms outweigh its multiplies there (95 -> 70 us the model)
    plan = compile_plan(ROOT / "samples" / "concat.nn", target="c", render=False)
    node = {n.label: n for n in plan.graph.nodes}
    assert all(c_gen._conv_kind(node[k], plan.graph) == "rows" for k in ("stem", "mix1.branch3.1", "mix2.branch3.1"))
    assert c_gen._is_winograd(node["stem"], plan.graph)
    assert c_gen._direct_costs(node["stem"])["rows"] < c_gen._wino2_cost(node["stem"])
    # LeNet's 5x5 ones: one input channel by shifted planes, no packing; six along output rows
    plan = compile_plan(ROOT / "samples" / "lenet.nn", target="c", render=False)
    assert [c_gen._conv_kind(n, plan.graph) for n in plan.graph.nodes if n.op.name == "conv2d"] == ["planes", "rows"]
    # a 1x1 convolution of stride 1 on a large output reads its input in place: the matrix multiply
    plan = compile_plan(ROOT / "samples" / "mobilenetv2.nn", target="c", render=False)
    kinds = {n.label: c_gen._conv_kind(n, plan.graph) for n in plan.graph.nodes if n.op.name == "conv2d"}
    # the stem (3 channels, 27 taps) along output rows: nnc_conv_bcast's transposed stores were half its time
    assert kinds["features.0.0"] == "rows"
    # (the 112x112 projection; the expansions are computed inside their depthwise layers: fuse_blocks)
    assert kinds["features.1.conv.1"] == "gemm"
    assert "features.2.conv.0.0" not in kinds and "features.13.conv.0.0" not in kinds
    # ... where a small one (7x7 pixels, 960 channels in) reads it in place over output channels
    assert kinds["features.17.conv.2"] == "bcast"
    # ... and so does a 14x14 projection, whose last matrix-multiply tile of 32 pixels would hold 4
    assert kinds["features.13.conv.2"] == "bcast"
    # ... in depth blocks whose input rows and weights stay within half of a 32 KiB L1 (not 288 channels)
    node = next(n for n in plan.graph.nodes if n.label == "features.17.conv.2")
    depth = c_gen.direct_plan(node, plan.graph)[1]
    assert 32 <= depth < 960 and depth * (49 * 4 + 64) <= c_gen.BCAST_L1 < (depth + 1) * (49 * 4 + 64)


def test_the_room_per_layer_takes_few_trial_layouts(monkeypatch):
    # where the whole room grows the arena, the layers it would change take it in groups, halved
    # where they grow the arena: a deep U-Net of 193 steps (119 layers take the whole room) is laid
    # out 17 times, not once per layer (123)
    from nnc.compiler import memory
    layouts = []
    original = memory.layout
    monkeypatch.setattr(memory, "layout", lambda *a, **k: layouts.append(1) or original(*a, **k))
    block = "block multi(c)(x) {\n    return x" + "".join(f" -> c{i}: conv2d(c, 3, padding=1) -> relu"
                                                        for i in range(20)) + "\n}\n"
    lines = ["    e0 = x -> enc0: multi(4)"] + [f"    e{k} = e{k - 1} -> maxpool2d(2) -> enc{k}: multi({4 << k})"
                                                for k in range(1, 5)]
    lines.append("    d4 = e4")
    for k in range(3, -1, -1):
        lines += [f"    u{k} = d{k + 1} -> up{k}: conv_transpose2d({4 << k}, 2, stride=2)",
                  f"    d{k} = concat(u{k}, e{k}, axis=0) -> dec{k}: multi({4 << k})"]
    src = block + "model m(x: [1, 128, 128]) {\n" + "\n".join(lines + ["    d0 -> head: conv2d(1, 1)"]) + "\n}\n"
    plan = compile_plan(src, target="c", render=False)
    shares = c_gen._room(plan.graph)[2]
    assert 0 < len(shares) < len(plan.graph.nodes)           # per layer: the whole room would grow the arena
    assert plan.layout.plan.arena_bytes == plan.layout.lower_bound_bytes
    assert len(layouts) <= 24


@pytest.mark.parametrize("cin", [256, 1100])
def test_a_pointwise_layer_whose_partial_sums_find_no_room_runs_in_one_depth_block(tmp_path, cin):
    """256 channels of 10x10 in: depth blocks of 35 channels would need 12.5 KiB of partial sums beside
    the live values, which the plan has not; one block of all 256 needs 4 bytes and still beats the
    matrix multiply in the cost model, so the layer keeps nnc_conv_bcast (and equals the NumPy plan).
    1100 channels are more than one block takes (NNC_BCAST_TAPS): never planned as one."""
    src = tmp_path / "m.nn"
    src.write_text(f"model m(x: [{cin}, 10, 10]) {{\n    c: conv2d(32, 1, bias=false)\n}}\n")
    plan = compile_plan(src, target="c", render=False)
    node = next(n for n in plan.graph.nodes if n.op.name == "conv2d")
    assert c_gen._bcast_depth(node) < cin and c_gen._direct_costs(node)["bcast"] < c_gen._direct_costs(node)["gemm"]
    direct = c_gen.direct_plan(node, plan.graph)
    if cin <= c_gen.BCAST_TAPS:
        assert direct == ("bcast", cin, 10)
    else:
        assert direct is None or direct[1] < cin
        assert c_gen._bcast_scratch(node, 10, cin) > 4          # the kernel splits it: partial sums needed
    x = np.random.default_rng(3).standard_normal((2, cin, 10, 10)).astype(np.float32)
    weights = {"c.weight": np.random.default_rng(4).standard_normal((32, cin, 1, 1)).astype(np.float32) / 16}
    got = nnc.build(src, target="c", batch=2, weights=weights)(x)
    want = nnc.build(src, target="numpy", batch=2, weights=weights)(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
