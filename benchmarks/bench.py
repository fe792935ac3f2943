"""nnc's execution plans against the peers a user would pick instead, side by side.

    python benchmarks/bench.py                        # every sample, batch 1 and 16, 1 thread and all
    python benchmarks/bench.py --models lenet --batches 1 --threads 1
    python benchmarks/bench.py --stream-only          # streaming: GRU-40 and WaveNet per sample
    python benchmarks/bench.py --no-numpy --no-ort    # skip peers (heavy or missing ones)

Peers, one column each: nnc's C plan (timed from C by harness.c, built with
`-O3 -march=native`; with `-fopenmp` for more than one thread when the
compiler has it), nnc's NumPy plan, PyTorch eager and onnxruntime (the
PyTorch twin of tests/torch_twins.py exported with `torch.onnx.export`, so
the same weights). A peer that is not installed is skipped with a note
(onnx/onnxruntime and torch are benchmark-only extras). For each model,
batch and thread count the peers run interleaved, `--rounds` times, a short
block each; the table shows the median over rounds of each block's median
latency, and the ratios C / onnxruntime, C / torch, NumPy / torch (below 1:
nnc is faster).

The streaming table times per sample: the C plan's `step` (native build and
a portable `-O2` build without -march, as plugins ship), `stream` at chunk
32, 64 and 512 (per sample), and PyTorch eager one step per call. RTNeural
is not installed here: the issue's figures for its compile-time GRU-40 are
printed for reference.

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
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

MODELS = ["mlp", "lenet", "mobilenetv2", "resnet18"]
STREAM_MODELS = ["gru", "wavenet"]
RTNEURAL_GRU40_NS = {"native": 139.0, "portable": 466.0}     # issue 12, same machine type
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

def twin_and_state(name: str):
    import torch
    from torch_twins import TWINS, seeded_state_dict
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
              flags: tuple[str, ...] = NATIVE, tag: str = "") -> Path:
    """The C plan of `model` with `state` embedded, built with harness.c into
    an executable that times it from C."""
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
            *(["-DSTREAMING"] if stream else [])]
    subprocess.run([find_compiler(), "-std=c99", *flags, *defs, "-I", str(folder),
                    str(ROOT / "benchmarks" / "harness.c"), str(folder / f"{plan.name}.c"), "-o", str(exe), "-lm"],
                   check=True)
    return exe


def c_time(exe: Path, *args: str, threads: int = 1, blocks: int = 9) -> float:
    """Median seconds of one call, measured in C by harness.c."""
    out = subprocess.run([str(exe), *args, str(blocks)], check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)}).stdout
    return float(out) * 1e-9


def onnx_session(twin, shape: tuple[int, ...], tmp: Path, threads: int):
    """An onnxruntime session of the exported twin (dynamic batch), or None
    with the reason when onnx/onnxruntime are missing or export fails."""
    try:
        import onnxruntime as ort
        import torch
    except ImportError as e:
        return None, f"onnxruntime column skipped: {e}"
    path = tmp / f"{type(twin).__name__}.onnx"
    if not path.exists():
        x = torch.zeros((1, *shape))
        try:
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
    header = (f"{'model':<12} {'batch':>5} {'thr':>3}  {'nnc C':>10}  {'nnc numpy':>10}  {'torch':>10}  "
              f"{'onnxrt':>10}  {'C/ort':>6}  {'C/torch':>7}  {'np/torch':>8}  {'arena (C)':>11}")
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for name in args.models:
        twin, state, shapes = twin_and_state(name)
        path = ROOT / "samples" / f"{name}.nn"
        exes: dict[int, Path] = {}
        if not args.no_c:
            exes[1] = c_harness(path, state, tmp)
            if omp:
                exes[2] = c_harness(path, state, tmp, flags=(*NATIVE, "-fopenmp"), tag="-omp")
        arena = nnc.build(path, target="numpy").ARENA_BYTES if args.no_c else None
        if not args.no_c:
            from nnc.compiler.build import compile_plan
            arena = compile_plan(path, target="c", render=False).layout.plan.arena_bytes
        for batch in args.batches:
            x = rng.standard_normal((batch, *shapes["x"])).astype(np.float32)
            tx = torch.from_numpy(x)
            model = None
            if not args.no_numpy:
                model = nnc.build(path, batch=batch)
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
                    sess, why = onnx_session(twin, shapes["x"], tmp, threads)
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


def run_stream(args, tmp: Path) -> None:
    """Per-sample streaming latency, one thread."""
    import torch
    torch.set_num_threads(1)
    chunks = [32, 64, 512]
    header = (f"{'model':<10} {'C step':>10}  {'C step -O2':>10}  "
              + "  ".join(f"{'stream ' + str(n):>10}" for n in chunks)
              + f"  {'torch step':>10}  {'RTNeural':>10}  {'RTN -O2':>10}")
    print(header)
    print("-" * len(header))
    for name in args.stream_models:
        twin, state, _ = twin_and_state(name)
        path = ROOT / "samples" / f"{name}.nn"
        native = c_harness(path, state, tmp, stream=True, dims={"T": max(chunks)})
        portable = c_harness(path, state, tmp, stream=True, dims={"T": max(chunks)}, flags=PORTABLE, tag="-O2")
        runners: dict[str, Callable[[], float]] = {
            "step": lambda: c_time(native, "step"),
            "step_o2": lambda: c_time(portable, "step"),
            **{f"s{n}": (lambda n=n: c_time(native, "stream", str(n)) / n) for n in chunks},
            "torch": lambda: torch_step_time(name, twin),
        }
        got = interleaved(runners, args.rounds)
        rtn = (RTNEURAL_GRU40_NS["native"] * 1e-9, RTNEURAL_GRU40_NS["portable"] * 1e-9) if name == "gru" else (None,) * 2
        print(f"{name:<10} {fmt(got['step'])}  {fmt(got['step_o2'])}  "
              + "  ".join(fmt(got[f's{n}']) for n in chunks)
              + f"  {fmt(got['torch'])}  {fmt(rtn[0])}  {fmt(rtn[1])}", flush=True)
    print("note: RTNeural figures are the issue's (GRU-40, same machine type), not measured here")


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
