"""nnc's execution plans against PyTorch eager, side by side.

    python benchmarks/bench.py                    # NumPy plan vs torch, batch 1 and 16
    python benchmarks/bench.py --c                # also the C plan, single-threaded, batch 1
    python benchmarks/bench.py --models lenet mlp --threads 1

For each sample it prints the median latency of nnc and of PyTorch eager
(same weights, same thread count), their ratio (nnc / torch: below 1 means
nnc is faster) and nnc's arena bytes. Needs PyTorch (the oracle) installed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
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
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} us"
    return f"{seconds * 1e3:8.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--c", action="store_true", help="also time the C plan (single thread, batch 1)")
    args = ap.parse_args()

    import torch
    import nnc
    from torch_twins import TWINS, seeded_state_dict

    torch.set_num_threads(args.threads)
    print(f"threads: {args.threads} (torch {torch.__version__}, numpy {np.__version__})")
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
        run_c(args.models)


def run_c(models: list[str]) -> None:
    import torch
    import nnc
    from torch_twins import TWINS, seeded_state_dict

    torch.set_num_threads(1)
    print()
    print("C plan, one thread, batch 1")
    header = f"{'model':<12} {'nnc C':>11}  {'torch eager':>11}  {'speed-up':>8}"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for name in models:
        factory, shapes = TWINS[name]
        twin = factory().eval()
        state = seeded_state_dict({k: tuple(v.shape) for k, v in twin.state_dict().items()}, 0)
        twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
        x = rng.standard_normal((1, *shapes["x"])).astype(np.float32)
        model = nnc.build(ROOT / "samples" / f"{name}.nn", target="c",
                          weights={k: v for k, v in state.items() if not k.endswith("num_batches_tracked")})
        tx = torch.from_numpy(x)
        t_c = median_time(lambda: model(x))
        with torch.inference_mode():
            t_torch = median_time(lambda: twin(tx))
        print(f"{name:<12} {fmt(t_c)}  {fmt(t_torch)}  {t_torch / t_c:7.1f}x")


if __name__ == "__main__":
    main()
