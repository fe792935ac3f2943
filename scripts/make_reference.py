"""Regenerate the PyTorch reference outputs of the sample models.

Usage (from the repository root, with torch installed):

    python scripts/make_reference.py              # every sample in tests/torch_twins.TWINS
    python scripts/make_reference.py lenet gru    # only these

In:  the twins of `tests/torch_twins.py` (one per `samples/<name>.nn`).
Out: `tests/data/<name>.npz` per sample, holding
     - `seed`: the int64 scalar the weights and the input were drawn from;
     - `input_<name>` per model input: a batch of 2, `[2, *shape]` with the
       time dimension at `TIME_STEPS`, float32. The values are drawn from a
       standard normal and rounded to float16 precision, so their low
       mantissa bits are zero and the file compresses to about 60% of its
       raw size (the two 224x224 samples dominate: ~0.7 MB each);
     - `output_<i>` per model output (from 0), float32: the twin's forward pass
       in eval mode.
     Weights are not stored: `torch_twins.seeded_state_dict(shapes, seed)`
     regenerates them with NumPy alone, from the keys and shapes the model
     lists. Rerun this script when a sample, its twin or the seeded weights
     change, and review the diff like code.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from torch_twins import TWINS, load_seeded_weights  # noqa: E402

SEED = 20240601
BATCH = 2
DATA = REPO / "tests" / "data"


def seeded_input(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A float32 batch of standard-normal values that float16 represents exactly."""
    rng = np.random.default_rng([seed, zlib.crc32(f"input_{name}".encode())])
    return rng.standard_normal((BATCH, *shape)).astype(np.float16).astype(np.float32)


def reference(sample: str, seed: int) -> dict[str, np.ndarray]:
    """The arrays of `tests/data/<sample>.npz`: seed, inputs and the twin's outputs."""
    factory, input_shapes = TWINS[sample]
    module = factory()
    load_seeded_weights(module, seed)
    module.eval()
    inputs = {name: seeded_input(name, shape, seed) for name, shape in input_shapes.items()}
    with torch.no_grad():
        outputs = module(*(torch.from_numpy(x) for x in inputs.values()))
    if not isinstance(outputs, tuple):
        outputs = (outputs,)
    arrays = {"seed": np.int64(seed)}
    arrays.update({f"input_{name}": x for name, x in inputs.items()})
    arrays.update({f"output_{i}": y.numpy().astype(np.float32) for i, y in enumerate(outputs)})
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", nargs="*", metavar="SAMPLE",
                        help=f"samples to regenerate (default: all of {', '.join(TWINS)})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"weight and input seed (default {SEED})")
    args = parser.parse_args(argv)
    unknown = [s for s in args.samples if s not in TWINS]
    if unknown:
        parser.error(f"unknown sample {', '.join(unknown)}; choose from {', '.join(TWINS)}")
    torch.set_num_threads(1)
    DATA.mkdir(parents=True, exist_ok=True)
    for sample in args.samples or TWINS:
        path = DATA / f"{sample}.npz"
        np.savez_compressed(path, **reference(sample, args.seed))
        print(f"{path.relative_to(REPO)}: {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
