"""nnc's execution plans against the peers a user would pick instead, side by side.

    python benchmarks/bench.py                        # every sample, batch 1 and 16, 1 thread and all
    python benchmarks/bench.py --models lenet --batches 1 --threads 1
    python benchmarks/bench.py --stream-only          # streaming: GRU-40 and WaveNet per sample
    python benchmarks/bench.py --no-numpy --no-ort    # skip peers (heavy or missing ones)
    python benchmarks/bench.py --all-samples --no-c --no-ort --threads 1 --batches 1   # NumPy vs torch, every sample

Peers, one column each: nnc's C plan (timed from C by harness.c, built with
`-O3 -march=native`; with `-fopenmp` for more than one thread when the
compiler has it, run with the OpenMP runtime's own wait policy unless
OMP_WAIT_POLICY is set), nnc's NumPy plan,
PyTorch eager and onnxruntime (the PyTorch twin of tests/torch_twins.py exported with `torch.onnx.export`, so
the same weights). A peer that is not installed is skipped with a note
(onnx/onnxruntime and torch are benchmark-only extras). For each model,
batch and thread count the peers run interleaved, `--rounds` times, a short
block each; the table shows the median over rounds of each block's median
latency, and the ratios C / onnxruntime, C / torch, NumPy / torch (below 1:
nnc is faster).

`--all-samples` runs every sample of samples/ (the default list is the four
the issue names): each with its PyTorch twin from tests/torch_twins.py and
the named dimensions of `SAMPLE_DIMS` (T = 64); samples with integer inputs
(transformer, charlm) get random token ids; the twins outside `TWINS` keep
PyTorch's own seeded initialisation, loaded into nnc's plan.

The streaming table times per sample, one row per build of the C plan:
`-O3 -march=native` and a portable `-O2` (no -march: SSE2 on x86-64, the
way plugins ship for unknown CPUs). Columns: `step`, `stream` at chunks of
32, 64 and 512 (per sample), RTNeural's compile-time GRU-40 built with the
same flags and the ratio C step / RTNeural, and PyTorch eager one step per
call. RTNeural is measured side by side when RTNEURAL_DIR names an RTNeural
checkout (the folder holding RTNeural/gru/gru_eigen.h; Eigen from
RTNEURAL_DIR/modules/Eigen, EIGEN_DIR or /usr/include/eigen3):
benchmarks/rtneural_gru40.cpp is built against it with the same weights,
its outputs checked against the PyTorch twin (1e-4) before it is timed.
Without it the issue's figures for RTNeural are printed, marked `*`.

Needs PyTorch (the oracle that holds the weights) and a C compiler for the
C columns.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

MODELS = ["mlp", "lenet", "mobilenetv2", "resnet18"]
SAMPLE_DIMS = {"wavenet": {"T": 64}, "gru": {"T": 64}, "lstm": {"T": 64}, "glu_tcn": {"T": 64},
               "bilstm_tagger": {"T": 64}}
STREAM_MODELS = ["gru", "wavenet"]
RTNEURAL_GRU40_NS = {"native": 139.0, "portable": 466.0}     # issue 12, same machine type
RTNEURAL_KEYS = ["rec.weight_ih_l0", "rec.weight_hh_l0", "rec.bias_ih_l0", "rec.bias_hh_l0", "lin.weight",
                 "lin.bias"]                               # rtneural_gru40.cpp's weights file, in order
NATIVE = ("-O3", "-march=native")
PORTABLE = ("-O2",)


# ------------------------------------------------------------------ timing

def block_time(fn: Callable[[], object], budget: float = 0.12) -> float:
    """Median seconds of one call over a block of about `budget` seconds."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while (time.perf_counter() - start < budget and len(times) < 5000) or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(runners: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Each runner gives one block's median; run them in turn `rounds` times
    and keep the median per runner."""
    got: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, r in runners.items():
            got[k].append(r())
    return {k: statistics.median(v) for k, v in got.items()}


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return f"{'-':>10}"
    if seconds < 1e-5:
        return f"{seconds * 1e9:7.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:7.1f} us"
    return f"{seconds * 1e3:7.2f} ms"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:6.2f}" if a is not None and b is not None else f"{'-':>6}"


# ------------------------------------------------------------------ the peers

def all_samples() -> list[str]:
    return sorted(p.stem for p in (ROOT / "samples").glob("*.nn"))


def twin_and_state(name: str):
    """(the PyTorch twin in eval mode, its weights for nnc, input shapes);
    an integer input's shape is a (shape, vocabulary) pair."""
    import torch
    from torch_twins import INTEGER_TWINS, TWINS, V2_TWINS, seeded_state_dict
    others = {"transformer": (INTEGER_TWINS["transformer"], {"x": ((64,), 1000)}),
              "charlm": (INTEGER_TWINS["charlm"], {"x": ((64,), 48)}),
              "glu_tcn": (V2_TWINS["glu_tcn"], {"x": (1, 64)}),
              "bilstm_tagger": (V2_TWINS["bilstm_tagger"], {"x": (64, 32)})}
    if name in others:
        factory, shapes = others[name]
        torch.manual_seed(0)
        twin = factory().eval()
        return twin, {k: v.detach().numpy().copy() for k, v in twin.state_dict().items()}, shapes
    factory, shapes = TWINS[name]
    twin = factory().eval()
    state = seeded_state_dict({k: tuple(v.shape) for k, v in twin.state_dict().items()}, 0)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return twin, state, shapes


