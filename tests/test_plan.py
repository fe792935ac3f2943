"""The memory planner (`compiler/plan.py`): golden offsets for small cases
worked out by hand, and hypothesis properties over random buffer sets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnc.compiler.plan import (STRATEGIES, Buffer, Plan, lower_bound, naive_bytes, plan, plan_with, timeline,
                               verify_plan)

KIB = 1024


def chain(*sizes: int) -> list[Buffer]:
    """Buffer i (named a, b, c, ...) is written at step i and read at step i + 1."""
    return [Buffer(chr(ord("a") + i), size, i, i + 1) for i, size in enumerate(sizes)]


def rounded_up(buffers: list[Buffer], alignment: int) -> list[Buffer]:
    """The buffers with their sizes rounded up to the alignment, as placed."""
    return [Buffer(b.name, -(-b.size // alignment) * alignment, b.first, b.last) for b in buffers]


# ------------------------------------------------------------------ golden offsets

def test_four_step_chain_alternates_low_and_high_sides():
    buffers = chain(256, 128, 512, 64)
    result = plan(buffers)
    verify_plan(buffers, result)
    assert result == Plan({"a": 0, "b": 512, "c": 0, "d": 576}, 640, "ping-pong")
    assert result.arena_bytes == lower_bound(buffers) == 512 + 128


def test_ping_pong_beats_every_greedy_strategy_on_a_chain():
    buffers = chain(128, 320, 256, 256, 320)
    greedy = {name: plan_with(buffers, name).arena_bytes for name in STRATEGIES if name != "ping-pong"}
    assert greedy == {"greedy-by-size": 832, "greedy-by-breadth": 832, "first-use": 704}
    result = plan(buffers)
    assert result == Plan({"a": 0, "b": 256, "c": 0, "d": 320, "e": 0}, 576, "ping-pong")


def test_diamond_with_residual_add_reuses_the_dead_branch_for_the_sum():
    # x = conv(input) is read again by the add at step 3; y -> z is the branch.
    buffers = [Buffer("x", 512, 0, 3), Buffer("y", 1024, 1, 2), Buffer("z", 256, 2, 3), Buffer("out", 512, 3, 4)]
    result = plan(buffers)
    verify_plan(buffers, result)
    assert result == Plan({"x": 1024, "y": 0, "z": 1536, "out": 0}, 1792, "greedy-by-size")
    assert result.arena_bytes == lower_bound(buffers)


def test_concat_fan_in_keeps_every_branch_alive_beside_the_result():
    buffers = [Buffer("a", 128, 0, 3), Buffer("b", 256, 1, 3), Buffer("c", 192, 2, 3), Buffer("cat", 576, 3, 4)]
    result = plan(buffers)
    verify_plan(buffers, result)
    assert result == Plan({"a": 1024, "b": 576, "c": 832, "cat": 0}, 1152, "greedy-by-size")
    assert result.arena_bytes == lower_bound(buffers)


def test_equal_sizes_are_placed_in_first_step_then_name_order():
    buffers = [Buffer("b", 64, 0, 1), Buffer("a", 64, 0, 1), Buffer("c", 64, 1, 2), Buffer("d", 64, 2, 2)]
    result = plan(buffers)
    assert result == Plan({"a": 0, "b": 64, "c": 128, "d": 0}, 192, "greedy-by-size")


def test_one_huge_buffer_stays_at_zero_and_small_ones_pack_above_it():
    buffers = [Buffer("huge", KIB * KIB, 0, 4)] + chain(64, 64, 64)
    result = plan(buffers)
    verify_plan(buffers, result)
    assert result == Plan({"a": KIB * KIB, "huge": 0, "b": KIB * KIB + 64, "c": KIB * KIB}, KIB * KIB + 128,
                          "greedy-by-size")


def test_greedy_by_size_puts_a_buffer_in_the_lowest_gap_that_holds_it():
    # d, e, c and a are placed first; b (alive at step 3 only) then sees free
    # gaps [0, 384) and [640, 832) and takes the lower one.
    buffers = [Buffer("a", 128, 2, 5), Buffer("b", 128, 3, 3), Buffer("c", 192, 4, 6), Buffer("d", 384, 4, 5),
               Buffer("e", 256, 2, 4)]
    result = plan_with(buffers, "greedy-by-size")
    assert result == Plan({"a": 832, "b": 0, "c": 640, "d": 0, "e": 384}, 960, "greedy-by-size")


def test_greedy_by_breadth_wins_when_the_widest_step_is_placed_first():
    buffers = [Buffer("a", 192, 1, 3), Buffer("b", 384, 4, 6), Buffer("c", 256, 2, 4), Buffer("d", 64, 1, 2),
               Buffer("e", 192, 1, 1)]
    assert plan_with(buffers, "greedy-by-size").arena_bytes == 704
    result = plan(buffers)
    verify_plan(buffers, result)
    assert result == Plan({"a": 0, "b": 0, "c": 384, "d": 192, "e": 256}, 640, "greedy-by-breadth")


def test_greedy_by_breadth_fills_the_smallest_gap_that_holds_the_buffer():
    # Steps by breadth: 3 places e, a, d; 2 places b; then c at step 1 sees
    # free gaps [0, 384) and [448, 768) and takes the exact one.
    buffers = [Buffer("a", 384, 3, 4), Buffer("b", 64, 1, 2), Buffer("c", 320, 0, 1), Buffer("d", 320, 0, 3),
               Buffer("e", 384, 2, 4)]
    result = plan_with(buffers, "greedy-by-breadth")
    assert result == Plan({"a": 384, "b": 384, "c": 448, "d": 768, "e": 0}, 1088, "greedy-by-breadth")


def test_first_use_places_buffers_in_schedule_order_larger_first_within_a_step():
    buffers = [Buffer("p", 64, 0, 1), Buffer("q", 256, 0, 1), Buffer("r", 128, 1, 2), Buffer("s", 64, 2, 2)]
    result = plan_with(buffers, "first-use")
    assert result == Plan({"p": 256, "q": 0, "r": 320, "s": 0}, 448, "first-use")


def test_sizes_round_up_to_the_alignment_for_placement():
    buffers = [Buffer("a", 10, 0, 1), Buffer("b", 100, 1, 1), Buffer("c", 1, 1, 2)]
    assert plan(buffers, alignment=64) == Plan({"a": 128, "b": 0, "c": 192}, 256, "greedy-by-size", 64)
    assert plan(buffers, alignment=1) == Plan({"a": 100, "b": 0, "c": 110}, 111, "greedy-by-size", 1)


def test_buffers_that_touch_at_one_step_conflict():
    # `a` is last read at step 2 by the op that first writes `b`.
    buffers = [Buffer("a", 64, 0, 2), Buffer("b", 64, 2, 3)]
    assert plan(buffers).offsets == {"a": 0, "b": 64}
    apart = [Buffer("a", 64, 0, 1), Buffer("b", 64, 2, 3)]
    assert plan(apart).offsets == {"a": 0, "b": 0}


def test_no_buffers_give_an_empty_arena():
    result = plan([])
    assert result.offsets == {} and result.arena_bytes == 0
    verify_plan([], result)


def test_naive_bytes_and_lower_bound_of_a_diamond():
    buffers = [Buffer("x", 500, 0, 3), Buffer("y", 1000, 1, 2), Buffer("z", 250, 2, 3), Buffer("out", 500, 3, 4)]
    assert naive_bytes(buffers) == 2250
    assert lower_bound(buffers) == 1750      # x, y and z at step 2


@pytest.mark.parametrize("bad, message", [
    ([Buffer("a", 64, 0, 1), Buffer("a", 64, 2, 3)], "unique: a"),
    ([Buffer("a", 0, 0, 1)], "size > 0"),
    ([Buffer("a", 64, 3, 1)], "first <= last"),
])
def test_malformed_buffers_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        plan(bad)


# ------------------------------------------------------------------ verify_plan

def test_verify_plan_names_both_overlapping_buffers():
    buffers = [Buffer("conv_out", 256, 0, 2), Buffer("relu_out", 128, 2, 3), Buffer("later", 64, 3, 3)]
    bad = Plan({"conv_out": 0, "relu_out": 128, "later": 0}, 256, "by hand")
    with pytest.raises(AssertionError, match=r"`conv_out` \[0, 256\).*`relu_out` \[128, 256\).* overlap"):
        verify_plan(buffers, bad)


def test_verify_plan_accepts_shared_bytes_when_lifetimes_are_apart():
    buffers = [Buffer("a", 256, 0, 1), Buffer("b", 256, 2, 3)]
    verify_plan(buffers, Plan({"a": 0, "b": 0}, 256, "by hand"))


@pytest.mark.parametrize("offsets, arena, message", [
    ({"a": 0}, 192, "`b` has no offset"),
    ({"a": 0, "b": 96}, 256, "`b` is at offset 96, not a multiple of the alignment 64"),
    ({"a": 0, "b": 128}, 192, r"`b` \[128, 228\) runs past the arena's end \(192 bytes\)"),
])
def test_verify_plan_catches_missing_misaligned_and_out_of_arena_buffers(offsets, arena, message):
    buffers = [Buffer("a", 64, 0, 1), Buffer("b", 100, 1, 2)]
    with pytest.raises(AssertionError, match=message):
        verify_plan(buffers, Plan(offsets, arena, "by hand"))


# ------------------------------------------------------------------ properties

sizes = st.integers(1, 5000)


@st.composite
def buffer_sets(draw, max_buffers: int = 60) -> list[Buffer]:
    count = draw(st.integers(0, max_buffers))
    result = []
    for i in range(count):
        first = draw(st.integers(0, 30))
        length = draw(st.integers(0, 8))
        result.append(Buffer(f"t{i}", draw(sizes), first, first + length))
    return result


@settings(max_examples=150, deadline=None)
@given(buffer_sets(), st.sampled_from([1, 16, 64]))
def test_every_strategy_gives_a_valid_plan_no_smaller_than_the_lower_bound(buffers, alignment):
    arenas = {}
    for name in STRATEGIES:
        result = plan_with(buffers, name, alignment=alignment)
        if result is None:
            continue
        verify_plan(buffers, result)
        assert result.arena_bytes >= lower_bound(buffers)
        arenas[name] = result.arena_bytes
    chosen = plan(buffers, alignment=alignment)
    smallest = min(arenas.values())
    assert chosen.arena_bytes == smallest
    assert chosen.strategy == next(name for name in STRATEGIES if arenas.get(name) == smallest)
    assert chosen.arena_bytes <= naive_bytes(rounded_up(buffers, alignment))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 64), min_size=1, max_size=40), st.sampled_from([1, 16, 64]))
def test_a_chain_of_aligned_sizes_is_planned_at_its_lower_bound(units, alignment):
    buffers = [Buffer(f"v{i}", u * alignment, i, i + 1) for i, u in enumerate(units)]
    result = plan(buffers, alignment=alignment)
    verify_plan(buffers, result)
    assert result.arena_bytes == lower_bound(buffers)
    assert result.strategy == "ping-pong"


@settings(max_examples=100, deadline=None)
@given(buffer_sets(max_buffers=6).filter(lambda bs: lower_bound([Buffer(b.name, 1, b.first, b.last)
                                                                   for b in bs]) <= 2))
def test_ping_pong_reaches_the_aligned_lower_bound_whenever_at_most_two_buffers_are_alive(buffers):
    result = plan_with(buffers, "ping-pong")
    verify_plan(buffers, result)
    assert result.arena_bytes == lower_bound(rounded_up(buffers, 64))


def test_ping_pong_steps_aside_when_three_buffers_are_alive():
    buffers = [Buffer("a", 64, 0, 2), Buffer("b", 64, 1, 2), Buffer("c", 64, 2, 3)]
    assert plan_with(buffers, "ping-pong") is None


@settings(max_examples=60, deadline=None)
@given(buffer_sets(), st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_the_order_buffers_come_in(buffers, rng):
    shuffled = list(buffers)
    rng.shuffle(shuffled)
    once, again = plan(buffers), plan(shuffled)
    assert once == again
    assert list(once.offsets.items()) == list(again.offsets.items())


def test_planning_twice_gives_the_same_offsets_byte_for_byte():
    rng = random.Random(7)
    buffers = [Buffer(f"v{i}", rng.randint(1, 10_000), i, i + rng.randint(0, 5)) for i in range(200)]
    assert repr(plan(buffers)) == repr(plan(list(reversed(buffers))))


# ------------------------------------------------------------------ timeline

def test_timeline_draws_byte_ranges_and_lifetimes_by_offset():
    buffers = [Buffer("x", 512, 0, 3), Buffer("y", 1024, 1, 2), Buffer("z", 256, 2, 3), Buffer("out", 512, 3, 4)]
    assert timeline(buffers, plan(buffers)) == (
        "arena 1,792 bytes, 4 buffers, strategy greedy-by-size\n"
        "buffer           bytes  steps 0..4\n"
        "y       [    0, 1,024)  .##..\n"
        "out     [    0,   512)  ...##\n"
        "x       [1,024, 1,536)  ####.\n"
        "z       [1,536, 1,792)  ..##.")


def test_timeline_folds_steps_into_columns_when_there_are_more_than_its_width():
    buffers = [Buffer("early", 64, 0, 1), Buffer("late", 64, 6, 9)]
    text = timeline(buffers, plan(buffers), width=5)
    assert text.splitlines()[1].endswith("steps 0..9 (2 per column)")
    assert [line[-5:] for line in text.splitlines()[2:]] == ["#....", "...##"]
