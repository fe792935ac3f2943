"""The memory planner: buffers with lifetimes -> offsets in one arena.

In:  `Buffer`s (name, bytes, first and last step of an inclusive lifetime),
     made by `memory.py` from the graph's schedule.
Out: a `Plan` (an offset per buffer, the arena's size, the winning strategy),
     checked by `verify_plan`.

Two buffers conflict when their lifetimes share a step (an op reads its input
while it writes its output, so [2, 5] and [5, 7] conflict); conflicting
buffers must not overlap in the arena. Sizes are rounded up to `alignment`
for placement and every offset is a multiple of it.

The algorithm:
1. Put the buffers in a canonical order (first step, last step, name) so the
   result does not depend on the order they came in.
2. Run every strategy, each a deterministic rule for the order in which to
   place buffers, all sharing one placement routine:
   a. greedy by size (Pisarchyk & Lee 2020, the TFLite Micro planner): the
      largest buffer first;
   b. greedy by breadth: the steps with the largest live total first, and
      within a step its buffers by size;
   c. first use: in schedule order, which is ping-pong for a chain (each
      buffer lands just beyond the one it overlaps, then back at 0);
   d. longest lifetime first, then by size.
3. Placement: a buffer goes at the lowest aligned offset where it overlaps no
   already placed buffer whose lifetime conflicts with its own (the gaps
   between the conflicting buffers are tried in increasing offset order).
4. Keep the plan with the smallest arena; ties go to the first strategy in
   the order above.

No plan can be smaller than `lower_bound` (the largest total of buffers live
at one step). For a chain (buffer i lives [i, i+1]) the first-use strategy
reaches it when sizes are multiples of the alignment: two neighbours are all
that is ever live together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence


@dataclass(frozen=True, slots=True)
class Buffer:
    name: str
    size: int     # bytes, > 0
    first: int    # step that writes it first
    last: int     # step that reads it last (inclusive)


@dataclass(frozen=True, slots=True)
class Plan:
    offsets: Mapping[str, int]
    arena_bytes: int
    strategy: str


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _conflict(a: Buffer, b: Buffer) -> bool:
    return a.first <= b.last and b.first <= a.last


def lower_bound(buffers: Sequence[Buffer]) -> int:
    """The largest total size of buffers alive at the same step."""
    events: dict[int, int] = {}
    for b in buffers:
        events[b.first] = events.get(b.first, 0) + b.size
        events[b.last + 1] = events.get(b.last + 1, 0) - b.size
    live = best = 0
    for step in sorted(events):
        live += events[step]
        best = max(best, live)
    return best


def naive_bytes(buffers: Sequence[Buffer]) -> int:
    return sum(b.size for b in buffers)


# ------------------------------------------------------------------ strategies

def _by_size(bufs: list[Buffer]) -> list[Buffer]:
    return sorted(bufs, key=lambda b: (-b.size, b.first, b.last, b.name))


def _by_breadth(bufs: list[Buffer]) -> list[Buffer]:
    steps = sorted({s for b in bufs for s in (b.first, b.last)})
    live = {s: sum(b.size for b in bufs if b.first <= s <= b.last) for s in steps}
    order: list[Buffer] = []
    seen: set[str] = set()
    for s in sorted(steps, key=lambda s: (-live[s], s)):
        for b in _by_size([b for b in bufs if b.first <= s <= b.last and b.name not in seen]):
            seen.add(b.name)
            order.append(b)
    return order


def _by_first_use(bufs: list[Buffer]) -> list[Buffer]:
    return sorted(bufs, key=lambda b: (b.first, -b.size, b.last, b.name))


def _by_lifetime(bufs: list[Buffer]) -> list[Buffer]:
    return sorted(bufs, key=lambda b: (-(b.last - b.first), -b.size, b.first, b.name))


STRATEGIES: dict[str, Callable[[list[Buffer]], list[Buffer]]] = {
    "greedy-by-size": _by_size,
    "greedy-by-breadth": _by_breadth,
    "first-use": _by_first_use,
    "longest-lifetime": _by_lifetime,
}


def _place(order: list[Buffer], alignment: int) -> tuple[dict[str, int], int]:
    offsets: dict[str, int] = {}
    placed: list[Buffer] = []
    arena = 0
    for b in order:
        size = _align(b.size, alignment)
        taken = sorted((offsets[p.name], offsets[p.name] + _align(p.size, alignment))
                       for p in placed if _conflict(p, b))
        offset = 0
        for lo, hi in taken:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        offsets[b.name] = offset
        placed.append(b)
        arena = max(arena, offset + size)
    return offsets, arena


def plan(buffers: Sequence[Buffer], *, alignment: int = 64) -> Plan:
    """Place every buffer; the smallest arena of all strategies wins."""
    names = [b.name for b in buffers]
    assert len(set(names)) == len(names), "buffer names must be unique"
    canonical = sorted(buffers, key=lambda b: (b.first, b.last, b.name))
    best: Plan | None = None
    for name, order in STRATEGIES.items():
        offsets, arena = _place(order(canonical), alignment)
        if best is None or arena < best.arena_bytes:
            best = Plan(offsets, arena, name)
    if best is None:
        return Plan({}, 0, "empty")
    return best


def plan_with(buffers: Sequence[Buffer], strategy: str, *, alignment: int = 64) -> Plan:
    """One strategy's plan, for tests and comparisons."""
    canonical = sorted(buffers, key=lambda b: (b.first, b.last, b.name))
    offsets, arena = _place(STRATEGIES[strategy](canonical), alignment)
    return Plan(offsets, arena, strategy)