def openmp_works() -> bool:
    from nnc.compiler.codegen.cbuild import find_compiler
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "p.c")
        src.write_text("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        proc = subprocess.run([find_compiler(), "-fopenmp", str(src), "-o", str(Path(tmp, "p"))],
                              capture_output=True)
        return proc.returncode == 0


def c_harness(model: str | Path, state: dict, tmp: Path, *, stream: bool = False, dims=None,
              flags: tuple[str, ...] = NATIVE, tag: str = "", vocab: int | None = None) -> Path:
    """The C plan of `model` with `state` embedded, built with harness.c into
    an executable that times it from C; `vocab`: the input is token ids below it."""
    from nnc.compiler.build import compile_plan
    from nnc.compiler.codegen import c as c_gen
    from nnc.compiler.codegen.cbuild import find_compiler
    plan = compile_plan(model, target="c", stream=stream, dims=dims, render=False)
    folder = tmp / f"{plan.name}{'-stream' if stream else ''}"
    folder.mkdir(exist_ok=True)
    if not (folder / f"{plan.name}.c").exists():
        for fname, text in c_gen.generate(plan.graph, plan.layout, name=plan.name, state=state).items():
            (folder / fname).write_text(text)
    exe = (folder / f"{plan.name}_bench{tag}").resolve()
    defs = [f"-DPREFIX={plan.name}", f"-DUPPER={plan.name.upper()}", f'-DHEADER="{plan.name}.h"',
            *(["-DSTREAMING"] if stream else []), *([f"-DVOCAB={vocab}"] if vocab else [])]
    subprocess.run([find_compiler(), "-std=c99", *flags, *defs, "-I", str(folder),
                    str(ROOT / "benchmarks" / "harness.c"), str(folder / f"{plan.name}.c"), "-o", str(exe), "-lm"],
                   check=True)
    return exe


