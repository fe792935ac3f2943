"""The C plan's optional threads: built with -fopenmp and run on two threads,
every parallel loop (Winograd's multiplies, nnc_conv_bcast's blocks of
output channels with and without their own partial sums, the in-place 1x1
matrix multiply's tiles, the depthwise channels, a fused expansion's tiles
on targets without the AVX-512 ring) gives bitwise the result of the build
without OpenMP, on the native build and on an AVX2 one."""

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


@pytest.mark.slow
@pytest.mark.parametrize("build", list(BUILDS))
def test_two_threads_give_bitwise_the_one_thread_result(build, tmp_path):
    if not _host_runs(build):
        pytest.skip(f"this machine does not run the {build} build")
    if not _openmp_works(tmp_path):
        pytest.skip("the C compiler has no OpenMP")
    x = np.random.default_rng(0).standard_normal((1, 16, 56, 56)).astype(np.float32)
    single = build_harness("m", tmp_path / "one", [*BUILDS[build]], source=MODEL)
    want = call(single, "forward", x, tmp_path / "one")
    threaded = build_harness("m", tmp_path / "omp", [*BUILDS[build], "-fopenmp"], source=MODEL)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "passive"}
    (tmp_path / "omp" / "in.bin").write_bytes(x.tobytes())
    for _ in range(3):
        subprocess.run([str(threaded), "forward", str(tmp_path / "omp" / "in.bin"), str(tmp_path / "omp" / "out.bin")],
                       check=True, env=env, capture_output=True)
        got = np.frombuffer((tmp_path / "omp" / "out.bin").read_bytes(), np.float32)
        assert got.shape == want.shape and np.isfinite(want).all()
        np.testing.assert_array_equal(got, want)
