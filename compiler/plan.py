"""The memory planner: buffers with lifetimes in, byte offsets in one arena out.

In:  `Buffer`s, each a name, a size in bytes and an inclusive lifetime
     [first, last] in schedule steps (`memory.py` makes them from the graph:
     views, in-place results and concat inputs already share a buffer).
Out: a `Plan`: every buffer's byte offset, the arena's size and the name of
     the strategy that made it. `verify_plan` checks a plan, `timeline` draws
     one.

Two buffers conflict when their lifetimes share a step. A buffer last read at
step 5 and one first written at step 5 do conflict: the op at step 5 reads the
one while it writes the other. Conflicting buffers must not overlap. Every
offset is a multiple of `alignment`, and sizes are rounded up to it for
placement.

The algorithm:
1. Check the buffers (unique names, sizes > 0, first <= last) and sort them
   into the canonical order: first step, last step, name. Every order used
   below also ends on the name, so the plan does not depend on the order the
   buffers came in.
2. Find each buffer's conflicts in one sweep over the canonical order: a
   buffer conflicts with the earlier buffers still alive at its first step.
3. Run every strategy, in this fixed order:
   a. ping-pong, for chains: when no step has more than two buffers alive
      (buffer i living [i, i + 1], possibly with short side branches), every
      buffer conflicts with at most one earlier buffer. Give it the side
      opposite that one: the low side starts at offset 0, the high side ends
      at the arena's end, and the arena is the largest aligned size of two
      conflicting buffers (or of one buffer). Skipped when three buffers are
      alive at some step.
   b. greedy by size (TFLite Micro's planner; Pisarchyk & Lee 2020, "Efficient
      Memory Management for Deep Neural Net Inference"): take the buffers
      largest first (ties in canonical order) and put each one in the
      lowest gap between the already placed buffers it conflicts with that
      holds it (first fit), or above all of them when no gap does.
   c. greedy by breadth (same paper): take the steps where some buffer is
      first written (every buffer is alive at its own first step) by the
      total size alive there, largest first (ties: earlier step). At each
      step take its buffers not yet placed, largest first, and put each one
      in the smallest gap between placed conflicting buffers that holds it
      (best fit; ties: the lower gap), or above all of them.
   d. first use: the buffers in schedule order (first step, then largest),
      first fit as in b.
4. Keep the plan with the smallest arena; ties go to the strategy that comes
   first in step 3.

No plan can be smaller than `lower_bound`, the largest total size alive at
one step, since all those buffers need room at once. For a chain, ping-pong
reaches it when sizes are multiples of the alignment: the two sides hold any
two neighbours, and two neighbours are all that is ever alive together.
Beyond that, finding the smallest arena is NP-hard and b to d are heuristics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence


@dataclass(frozen=True, slots=True)
class Buffer:
    """A block of `size` bytes, alive from the step that first writes it to
    the step that last reads it, both included."""

    name: str
    size: int
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Where every buffer starts in the arena (in canonical buffer order)."""

    offsets: Mapping[str, int]
    arena_bytes: int
    strategy: str
    alignment: int = 64


def lower_bound(buffers: Sequence[Buffer]) -> int:
    """The largest total size of buffers alive at the same step."""
    change: dict[int, int] = {}
    for b in buffers:
        change[b.first] = change.get(b.first, 0) + b.size
        change[b.last + 1] = change.get(b.last + 1, 0) - b.size
    alive = peak = 0
    for step in sorted(change):
        alive += change[step]
        peak = max(peak, alive)
    return peak


def naive_bytes(buffers: Sequence[Buffer]) -> int:
    """The arena if no two buffers shared memory."""
    return sum(b.size for b in buffers)


def plan(buffers: Sequence[Buffer], *, alignment: int = 64) -> Plan:
    """Place every buffer; the strategy with the smallest arena wins."""
    problem = _Problem.make(buffers, alignment)
    best: Plan | None = None
    for name in STRATEGIES:
        candidate = _run(problem, name)
        if candidate is not None and (best is None or candidate.arena_bytes < best.arena_bytes):
            best = candidate
    assert best is not None, "greedy strategies always give a plan"
    return best


def plan_with(buffers: Sequence[Buffer], strategy: str, *, alignment: int = 64) -> Plan | None:
    """One strategy's plan (None when it does not apply), to compare them."""
    return _run(_Problem.make(buffers, alignment), strategy)