def c_time(exe: Path, *args: str, threads: int = 1, blocks: int = 9) -> float:
    """Median seconds of one call, measured in C by harness.c. Between
    parallel loops the threads wait as the OpenMP runtime does by default
    (GOMP: spin a while, then sleep), or as OMP_WAIT_POLICY says: what a
    user gets. Which policy is faster depended on the day on this machine's
    virtual cores (docs/choices.md, OpenMP)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([str(exe), *args, str(blocks)], check=True, capture_output=True, text=True, env=env).stdout
    return float(out) * 1e-9


def onnx_session(twin, example: np.ndarray, tmp: Path, threads: int):
    """An onnxruntime session of the exported twin (dynamic batch), or None
    with the reason when onnx/onnxruntime are missing or export fails."""
    try:
        import onnxruntime as ort
        import torch
    except ImportError as e:
        return None, f"onnxruntime column skipped: {e}"
    path = tmp / f"{type(twin).__name__}.onnx"
    if not path.exists():
        x = torch.from_numpy(np.zeros_like(example[:1]))
        try:
            with warnings.catch_warnings():     # the TorchScript exporter's deprecation notice, on every model
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(twin, (x,), str(path), input_names=["x"], output_names=["y"],
                                  dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
        except Exception as e:                        # noqa: BLE001 (any exporter failure skips the peer)
            return None, f"onnx export failed: {type(e).__name__}: {str(e)[:200]}"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]), None


def blas_threads(n: int) -> bool:
    """Set NumPy's OpenBLAS thread count through its C API (no extra
    package); False when no such library is loaded."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    libs = sorted({line.split()[-1] for line in maps.splitlines() if "openblas" in line.lower() and ".so" in line})
    for lib in libs:
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for fn in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads"):
            if hasattr(handle, fn):
                getattr(handle, fn)(ctypes.c_int(n))
                return True
    return False


# ------------------------------------------------------------------ the tables

def run_models(args, tmp: Path) -> None:
    import torch
    import nnc
    notes: list[str] = []
    threads_list = sorted(set(args.threads))
    omp = openmp_works() if max(threads_list) > 1 and not args.no_c else False
    if max(threads_list) > 1 and not args.no_c and not omp:
        notes.append("the C compiler has no OpenMP: C runs one thread in every row")
    if not args.no_numpy and max(threads_list) > 1 and not blas_threads(1):
        notes.append("NumPy's BLAS thread count could not be set: the NumPy column uses its default")
    arena_of = "arena (C)" if not args.no_c else "arena (np)"
    header = (f"{'model':<12} {'batch':>5} {'thr':>3}  {'nnc C':>10}  {'nnc numpy':>10}  {'torch':>10}  "
              f"{'onnxrt':>10}  {'C/ort':>6}  {'C/torch':>7}  {'np/torch':>8}  {arena_of:>11}")
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for name in args.models:
        twin, state, shapes = twin_and_state(name)
        path = ROOT / "samples" / f"{name}.nn"
        dims = SAMPLE_DIMS.get(name)
        exes: dict[int, Path] = {}
        vocab = shapes["x"][1] if isinstance(shapes["x"][0], tuple) else None
        if not args.no_c:
            exes[1] = c_harness(path, state, tmp, dims=dims, vocab=vocab)
            if omp:
                exes[2] = c_harness(path, state, tmp, dims=dims, flags=(*NATIVE, "-fopenmp"), tag="-omp", vocab=vocab)
        arena = nnc.build(path, target="numpy", dims=dims).ARENA_BYTES if args.no_c else None
        if not args.no_c:
            from nnc.compiler.build import compile_plan
            arena = compile_plan(path, target="c", render=False, dims=dims).layout.plan.arena_bytes
        for batch in args.batches:
            if isinstance(shapes["x"][0], tuple):                  # token ids: (shape, vocabulary)
                x = rng.integers(0, shapes["x"][1], size=(batch, *shapes["x"][0]))
            else:
                x = rng.standard_normal((batch, *shapes["x"])).astype(np.float32)
            tx = torch.from_numpy(x)
            model = None
            if not args.no_numpy:
                model = nnc.build(path, batch=batch, dims=dims)
                model.load_weights(state)
            for threads in threads_list:
                torch.set_num_threads(threads)
                runners: dict[str, Callable[[], float]] = {}
                if exes:
                    exe = exes[2] if threads > 1 and 2 in exes else exes[1]
                    runners["c"] = lambda exe=exe, t=threads: c_time(exe, "forward", str(batch), threads=t)
                if model is not None:
                    blas_threads(threads)
                    runners["numpy"] = lambda: block_time(lambda: model(x))
                if not args.no_torch:
                    def t_torch():
                        with torch.inference_mode():
                            return block_time(lambda: twin(tx))
                    runners["torch"] = t_torch
                if not args.no_ort:
                    sess, why = onnx_session(twin, x, tmp, threads)
                    if sess is None:
                        if why not in notes:
                            notes.append(why)
                    else:
                        runners["ort"] = lambda sess=sess: block_time(lambda: sess.run(None, {"x": x}))
                got = interleaved(runners, args.rounds)
                c, npy, tt, ort = (got.get(k) for k in ("c", "numpy", "torch", "ort"))
                print(f"{name:<12} {batch:>5} {threads:>3}  {fmt(c)}  {fmt(npy)}  {fmt(tt)}  {fmt(ort)}  "
                      f"{ratio(c, ort)}  {ratio(c, tt):>7}  {ratio(npy, tt):>8}  {arena or 0:>11,}", flush=True)
    blas_threads(os.cpu_count() or 1)
    for note in notes:
        print(f"note: {note}")


