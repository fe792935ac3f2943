"""Training steps: nnc's NumPy training plan against PyTorch eager, time and memory side by side.

    python benchmarks/bench_train.py                      # speed (mlp, lenet, convbn) and memory (all five)
    python benchmarks/bench_train.py --models lenet --rounds 9
    python benchmarks/bench_train.py --no-speed           # the memory table only

Speed. One training step is `zero_grad`, forward, loss, backward and the
optimizer update (SGD, lr 0.01, momentum 0.9) on the same fixed batch, the
same initial weights (nnc's `state_dict` loaded into the PyTorch twin of
tests/torch_twins.py / tests/torch_train_twins.py) and the same thread
count: `torch.set_num_threads(N)`, and NumPy's BLAS limited to N threads
with threadpoolctl when it is installed, otherwise through the
OPENBLAS/OMP/MKL_NUM_THREADS environment variables, which this script sets
before NumPy is first imported (it is the main program), checked by
setting OpenBLAS's thread count through its C API as benchmarks/bench.py
does. The peers run interleaved, `--rounds` times a block of about 0.15 s
each; the table shows the median over rounds of each block's median step
time and the ratio nnc / torch (below 1: nnc is faster).

Memory. nnc: the plan's `arena_bytes` (`train_memory_report`: every
transient buffer of a step — activations kept for backward, gradients,
kernel scratch; weights and optimizer state are apart, as for PyTorch
below, and the caller's input is in neither). PyTorch: the peak of the bytes
that ATen's CPU allocator holds during one step above what it held before
the step, measured with `torch.profiler.profile(profile_memory=True)`: every
tensor allocation and free of the step is a `[memory]` event with its byte
count; sorted by time, their running sum peaks at the step's peak. The step
starts after `zero_grad()` (gradients None, as `set_to_none=True` leaves
them), after two warm-up steps (the momentum buffers exist), so the peak
counts the activations autograd saves, temporaries, the gradients and the
optimizer's temporaries, but not weights or optimizer state. What oneDNN or
OpenMP allocate outside ATen's allocator, and Python objects, are in
neither figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

_THREADS = "1"
for _i, _a in enumerate(sys.argv):          # the thread count must be known before NumPy loads its BLAS
    if _a == "--threads" and _i + 1 < len(sys.argv):
        _THREADS = sys.argv[_i + 1]
    elif _a.startswith("--threads="):
        _THREADS = _a.split("=", 1)[1]
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

SPEED = ["mlp", "lenet", "convbn"]
MEMORY = ["mlp", "lenet", "convbn", "mobilenetv2", "gru"]
# model -> (batch, dims, loss)
SETUP = {"mlp": (32, None, "cross_entropy"), "lenet": (32, None, "cross_entropy"),
         "convbn": (32, None, "cross_entropy"), "mobilenetv2": (8, None, "cross_entropy"),
         "gru": (8, {"T": 64}, "mse")}


def limit_blas(threads: int) -> str:
    """Limit NumPy's BLAS to `threads`; says how."""
    try:
        import threadpoolctl
        threadpoolctl.threadpool_limits(threads)
        return "threadpoolctl"
    except ImportError:
        from bench import blas_threads
        return "environment + OpenBLAS C API" if blas_threads(threads) else "environment"


def model_and_twin(name: str):
    """(model source or path, a fresh PyTorch twin, input shape without batch, classes)."""
    import torch_train_twins as TT
    from torch_twins import TWINS
    if name == "convbn":
        return TT.CONV_BN, TT.ConvBN(), (3, 12, 12), 5
    factory, inputs = TWINS[name]
    shape = tuple(64 if d == "T" else d for d in inputs["x"])
    classes = {"mlp": 10, "lenet": 10, "mobilenetv2": 1000, "gru": 1}[name]
    return ROOT / "samples" / f"{name}.nn", factory(), shape, classes


def data(name: str, batch: int, shape, classes: int, loss: str, out_shape=None):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    if loss == "cross_entropy":
        y = rng.integers(0, classes, batch)
    else:
        y = rng.standard_normal((batch, *out_shape)).astype(np.float32)
    return x, y


