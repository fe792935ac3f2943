"""Weights: reading `.npz` and `.safetensors` files strictly, the seeded default
initialisation, and the effective tensors a plan's kernels use.

In:  a state_dict specification (full key -> `Spec`), a file path or a dict of
     arrays.
Out: a complete `dict[str, np.ndarray]` of float32 arrays in PyTorch's layout,
     or `WeightsError` listing every missing key, unexpected key and shape
     mismatch at once.

Needs only NumPy (and the `safetensors` package for `.safetensors` files).
`.npz` files are read with `allow_pickle=False`.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from typing import Mapping

import numpy as np

# Keys PyTorch writes that inference never reads.
IGNORED_SUFFIXES = (".num_batches_tracked",)


class WeightsError(ValueError):
    """A weights file or dict that does not fit the model."""


@dataclass(frozen=True, slots=True)
class Spec:
    shape: tuple[int, ...]
    init: tuple[str, float]           # ("uniform", bound) or ("const", value)


def read_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array in a `.npz` or `.safetensors` file, by key."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WeightsError(f"weights file `{path}` does not exist")
    lower = path.lower()
    try:
        if lower.endswith(".safetensors"):
            from safetensors.numpy import load_file
            return dict(load_file(path))
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise WeightsError(f"`{path}` holds a single array, not a set of named weights "
                                   "(write it with numpy.savez)")
            return {k: data[k] for k in data.files}
    except WeightsError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        kind = "safetensors" if lower.endswith(".safetensors") else "npz"
        raise WeightsError(f"`{path}` is not a readable {kind} weights file ({_reason(e)})") from None
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        if type(e).__name__ in ("SafetensorError", "HeaderTooLarge", "InvalidHeader"):
            raise WeightsError(f"`{path}` is not a readable safetensors weights file ({_reason(e)})") from None
        raise


def _reason(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]


def check(arrays: Mapping[str, object], specs: Mapping[str, Spec], source: str = "the weights") -> dict[str, np.ndarray]:
    """Validate a complete set of arrays against the model; return float32 copies."""
    problems: list[str] = []
    missing = [k for k in specs if k not in arrays]
    unexpected = [k for k in arrays if k not in specs and not k.endswith(IGNORED_SUFFIXES)]
    result: dict[str, np.ndarray] = {}
    for k, spec in specs.items():
        if k not in arrays:
            continue
        try:
            a = np.asarray(arrays[k])
        except Exception as e:
            problems.append(f"`{k}` is not an array ({_reason(e)})")
            continue
        if a.dtype.kind not in "fiub":
            problems.append(f"`{k}` has dtype {a.dtype}, expected a real number type")
            continue
        if tuple(a.shape) != spec.shape:
            problems.append(f"`{k}` has shape {list(a.shape)}, the model expects {list(spec.shape)}")
            continue
        result[k] = np.ascontiguousarray(a, dtype=np.float32)
    if missing:
        problems.append("missing: " + ", ".join(f"`{k}`" for k in missing))
    if unexpected:
        problems.append("unexpected: " + ", ".join(f"`{k}`" for k in unexpected))
    if problems:
        raise WeightsError(f"{source} do not fit the model:\n  " + "\n  ".join(problems))
    return result


def load(source: str | os.PathLike | Mapping[str, object], specs: Mapping[str, Spec]) -> dict[str, np.ndarray]:
    if isinstance(source, Mapping):
        return check(source, specs, "the weights")
    return check(read_file(source), specs, f"the weights in `{os.fspath(source)}`")


def default_init(specs: Mapping[str, Spec], seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch's default distributions, drawn in key order from one seeded generator:
    uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for layer weights and biases
    (recurrent layers: 1/sqrt(hidden)); batchnorm weight 1, bias 0, mean 0, var 1."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for k, spec in specs.items():
        kind, value = spec.init
        if kind == "uniform":
            out[k] = rng.uniform(-value, value, size=spec.shape).astype(np.float32)
        else:
            out[k] = np.full(spec.shape, value, dtype=np.float32)
    return out


def fold_norm(weight: np.ndarray, bias: np.ndarray | None, gamma: np.ndarray, beta: np.ndarray,
              mean: np.ndarray, var: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The weight and bias of a layer followed by an inference batchnorm on its
    output channels (axis 0 of the weight)."""
    scale = (gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps))
    w = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    b = (bias.astype(np.float64) if bias is not None else 0.0) - mean.astype(np.float64)
    b = b * scale + beta.astype(np.float64)
    return w.astype(np.float32), np.asarray(b, dtype=np.float32)


def nbytes(specs: Mapping[str, Spec]) -> int:
    return sum(math.prod(s.shape) * 4 for s in specs.values())