def rtneural_harness(state: dict, twin, tmp: Path) -> tuple[dict[str, Path], str | None]:
    """RTNeural's GRU-40 (benchmarks/rtneural_gru40.cpp) built for both
    builds against $RTNEURAL_DIR, with `state` in its weights file: ({build:
    executable}, None), or ({}, why not) when it is not there, does not
    build or does not agree with the PyTorch twin."""
    import shutil
    import torch
    folder = os.environ.get("RTNEURAL_DIR")
    if not folder:
        return {}, "RTNEURAL_DIR is not set"
    if not Path(folder, "RTNeural", "gru", "gru_eigen.h").is_file():
        return {}, f"RTNEURAL_DIR={folder} holds no RTNeural/gru/gru_eigen.h"
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not cxx:
        return {}, "no C++ compiler"
    eigen = [d for d in (os.environ.get("EIGEN_DIR"), str(Path(folder, "modules", "Eigen")), "/usr/include/eigen3")
             if d and Path(d, "Eigen", "Dense").is_file()]
    if not eigen:
        return {}, "no Eigen (set EIGEN_DIR)"
    weights = tmp / "rtneural_gru40.bin"
    np.concatenate([np.asarray(state[k], "<f4").reshape(-1) for k in RTNEURAL_KEYS]).tofile(weights)
    n = 300
    x = np.sin(0.01 * np.arange(n)).astype(np.float32)
    with torch.no_grad():
        want = twin(torch.from_numpy(x).reshape(1, n, 1)).numpy().reshape(-1)
    exes = {}
    for build, flags in (("native", NATIVE), ("portable", PORTABLE)):
        exe = tmp / f"rtneural_gru40_{build}"
        proc = subprocess.run([cxx, "-std=c++17", *flags, "-DNDEBUG", "-I", folder, "-I", eigen[0],
                               str(ROOT / "benchmarks" / "rtneural_gru40.cpp"), "-o", str(exe)],
                              capture_output=True, text=True)
        if proc.returncode:
            return {}, f"rtneural_gru40.cpp did not build: {proc.stderr.strip().splitlines()[:1]}"
        out = subprocess.run([str(exe), str(weights), "check", str(n)], capture_output=True, text=True, check=True)
        got = np.array(out.stdout.split(), np.float32)
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-5):
            return {}, "RTNeural's GRU-40 does not agree with the PyTorch twin: not timed"
        exes[build] = exe
    return exes, None