def verify_plan(buffers: Sequence[Buffer], result: Plan, *, alignment: int = 64) -> None:
    """Assert that the plan places every buffer inside the arena, aligned, and
    that no two buffers alive at the same step overlap."""
    for b in buffers:
        assert b.name in result.offsets, f"buffer `{b.name}` has no offset"
        off = result.offsets[b.name]
        assert off % alignment == 0, f"buffer `{b.name}` at {off} is not aligned to {alignment}"
        assert 0 <= off and off + b.size <= result.arena_bytes, \
            f"buffer `{b.name}` [{off}, {off + b.size}) runs past the arena ({result.arena_bytes} bytes)"
    ordered = sorted(buffers, key=lambda b: result.offsets[b.name])
    for i, a in enumerate(ordered):
        a_end = result.offsets[a.name] + a.size
        for b in ordered[i + 1:]:
            if result.offsets[b.name] >= a_end:
                break
            assert not _conflict(a, b), (
                f"buffers `{a.name}` [{result.offsets[a.name]}, {a_end}) steps {a.first}..{a.last} and "
                f"`{b.name}` [{result.offsets[b.name]}, {result.offsets[b.name] + b.size}) steps "
                f"{b.first}..{b.last} overlap while both are alive")


def timeline(buffers: Sequence[Buffer], result: Plan, width: int = 48) -> str:
    """A text picture of the plan: one row per buffer, by offset, with its
    byte range and a bar over the steps it is alive."""
    if not buffers:
        return "(no buffers)"
    steps = max(b.last for b in buffers) + 1
    scale = max(1, -(-steps // width))
    cols = -(-steps // scale)
    name_w = min(max(len(b.name) for b in buffers), 40)
    lines = [f"arena {result.arena_bytes:,} bytes, {len(buffers)} buffers, strategy {result.strategy}",
             f"{'buffer':<{name_w}}  {'offset':>10}  {'bytes':>10}  steps 0..{steps - 1}"]
    for b in sorted(buffers, key=lambda b: (result.offsets[b.name], b.first, b.name)):
        bar = "".join("#" if b.first // scale <= c <= b.last // scale else "." for c in range(cols))
        name = b.name if len(b.name) <= name_w else "..." + b.name[-(name_w - 3):]
        lines.append(f"{name:<{name_w}}  {result.offsets[b.name]:>10,}  {b.size:>10,}  {bar}")
    return "\n".join(lines)
