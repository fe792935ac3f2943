"""The largest sizes nnc plans, and sizes as text: shared by the planner
(`nnc.compiler.memory` re-exports them) and the runtime, which checks the
arena of a call against the same limits.

In:  byte counts, or `limits=` as the Python API takes it.
Out: `Limits` (tensor, weights and arena caps) and `format_bytes` text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .errors import UsageError

GiB = 1 << 30


@dataclass(frozen=True, slots=True)
class Limits:
    """The largest sizes nnc plans, in bytes: one tensor (a value of one
    example, or one weight tensor), all the weights together, and the arena
    at the plan's batch. Past them, `nnc check` and `compile_plan` give E0208
    instead of allocating. The defaults keep every element index within
    C's `int`; `limits=` (Python) and `--max-memory` (CLI) change them."""

    tensor: int = 2 * GiB
    weights: int = 4 * GiB
    arena: int = 4 * GiB

    @staticmethod
    def of(value: "Limits | int | Mapping[str, int] | None") -> "Limits":
        """`None`: the defaults; an int: that many bytes for each of the
        three; a mapping with any of `tensor`, `weights`, `arena`."""
        if value is None:
            return Limits()
        if isinstance(value, Limits):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"tensor", "weights", "arena"}
            if unknown:
                raise UsageError(f"limits has no key {', '.join(map(repr, sorted(unknown)))}: "
                                 "use 'tensor', 'weights' and 'arena'")
            fields = {k: _positive_bytes(f"limits[{k!r}]", v) for k, v in value.items()}
            return Limits(**fields)
        n = _positive_bytes("limits", value)
        return Limits(n, n, n)


def _positive_bytes(what: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f"{what} must be a positive number of bytes, got {value!r}")
    return value


def format_bytes(n: int) -> str:
    """`1.5 GiB (1,610,612,736 B)`; sizes past exbibytes by their digits."""
    if n >= 1 << 70:
        return f"about 10^{int(n.bit_length() * 0.30103)} bytes"
    for unit, size in (("EiB", 1 << 60), ("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20),
                       ("KiB", 1 << 10)):
        if n >= size:
            text = f"{n / size:,.1f}".removesuffix(".0")
            return f"{text} {unit} ({n:,} B)"
    return f"{n:,} B"
