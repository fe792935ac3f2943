"""The C plan's optional threads: built with -fopenmp and run on 2 and 4
threads (both wait policies), every parallel loop (Winograd's multiplies,
nnc_conv_bcast's blocks of output channels with and without their own
partial sums, and the tiles of its one block (at most 32 channels on
AVX-512, 16 on AVX2), runs of tiles of a 1x1 layer it reads in place (partial
sums shared, or one block), the columns of a dense layer past L2, the
in-place 1x1 matrix multiply's tiles, the depthwise
channels, a fused expansion's tiles on targets without the AVX-512 ring,
the AVX-512 ring's blocks of 16 channels, plain and fused, nnc_conv_rows's
band rows and tiles in one parallel region)
gives bitwise the result of the build without OpenMP, and the loops that
stay on one thread theirs, on the native build and on an AVX2 one: with
every loop parallel however small (NNC_PAR_WORK=0), and with the default
threshold below which a loop stays on one thread."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nnc.compiler.build import compile_plan
from nnc.compiler.codegen import c as c_gen

from conftest import HAS_CC
from test_c_plan import build_harness, call, cc
from test_c_conv_kernels import _host_runs

pytestmark = pytest.mark.skipif(not HAS_CC, reason="no C compiler")

# every kernel with a parallel loop, at sizes where the cost model picks it (pinned below)
MODEL = """model m(x: [16, 56, 56]) {
    stem: conv2d(32, 3, padding=1) -> relu
    a: conv2d(32, 3, padding=1) -> relu
    wide: conv2d(32, 1) -> relu
    b: conv2d(64, 3, stride=2, padding=1) -> relu
    c: conv2d(64, 3, padding=1) -> relu
    d: conv2d(96, 3, stride=2, padding=1) -> relu
    e: conv2d(96, 3, padding=1) -> relu
    x1: conv2d(192, 1) -> relu6
    dwx: depthwise_conv2d(3, padding=1) -> relu6
    f: conv2d(64, 3, stride=2, padding=1) -> relu
    g: conv2d(64, 3, padding=1)
    p: conv2d(320, 1)
    q: conv2d(96, 1) -> relu6
    dw: depthwise_conv2d(3, padding=1) -> relu6
    h: conv2d(64, 1)
}
"""
# ... and the rest: a 1x1 matrix multiply deeper than a block of its pixels (K = 256), partial sums in the
# shared scratch (a banded 14x14 layer, a 1x1 read in place: one thread), last blocks of fewer than 32
# channels (72, 40), a 7x7 layer in two bands, one block of 16 channels whose tiles take the threads (the
# last tile redoing a few pixels of the one before); read in place, runs of tiles on the threads: with
# partial sums in the shared scratch (w), and one block of 32 channels on AVX-512 (u, 4x4: three tiles);
# a dense layer past L2 (512 x 1000: a run of columns a thread, the last with the 8 columns past 992)
DEEP = """model n(x: [256, 28, 28]) {
    k: conv2d(64, 1) -> relu
    s: conv2d(72, 3, stride=2, padding=1) -> relu
    t: conv2d(320, 1) -> relu
    w: conv2d(320, 1) -> relu
    y: conv2d(40, 3, stride=2, padding=1) -> relu
    z: conv2d(40, 3, padding=1)
    v: conv2d(16, 1, stride=2) -> relu6
    u: conv2d(32, 1) -> relu
    flatten
    fc: dense(1000) -> relu
}
"""
# nnc_conv_rows: a strided stem of 40 channels (a last block of 8 on AVX-512) in bands of 13 rows, dilated
# layers of 16 channels in bands of 6 and of 8 (AVX-512: tiles of two vectors) in bands of 7; rows 47
# pixels wide (a last vector of 15 or 7); a band of fewer than four tiles a thread stays on one
ROWS = """model r(x: [3, 200, 94]) {
    s: conv2d(40, 3, stride=2, padding=1) -> relu6
    m: conv2d(24, 1) -> relu
    t: conv2d(16, 3, padding=2, dilation=2) -> relu
    u: conv2d(8, 3, padding=2, dilation=2) -> relu
    v: conv2d(64, 1) -> relu
}
"""
SOURCES = {"m": (MODEL, (1, 16, 56, 56)), "n": (DEEP, (1, 256, 28, 28)), "r": (ROWS, (1, 3, 200, 94))}
BUILDS = {"native": ["-O2", "-march=native"], "avx2": ["-O2", "-mavx2", "-mfma"]}


def _openmp_works(tmp: Path) -> bool:
    src = tmp / "omp_probe.c"
    src.write_text("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
    return subprocess.run([cc(), "-fopenmp", str(src), "-o", str(tmp / "omp_probe")], capture_output=True).returncode == 0


def test_the_model_takes_every_kernel_with_a_parallel_loop():
    plan = compile_plan(MODEL, target="c", render=False)
    node = {n.label: n for n in plan.graph.nodes}
    kind = {k: c_gen._conv_kind(n, plan.graph) for k, n in node.items() if n.op.name.endswith("conv2d")}
    assert kind["stem"] == "winograd4" and kind["c"] == kind["e"] == "winograd"
    assert kind["wide"] == "gemm" and kind["dw"] == "depthwise"
    assert node["dwx"].pre is not None and node["dwx"].pre.label == "x1"          # a fused expansion
    bcast = {k: c_gen.direct_plan(node[k], plan.graph) for k in "abdfgpqh"}
    assert all(v is not None and v[0] == "bcast" for v in bcast.values())
    assert bcast["a"][1] == bcast["b"][1] == 32                     # one depth block: no partial sums
    assert bcast["d"][1] < 96 and bcast["g"][1] < 64                # depth blocks: partial sums (14x14 in the
    assert bcast["p"][1] < 64 and bcast["q"][1] < 320               # scratch, 7x7 on the stack), in place too
    plan = compile_plan(DEEP, target="c", render=False)
    node = {n.label: n for n in plan.graph.nodes}
    assert c_gen._conv_kind(node["k"], plan.graph) == c_gen._conv_kind(node["t"], plan.graph) == "gemm"
    deep = {k: c_gen.direct_plan(node[k], plan.graph) for k in "swyz"}
    assert all(v is not None and v[0] == "bcast" and v[1] < node[k].attrs["in_channels"] for k, v in deep.items())
    assert c_gen._bcast_in_place(node["w"]) and deep["y"][2] < 7 == deep["z"][2]      # in place; two bands
    assert c_gen.direct_plan(node["v"], plan.graph) == ("bcast", 40, 4)                # one block, 3 tiles
    assert c_gen.direct_plan(node["u"], plan.graph) == ("bcast", 16, 4) and c_gen._bcast_in_place(node["u"])
    plan = compile_plan(ROWS, target="c", render=False)
    node = {n.label: n for n in plan.graph.nodes}
    assert c_gen.direct_plan(node["s"], plan.graph) == ("rows", 3, 13)
    assert c_gen.direct_plan(node["t"], plan.graph) == ("rows", 24, 6)
    assert c_gen.direct_plan(node["u"], plan.graph) == ("rows", 16, 7)


@pytest.mark.slow
@pytest.mark.parametrize("model", list(SOURCES))
@pytest.mark.parametrize("build", list(BUILDS))
def test_threads_give_bitwise_the_one_thread_result(build, model, tmp_path):
    if not _host_runs(build):
        pytest.skip(f"this machine does not run the {build} build")
    if not _openmp_works(tmp_path):
        pytest.skip("the C compiler has no OpenMP")
    source, shape = SOURCES[model]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    single = build_harness(model, tmp_path / "one", [*BUILDS[build]], source=source)
    want = call(single, "forward", x, tmp_path / "one")
    assert np.isfinite(want).all()
    # every parallel loop however small (NNC_PAR_WORK=0: the models' small layers take them too), and the
    # default, where loops of little work stay on one thread
    for work in ("0", None):
        flags = [*BUILDS[build], "-fopenmp", *([f"-DNNC_PAR_WORK={work}"] if work else [])]
        folder = tmp_path / f"omp{work or ''}"
        threaded = build_harness(model, folder, flags, source=source)
        inp, out = folder / "in.bin", folder / "out.bin"
        inp.write_bytes(x.tobytes())
        # a race shows only when the threads overlap: both wait policies (a passive thread may wake late)
        for policy in ("active", "passive"):
            for threads in (2, 4):
                env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": policy}
                for _ in range(3):
                    proc = subprocess.run([str(threaded), "forward", str(inp), str(out)], env=env,
                                          capture_output=True)
                    assert proc.returncode == 0, (work, policy, threads, proc.returncode, proc.stderr[-300:])
                    np.testing.assert_array_equal(np.frombuffer(out.read_bytes(), np.float32), want,
                                                  err_msg=f"NNC_PAR_WORK {work}, {policy}, {threads} threads")


def test_a_threads_own_ring_holds_what_the_plan_allows():
    # nnc_dwc_run's per-thread ring (NNC_DWC_OWN floats) must hold any scratch the plan gives it
    import re
    header = (Path(c_gen.__file__).resolve().parents[2] / "runtime" / "c" / "nnc_kernels.h").read_text()
    own = int(re.search(r"#define NNC_DWC_OWN (\d+)", header).group(1))
    assert own >= c_gen.DWC_SCRATCH