def verify_plan(buffers: Sequence[Buffer], result: Plan) -> None:
    """Raise AssertionError when a buffer has no offset, an offset is not a
    multiple of the plan's alignment, a buffer runs past the arena's end, or
    two buffers alive at the same step share bytes (naming both)."""
    for b in buffers:
        if b.name not in result.offsets:
            raise AssertionError(f"buffer `{b.name}` has no offset")
        offset = result.offsets[b.name]
        if offset < 0 or offset % result.alignment:
            raise AssertionError(f"buffer `{b.name}` is at offset {offset}, "
                                 f"not a multiple of the alignment {result.alignment}")
        if offset + b.size > result.arena_bytes:
            raise AssertionError(f"buffer `{b.name}` [{offset}, {offset + b.size}) runs past "
                                 f"the arena's end ({result.arena_bytes} bytes)")
    ordered = sorted(buffers, key=_canonical)
    earlier = _earlier_conflicts(ordered)
    for b in ordered:
        for a in earlier[b.name]:
            a_start, b_start = result.offsets[a.name], result.offsets[b.name]
            if a_start < b_start + b.size and b_start < a_start + a.size:
                raise AssertionError(
                    f"buffers `{a.name}` [{a_start}, {a_start + a.size}) alive {a.first}..{a.last} "
                    f"and `{b.name}` [{b_start}, {b_start + b.size}) alive {b.first}..{b.last} overlap")


def timeline(buffers: Sequence[Buffer], result: Plan, width: int = 60) -> str:
    """A text picture of the plan: one row per buffer, by offset, with its
    byte range and a bar over the steps where it is alive (`#`). With more
    steps than `width`, a column stands for several steps."""
    head = f"arena {result.arena_bytes:,} bytes, {len(buffers)} buffers, strategy {result.strategy}"
    if not buffers:
        return head
    start = min(b.first for b in buffers)
    end = max(b.last for b in buffers)
    per_column = math.ceil((end - start + 1) / width)
    columns = math.ceil((end - start + 1) / per_column)
    name_width = min(max(len("buffer"), *(len(b.name) for b in buffers)), 32)
    number_width = len(f"{result.arena_bytes:,}")
    scale = f" ({per_column} per column)" if per_column > 1 else ""
    lines = [head, f"{'buffer':<{name_width}}  {'bytes':>{2 * number_width + 4}}  steps {start}..{end}{scale}"]
    for b in sorted(buffers, key=lambda b: (result.offsets[b.name], b.first, b.name)):
        offset = result.offsets[b.name]
        span = f"[{offset:>{number_width},}, {offset + b.size:>{number_width},})"
        bar = "".join("#" if b.first < start + (c + 1) * per_column and start + c * per_column <= b.last else "."
                      for c in range(columns))
        name = b.name if len(b.name) <= name_width else "..." + b.name[-(name_width - 3):]
        lines.append(f"{name:<{name_width}}  {span}  {bar}")
    return "\n".join(lines)


# ------------------------------------------------------------------ internals

def _canonical(b: Buffer) -> tuple[int, int, str]:
    return b.first, b.last, b.name


def _by_size(b: Buffer) -> tuple[int, int, int, str]:
    return -b.size, b.first, b.last, b.name


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _earlier_conflicts(ordered: Sequence[Buffer]) -> dict[str, list[Buffer]]:
    """For buffers in canonical order: each one's conflicts that come before
    it, i.e. the earlier buffers still alive at its first step."""
    result: dict[str, list[Buffer]] = {}
    alive: list[Buffer] = []
    for b in ordered:
        alive = [a for a in alive if a.last >= b.first]
        result[b.name] = list(alive)
        alive.append(b)
    return result


