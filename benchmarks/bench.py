"""nnc's execution plans against PyTorch eager, side by side.

    python benchmarks/bench.py                    # NumPy plan vs torch, batch 1 and 16
    python benchmarks/bench.py --c                # also the C plan, single-threaded, batch 1
    python benchmarks/bench.py --stream --no-numpy   # only streaming: GRU-40 and WaveNet, C vs torch
    python benchmarks/bench.py --models lenet mlp --threads 1

For each sample it prints the median latency of nnc and of PyTorch eager
(same weights, same thread count), their ratio (nnc / torch: below 1 means
nnc is faster) and nnc's arena bytes. Needs PyTorch (the oracle) installed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

MODELS = ["mlp", "lenet", "mobilenetv2", "resnet18"]


def median_time(fn, *, min_time: float = 0.5, max_runs: int = 2000) -> float:
    fn()
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and (time.perf_counter() - start < min_time or len(times) < 5):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fmt(seconds: float) -> str:
    if seconds < 1e-5:
        return f"{seconds * 1e6:8.3f} us"
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} us"
    return f"{seconds * 1e3:8.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--c", action="store_true", help="also time the C plan (single thread, batch 1)")
    ap.add_argument("--stream", action="store_true", help="also time streaming: GRU-40 and WaveNet, C vs torch")
    ap.add_argument("--no-numpy", action="store_true", help="skip the NumPy table")
    args = ap.parse_args()

    import torch
    import nnc
    from torch_twins import TWINS, seeded_state_dict

    torch.set_num_threads(args.threads)
    print(f"threads: {args.threads} (torch {torch.__version__}, numpy {np.__version__})")
    if args.no_numpy:
        args.models, models = [], args.models
    else:
        models = args.models
    header = f"{'model':<12} {'batch':>5}  {'nnc numpy':>11}  {'torch eager':>11}  {'ratio':>6}  {'arena bytes':>12}"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for name in args.models:
        factory, shapes = TWINS[name]
        twin = factory().eval()
        state = seeded_state_dict({k: tuple(v.shape) for k, v in twin.state_dict().items()}, 0)
        twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
        for batch in args.batches:
            x = rng.standard_normal((batch, *shapes["x"])).astype(np.float32)
            model = nnc.build(ROOT / "samples" / f"{name}.nn", batch=batch)
            model.load_weights({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")})
            tx = torch.from_numpy(x)
            t_nnc = median_time(lambda: model(x))
            with torch.inference_mode():
                t_torch = median_time(lambda: twin(tx))
            arena = batch * type(model).ARENA_BYTES
            print(f"{name:<12} {batch:>5}  {fmt(t_nnc)}  {fmt(t_torch)}  {t_nnc / t_torch:6.2f}  {arena:>12,}")
    if args.c:
        run_c(models)
    if args.stream:
        run_stream(["gru", "wavenet"])


def c_harness(model: str | Path, state: dict, tmp: Path, *, stream: bool = False, dims=None) -> Path:
    """The C plan of `model` with `state` embedded, built with harness.c into
    an executable that times it from C."""
    from nnc.compiler.build import compile_plan, write_plan
    from nnc.compiler.codegen import c as c_gen
    from nnc.compiler.codegen.cbuild import find_compiler
    plan = compile_plan(model, target="c", stream=stream, dims=dims, render=False)
    files = c_gen.generate(plan.graph, plan.layout, name=plan.name, state=state)
    for fname, text in files.items():
        (tmp / fname).write_text(text)
    exe = (tmp / f"{plan.name}_bench").resolve()
    flags = ["-O3", "-march=native", f"-DPREFIX={plan.name}", f"-DUPPER={plan.name.upper()}",
             f'-DHEADER="{plan.name}.h"', *(["-DSTREAMING"] if stream else [])]
    subprocess.run([find_compiler(), *flags, "-I", str(tmp), str(ROOT / "benchmarks" / "harness.c"),
                    str(tmp / f"{plan.name}.c"), "-o", str(exe), "-lm"], check=True)
    return exe


def c_time(exe: Path, *args: str) -> float:
    """Median seconds of one call, measured in C by harness.c (one thread)."""
    out = subprocess.run([str(exe), *args], check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    return float(out) * 1e-9


def run_c(models: list[str]) -> None:
    import torch
    import nnc
    from torch_twins import TWINS, seeded_state_dict

    torch.set_num_threads(1)
    print()
    print("C plan against PyTorch eager, one thread, batch 1")
    header = f"{'model':<12} {'nnc C':>11}  {'C via ctypes':>12}  {'torch eager':>11}  {'speed-up':>8}"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for name in models:
        factory, shapes = TWINS[name]
        twin = factory().eval()
        state = seeded_state_dict({k: tuple(v.shape) for k, v in twin.state_dict().items()}, 0)
        twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        x = rng.standard_normal((1, *shapes["x"])).astype(np.float32)
        path = ROOT / "samples" / f"{name}.nn"
        with tempfile.TemporaryDirectory() as tmp:
            t_c = c_time(c_harness(path, state, Path(tmp)), "forward")
        model = nnc.build(path, target="c", weights=state)
        t_py = median_time(lambda: model(x))
        tx = torch.from_numpy(x)
        with torch.inference_mode():
            t_torch = median_time(lambda: twin(tx))
        print(f"{name:<12} {fmt(t_c)}  {fmt(t_py):>12}  {fmt(t_torch)}  {t_torch / t_c:7.1f}x")


def run_stream(models: list[str]) -> None:
    """Per-sample streaming latency: nnc's C step and stream (chunk 64)
    against PyTorch eager calling the model one time step at a time."""
    import torch
    from torch_twins import TWINS, seeded_state_dict

    torch.set_num_threads(1)
    print()
    print("streaming, one thread, time per sample")
    header = (f"{'model':<12} {'C step':>11}  {'C stream 64':>11}  {'torch step':>11}  {'step speed-up':>13}  "
              f"{'x real time @48k':>16}")
    print(header)
    print("-" * len(header))
    for name in models:
        factory, shapes = TWINS[name]
        twin = factory().eval()
        state = seeded_state_dict({k: tuple(v.shape) for k, v in twin.state_dict().items()}, 0)
        twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
        path = ROOT / "samples" / f"{name}.nn"
        with tempfile.TemporaryDirectory() as tmp:
            exe = c_harness(path, state, Path(tmp), stream=True, dims={"T": 64})
            t_step = c_time(exe, "step")
            t_chunk = c_time(exe, "stream", "64") / 64
        t_torch = torch_step_time(name, twin)
        print(f"{name:<12} {fmt(t_step)}  {fmt(t_chunk)}  {fmt(t_torch)}  {t_torch / t_step:12.0f}x  "
              f"{1 / 48_000 / t_step:15.0f}x")


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
            return median_time(step)
        window = torch.zeros(1, 1, 17)          # WaveNet's receptive field
        return median_time(lambda: twin(window)[..., -1])


if __name__ == "__main__":
    main()