def run_stream(args, tmp: Path) -> None:
    """Per-sample streaming latency, one thread: a row per build, every
    column of a model's rows run interleaved."""
    import torch
    torch.set_num_threads(1)
    chunks = [32, 64, 512]
    header = (f"{'model':<9} {'build':<8} {'C step':>10}  "
              + "  ".join(f"{'stream ' + str(n):>10}" for n in chunks)
              + f"  {'RTNeural':>10}  {'C/RTN':>6}  {'torch step':>10}")
    print(header)
    print("-" * len(header))
    notes = []
    for name in args.stream_models:
        twin, state, _ = twin_and_state(name)
        path = ROOT / "samples" / f"{name}.nn"
        exes = {"native": c_harness(path, state, tmp, stream=True, dims={"T": max(chunks)}),
                "portable": c_harness(path, state, tmp, stream=True, dims={"T": max(chunks)}, flags=PORTABLE,
                                      tag="-O2")}
        rtn: dict[str, Path] = {}
        if name == "gru":
            rtn, why = rtneural_harness(state, twin, tmp)
            if why:
                notes.append(f"RTNeural not measured ({why}): `*` marks the issue's figures")
        runners: dict[str, Callable[[], float]] = {}
        for build, exe in exes.items():
            runners[f"{build} step"] = lambda exe=exe: c_time(exe, "step")
            for n in chunks:
                runners[f"{build} s{n}"] = lambda exe=exe, n=n: c_time(exe, "stream", str(n)) / n
            if build in rtn:
                runners[f"{build} rtn"] = lambda exe=rtn[build]: float(subprocess.run(
                    [str(exe), str(tmp / "rtneural_gru40.bin"), "9"], check=True, capture_output=True,
                    text=True).stdout) * 1e-9
        runners["torch"] = lambda: torch_step_time(name, twin)
        got = interleaved(runners, args.rounds)
        for build in exes:
            r = got.get(f"{build} rtn")
            mark = " "
            if r is None and name == "gru" and not rtn:
                r, mark = RTNEURAL_GRU40_NS[build] * 1e-9, "*"
            print(f"{name:<9} {build:<8} {fmt(got[f'{build} step'])}  "
                  + "  ".join(fmt(got[f'{build} s{n}']) for n in chunks)
                  + f" {fmt(r)}{mark} {ratio(got[f'{build} step'], r)}  "
                  + (fmt(got["torch"]) if build == "native" else f"{'':>10}"), flush=True)
    for note in notes:
        print(f"note: {note}")


def torch_step_time(name: str, twin) -> float:
    """PyTorch eager, one time step per call: a GRU/LSTM layer carrying its
    state, or (for convolutions) the model over its receptive field."""
    import torch
    with torch.inference_mode():
        if name in ("gru", "lstm"):
            rec, lin = twin.rec, twin.lin
            frame = torch.zeros(1, 1, 1)
            state = [None]

            def step():
                out, state[0] = rec(frame, state[0])
                return lin(out)
            return block_time(step)
        window = torch.zeros(1, 1, 17)          # WaveNet's receptive field
        return block_time(lambda: twin(window)[..., -1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--all-samples", action="store_true", help="every sample of samples/ (overrides --models)")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--threads", nargs="+", type=int, default=sorted({1, os.cpu_count() or 1}))
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per row (median over them)")
    ap.add_argument("--c", action="store_true", help=argparse.SUPPRESS)   # the C column is always on now
    ap.add_argument("--no-c", action="store_true")
    ap.add_argument("--no-numpy", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--stream", action="store_true", help="also the streaming table")
    ap.add_argument("--stream-only", action="store_true", help="only the streaming table")
    ap.add_argument("--stream-models", nargs="+", default=STREAM_MODELS)
    args = ap.parse_args()
    if args.all_samples:
        args.models = all_samples()
    import torch
    print(f"cpus: {os.cpu_count()}  torch {torch.__version__}  numpy {np.__version__}", end="")
    try:
        import onnxruntime
        print(f"  onnxruntime {onnxruntime.__version__}")
    except ImportError:
        print("  (no onnxruntime)")
    with tempfile.TemporaryDirectory(prefix="nnc-bench-") as tmp:
        if not args.stream_only and args.models:
            run_models(args, Path(tmp))
            print()
        if args.stream or args.stream_only:
            run_stream(args, Path(tmp))


if __name__ == "__main__":
    main()