@dataclass(frozen=True, slots=True)
class _Problem:
    buffers: tuple[Buffer, ...]                   # canonical order
    sizes: Mapping[str, int]                      # rounded up to the alignment
    earlier: Mapping[str, Sequence[Buffer]]       # conflicts before it in canonical order
    conflicts: Mapping[str, Sequence[Buffer]]     # all its conflicts, in canonical order
    alignment: int

    @classmethod
    def make(cls, buffers: Sequence[Buffer], alignment: int) -> _Problem:
        if alignment <= 0:
            raise ValueError(f"alignment must be positive, got {alignment}")
        names = [b.name for b in buffers]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"buffer names must be unique: {', '.join(twice)}")
        for b in buffers:
            if b.size <= 0 or b.first > b.last:
                raise ValueError(f"buffer `{b.name}` needs size > 0 and first <= last, got {b}")
        ordered = tuple(sorted(buffers, key=_canonical))
        earlier = _earlier_conflicts(ordered)
        later: dict[str, list[Buffer]] = {b.name: [] for b in ordered}
        for b in ordered:
            for a in earlier[b.name]:
                later[a.name].append(b)
        conflicts = {b.name: earlier[b.name] + later[b.name] for b in ordered}
        sizes = {b.name: _align(b.size, alignment) for b in ordered}
        return cls(ordered, sizes, earlier, conflicts, alignment)


def _run(problem: _Problem, strategy: str) -> Plan | None:
    placed = STRATEGIES[strategy](problem)
    if placed is None:
        return None
    offsets = {b.name: placed[b.name] for b in problem.buffers}
    arena = max((offsets[b.name] + problem.sizes[b.name] for b in problem.buffers), default=0)
    return Plan(offsets, arena, strategy, problem.alignment)


def _fit(taken: list[tuple[int, int]], size: int, best: bool) -> int:
    """The offset for `size` bytes among the byte ranges `taken` (sorted by
    start): the lowest gap that holds it, or with `best` the smallest such
    gap; above every range when no gap holds it."""
    top = 0
    chosen: int | None = None
    chosen_gap = 0
    for start, end in taken:
        gap = start - top
        if gap >= size:
            if not best:
                return top
            if chosen is None or gap < chosen_gap:
                chosen, chosen_gap = top, gap
        top = max(top, end)
    return top if chosen is None else chosen


def _place(problem: _Problem, order: Sequence[Buffer], *, best: bool) -> dict[str, int]:
    """Place the buffers one by one in `order`, each beside the placed
    buffers it conflicts with."""
    offsets: dict[str, int] = {}
    for b in order:
        taken = sorted((offsets[c.name], offsets[c.name] + problem.sizes[c.name])
                       for c in problem.conflicts[b.name] if c.name in offsets)
        offsets[b.name] = _fit(taken, problem.sizes[b.name], best)
    return offsets


def _ping_pong(problem: _Problem) -> dict[str, int] | None:
    low: dict[str, bool] = {}
    arena = 0
    for b in problem.buffers:
        earlier = problem.earlier[b.name]
        if len(earlier) > 1:
            return None                      # three buffers alive at b.first
        size = problem.sizes[b.name]
        if earlier:
            (a,) = earlier
            low[b.name] = not low[a.name]
            arena = max(arena, size + problem.sizes[a.name])
        else:
            low[b.name] = True
            arena = max(arena, size)
    return {b.name: 0 if low[b.name] else arena - problem.sizes[b.name] for b in problem.buffers}


def _greedy_by_size(problem: _Problem) -> dict[str, int]:
    return _place(problem, sorted(problem.buffers, key=_by_size), best=False)


def _greedy_by_breadth(problem: _Problem) -> dict[str, int]:
    # Every buffer is alive at its own first step, so those steps cover them all.
    alive_at: dict[int, list[Buffer]] = {}
    for b in problem.buffers:
        if b.first not in alive_at:
            alive_at[b.first] = list(problem.earlier[b.name])
        alive_at[b.first].append(b)
    steps = sorted(alive_at, key=lambda s: (-sum(b.size for b in alive_at[s]), s))
    order: list[Buffer] = []
    taken: set[str] = set()
    for step in steps:
        for b in sorted(alive_at[step], key=_by_size):
            if b.name not in taken:
                taken.add(b.name)
                order.append(b)
    return _place(problem, order, best=True)


def _first_use(problem: _Problem) -> dict[str, int]:
    return _place(problem, sorted(problem.buffers, key=lambda b: (b.first, -b.size, b.name)), best=False)


STRATEGIES: dict[str, Callable[[_Problem], dict[str, int] | None]] = {
    "ping-pong": _ping_pong,
    "greedy-by-size": _greedy_by_size,
    "greedy-by-breadth": _greedy_by_breadth,
    "first-use": _first_use,
}