def setup(name: str):
    """(nnc trainer, torch step function, x, y) from the same initial weights."""
    import torch
    import nnc
    import torch_train_twins as TT
    batch, dims, loss = SETUP[name]
    model, twin, shape, classes = model_and_twin(name)
    opt = nnc.SGD(0.01, momentum=0.9)
    trainer = nnc.train(model, loss=loss, optimizer=opt, batch=batch, dims=dims, seed=0)
    TT.load_state(twin, trainer.state_dict())
    twin.train()
    out_shape = (64, 1) if name == "gru" else None
    x, y = data(name, batch, shape, classes, loss, out_shape)
    tx = torch.from_numpy(x)
    ty = torch.from_numpy(y.astype(np.int64) if y.dtype.kind in "iu" else y)
    optimizer = TT.torch_optimizer(opt, twin.parameters())

    def torch_step():
        optimizer.zero_grad()
        value = TT.torch_loss(loss, twin(tx), ty)
        value.backward()
        optimizer.step()
        return value.item()

    return trainer, torch_step, x, y


def block_time(fn: Callable[[], object], budget: float = 0.15) -> float:
    """Median seconds of one call over a block of about `budget` seconds."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while (time.perf_counter() - start < budget and len(times) < 2000) or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_peak_bytes(step: Callable[[], object], zero_grad: Callable[[], None]) -> int:
    """The peak, above the start, of the bytes ATen's CPU allocator holds during `step()`."""
    import torch
    step()
    step()
    zero_grad()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    held = peak = 0
    for e in events:
        held += e.nbytes()
        peak = max(peak, held)
    return peak


def memory_row(name: str) -> tuple[str, int, int, dict]:
    import torch
    from nnc.compiler.train import train_memory_report
    import torch_train_twins as TT
    batch, dims, loss = SETUP[name]
    model, twin, shape, classes = model_and_twin(name)
    report = train_memory_report(model, batch=batch, dims=dims, loss=loss, optimizer="sgd")
    twin.train()
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9, foreach=False)
    out_shape = (64, 1) if name == "gru" else None
    x, y = data(name, batch, shape, classes, loss, out_shape)
    tx = torch.from_numpy(x)
    ty = torch.from_numpy(y.astype(np.int64) if y.dtype.kind in "iu" else y)

    def step():
        optimizer.zero_grad()
        TT.torch_loss(loss, twin(tx), ty).backward()
        optimizer.step()

    return f"{name} b{batch}", report["arena_bytes"], torch_peak_bytes(step, optimizer.zero_grad), report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=int(_THREADS))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    how = limit_blas(args.threads)
    print(f"threads: {args.threads} (torch.set_num_threads; NumPy BLAS via {how}); torch {torch.__version__}")
    if not args.no_speed:
        print(f"\n{'step time':<14}{'nnc':>10}{'torch':>10}{'nnc/torch':>11}")
        for name in args.models or SPEED:
            if name not in SPEED:
                continue
            trainer, torch_step, x, y = setup(name)
            runners = {"nnc": lambda: block_time(lambda: trainer.step(x, y)), "torch": lambda: block_time(torch_step)}
            got: dict[str, list[float]] = {k: [] for k in runners}
            for _ in range(args.rounds):
                for k, r in runners.items():
                    got[k].append(r())
            ours, theirs = statistics.median(got["nnc"]), statistics.median(got["torch"])
            print(f"{name + ' b' + str(SETUP[name][0]):<14}{ours * 1e3:8.2f}ms{theirs * 1e3:8.2f}ms{ours / theirs:11.2f}")
    if not args.no_memory:
        print(f"\n{'memory':<14}{'nnc arena':>12}{'lower bd':>12}{'torch peak':>12}{'nnc/torch':>11}")
        for name in args.models or MEMORY:
            label, arena, peak, report = memory_row(name)
            print(f"{label:<14}{arena / 1e6:10.3f}MB{report['lower_bound_bytes'] / 1e6:10.3f}MB"
                  f"{peak / 1e6:10.3f}MB{arena / peak:11.2f}")


if __name__ == "__main__":
    main()
