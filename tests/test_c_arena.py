"""The C plan's arena, kernel scratch included, stays within 1.10x of the
live-set lower bound on every sample at several sequence lengths (16, 64,
256 steps, and each sample's declared bound), and `nnc summary -t c`
reports that arena. The kernels that keep it there stay exact: attention
one query row at a time (keys and values as its only [T, ...] scratch),
stacked and two-way recurrent layers in their output alone (the top layer's
reverse direction over blocks whose lower-layer rows are recomputed from
saved states, at any block length, with the tile on the stack or in the
arena), 1-d convolutions with a panel cut to the room beside the live
values; against PyTorch (1e-4) and, for the recurrent stacks and attention,
clean under the address and undefined-behaviour sanitizers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.compiler.build import compile_plan
from nnc.compiler.cli import main
from nnc.compiler.codegen import c as c_gen
from nnc.compiler.frontend import check
from nnc.compiler.memory import unbounded

from conftest import HAS_CC

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted(p.stem for p in (ROOT / "samples").glob("*.nn"))
LENGTHS = (16, 64, 256)
LIMIT = 1.10


def _cases() -> list[tuple[str, dict[str, int]]]:
    """(sample, dims): every sample once without named dimensions, else at
    each of LENGTHS (capped by a declared bound) and at its declared bound."""
    cases = []
    for name in SAMPLES:
        graph = check(ROOT / "samples" / f"{name}.nn", {}).graph
        names = sorted(unbounded(graph, {}))
        if not names:
            cases.append((name, {}))
            continue
        cap = min((graph.bounds.get(n, 10 ** 9) for n in names), default=10 ** 9)
        seen = []
        for t in LENGTHS:
            dims = {n: min(t, cap) for n in names}
            if dims not in seen:
                seen.append(dims)
        if graph.bounds:
            seen.append({})
        cases += [(name, dims) for dims in seen]
    return cases


CASES = _cases()


@pytest.mark.parametrize("name,dims", CASES, ids=[f"{n}-{d or 'declared'}" for n, d in CASES])
def test_every_sample_c_arena_with_scratch_is_within_ten_percent_of_the_lower_bound(name, dims):
    plan = compile_plan(ROOT / "samples" / f"{name}.nn", target="c", dims=dims, render=False)
    lay = plan.layout
    assert lay.plan.arena_bytes <= LIMIT * lay.lower_bound_bytes, \
        f"{name} {dims}: arena {lay.plan.arena_bytes} B, lower bound {lay.lower_bound_bytes} B " \
        f"({lay.plan.arena_bytes / lay.lower_bound_bytes:.2f}x); scratch: " \
        f"{ {b.name: b.size for b in lay.buffers if '#' in b.name} }"


def test_the_figures_scale_with_the_batch_so_the_ratio_holds_at_any_batch():
    one = compile_plan(ROOT / "samples" / "bilstm_tagger.nn", target="c", dims={"T": 64}, render=False)
    f = one.layout.figures(8)
    assert f["arena_bytes"] == 8 * one.layout.plan.arena_bytes
    assert f["arena_bytes"] <= LIMIT * f["lower_bound_bytes"]


@pytest.mark.parametrize("target", ["c", "numpy"])
def test_summary_reports_the_arena_of_the_chosen_target(capsys, target):
    path = ROOT / "samples" / "transformer.nn"
    assert main(["summary", str(path), "-t", target, "--json", "--batch", "2"]) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    plan = compile_plan(path, target=target, batch=2, render=False)
    assert memory["arena_bytes"] == plan.layout.figures(2)["arena_bytes"]
    if target == "c":
        assert memory["arena_bytes"] <= LIMIT * memory["lower_bound_bytes"]


# ------------------------------------------------------------------ the kernels behind it stay exact

needs_cc = pytest.mark.skipif(not HAS_CC, reason="no C compiler")


def _torch():
    return pytest.importorskip("torch")


def _stack_source(kind: str, hidden: int, layers: int, features: int) -> str:
    word = ", nonlinearity=relu" if kind == "rnn" else ""
    return (f"model m(x: [T, {features}]) {{\n"
            f"    return x -> r: {kind}({hidden}{word}, layers={layers}, bidirectional=true)\n}}\n")


def _tile_for(kind: str, hidden: int, layers: int, seg: int, block: int = 1) -> int:
    """A TILE_FLOATS that holds the tile for blocks of `block` steps and exactly `seg` rows of the ring."""
    return c_gen.rnn_tile(kind, {"hidden": hidden, "layers": layers, "bidirectional": True}, block) + seg * hidden


@needs_cc
@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("layers", [2, 3])
@pytest.mark.parametrize("tile", ["seg2", "seg5", "arena", "seg2-block4"])
def test_two_way_stacks_recompute_their_blocks_exactly(monkeypatch, kind, layers, tile):
    torch = _torch()
    hidden, features, bound = 6, 5, 13
    limit = {"seg2": _tile_for(kind, hidden, layers, 2), "seg5": _tile_for(kind, hidden, layers, 5), "arena": 0,
             "seg2-block4": _tile_for(kind, hidden, layers, 2, 4)}
    monkeypatch.setattr(c_gen, "TILE_FLOATS", limit[tile])
    if tile == "seg2-block4":      # blocks of 4 steps over a ring of 2 rows: the kernel takes blocks of 2
        monkeypatch.setattr(c_gen, "_pick_block", lambda plans: plans[0])
    src = _stack_source(kind, hidden, layers, features)
    plan = compile_plan(src, target="c", dims={"T": bound}, render=False)
    node = next(n for n in plan.graph.nodes if n.op.name == kind)
    rnn = c_gen.rnn_plan(node, plan.graph)
    assert rnn.on_stack == (tile != "arena")
    assert rnn.block == (4 if tile == "seg2-block4" else 1)
    assert 2 <= rnn.seg < bound                      # blocks are recomputed
    scratch = {b.name.split("#")[1]: b.size for b in plan.layout.buffers if "#" in b.name}
    assert scratch.get("mid", 0) == (bound * 2 * hidden * 4 if layers > 2 else 0)
    assert "gates" not in scratch and "seq" not in scratch and "rev" not in scratch

    torch.manual_seed(layers)
    kw = {"nonlinearity": "relu"} if kind == "rnn" else {}
    twin = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "rnn": torch.nn.RNN}[kind](
        features, hidden, num_layers=layers, bidirectional=True, batch_first=True, **kw)
    model = nnc.build(src, target="c", batch=2, dims={"T": bound})
    model.load_weights({f"r.{k}": v.detach().numpy() for k, v in twin.state_dict().items()})
    for t in (bound, 12, 11, 7, 5, 2, 1):          # every block layout up to the bound, and shorter than a block
        x = np.random.default_rng(t).standard_normal((2, t, features)).astype(np.float32)
        with torch.no_grad():
            want = twin(torch.from_numpy(x))[0].numpy()
        got = model(x)
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), (t, np.abs(got - want).max())


@pytest.mark.parametrize("kind,hidden,bound", [("lstm", 80, 100), ("lstm", 80, 200), ("gru", 100, 200),
                                               ("gru", 96, 200), ("lstm", 64, 100)])
def test_blocks_of_input_projections_never_grow_a_two_way_stacks_arena(kind, hidden, bound):
    # a block's gate vectors take stack tile rows from the recomputed layer's ring, whose saved
    # states then go to the arena: a stack takes the largest block that adds nothing there (blocks
    # of 4 took LSTM-80 at T = 100 to 1.48x), and the saved states stay within the room even when
    # the ring has no arena rows
    src = f"model m(x: [T, 32]) {{\n    return x -> r: {kind}({hidden}, layers=2, bidirectional=true)\n}}\n"
    lay = compile_plan(src, target="c", dims={"T": bound}, render=False).layout
    assert lay.plan.arena_bytes <= 1.10 * lay.lower_bound_bytes, (lay.plan.arena_bytes, lay.lower_bound_bytes)


@needs_cc
@pytest.mark.parametrize("block", [1, 2, 4])
@pytest.mark.parametrize("kind,hidden,layers,bi", [("lstm", 20, 2, True), ("gru", 28, 3, False),
                                                   ("rnn", 24, 1, True), ("gru", 20, 3, True)])
def test_input_projections_in_blocks_of_steps_match_pytorch_at_every_remainder(monkeypatch, block, kind, hidden,
                                                                             layers, bi):
    # nnc_rnn_proj: a stack's input projections for `block` steps in one pass over the weights, in
    # place (one-way), backwards, and from two parts (the ring row and the reverse row above two-way
    # layers); gate widths of 80-112 floats take both of its column blocks
    torch = _torch()
    monkeypatch.setattr(c_gen, "RNN_BLOCK", block)
    kw = {"nonlinearity": "relu"} if kind == "rnn" else {}
    torch.manual_seed(hidden)
    twin = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "rnn": torch.nn.RNN}[kind](
        7, hidden, num_layers=layers, bidirectional=bi, batch_first=True, **kw)
    word = ", nonlinearity=relu" if kind == "rnn" else ""
    src = (f"model m(x: [T, 7]) {{\n    return x -> r: {kind}({hidden}{word}, layers={layers}, "
           f"bidirectional={str(bi).lower()})\n}}\n")
    code = compile_plan(src, target="c", dims={"T": 13}).files["m.c"]
    assert f"w, NULL, NULL, 0, v_r, tile, {block}, " in code      # the blocks this test asks for
    model = nnc.build(src, target="c", batch=2, dims={"T": 13})
    model.load_weights({f"r.{k}": v.detach().numpy() for k, v in twin.state_dict().items()})
    for t in (13, 9, 8, 7, 6, 5, 3, 2, 1):
        x = np.random.default_rng(t).standard_normal((2, t, 7)).astype(np.float32)
        with torch.no_grad():
            want = twin(torch.from_numpy(x))[0].numpy()
        got = model(x)
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), (t, np.abs(got - want).max())


@needs_cc
@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("bi", [False, True])
def test_stacks_with_one_hidden_unit_match_pytorch(kind, bi):
    # one gate column (rnn with hidden 1) is a dot product, not a padded matrix-vector product
    torch = _torch()
    kw = {"nonlinearity": "tanh"} if kind == "rnn" else {}
    torch.manual_seed(1)
    twin = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "rnn": torch.nn.RNN}[kind](
        3, 1, num_layers=2, bidirectional=bi, batch_first=True, **kw)
    src = f"model m(x: [T, 3]) {{\n    return x -> r: {kind}(1, layers=2, bidirectional={str(bi).lower()})\n}}\n"
    model = nnc.build(src, target="c", dims={"T": 6})
    model.load_weights({f"r.{k}": v.detach().numpy() for k, v in twin.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((1, 6, 3)).astype(np.float32)
    with torch.no_grad():
        want = twin(torch.from_numpy(x))[0].numpy()
    assert np.abs(model(x) - want).max() < 1e-5


@needs_cc
@pytest.mark.parametrize("causal", [False, True])
def test_attention_scratch_is_its_keys_and_values_and_it_matches_pytorch(causal):
    torch = _torch()
    t, e, heads = 11, 16, 4
    src = f"model m(x: [T, {e}]) {{\n    return x -> a: attention({heads}, causal={str(causal).lower()})\n}}\n"
    plan = compile_plan(src, target="c", dims={"T": t}, render=False)
    scratch = {b.name: b.size for b in plan.layout.buffers if "#" in b.name}
    assert scratch == {"a#kv": t * 2 * e * 4, "a#query": e * 4, "a#row": t * 4}
    torch.manual_seed(0)
    twin = torch.nn.MultiheadAttention(e, heads, batch_first=True)
    model = nnc.build(src, target="c", dims={"T": t})
    model.load_weights({f"a.{k}": v.detach().numpy() for k, v in twin.state_dict().items()})
    for n in (t, 4):
        x = np.random.default_rng(n).standard_normal((1, n, e)).astype(np.float32)
        mask = torch.triu(torch.ones(n, n, dtype=torch.bool), 1) if causal else None
        with torch.no_grad():
            xt = torch.from_numpy(x)
            want = twin(xt, xt, xt, attn_mask=mask, need_weights=False)[0].numpy()
        assert np.abs(model(x) - want).max() < 1e-5


@needs_cc
def test_recurrent_stacks_and_attention_are_clean_under_sanitizers(monkeypatch, tmp_path):
    from test_c_plan import SANITIZE, build_harness, call, sanitizers_work
    if not sanitizers_work():
        pytest.skip("the C compiler cannot build with -fsanitize=address,undefined")
    sources = {
        "bi": ("model m(x: [T, 5]) {\n    r: lstm(6, layers=3, bidirectional=true)\n    d: dense(3)\n}\n",
               _tile_for("lstm", 6, 3, 3)),         # three blocks of 3 and one of 1 at T = 10: recomputed
        "gru": ("model m(x: [T, 5]) {\n    r: gru(6, layers=2, bidirectional=true)\n}\n", 0),   # tile in the arena
        "att": ("model m(x: [T, 8]) {\n    a: attention(2)\n    c: attention(2, causal=true)\n}\n", None),
    }
    for key, (src, tile) in sources.items():
        if tile is not None:
            monkeypatch.setattr(c_gen, "TILE_FLOATS", tile)
        folder = tmp_path / key
        folder.mkdir()
        exe = build_harness("m", folder, SANITIZE, source=src, dims={"T": 10})
        model = nnc.build(src, target="c", dims={"T": 10}, batch=3)
        x = np.random.default_rng(3).standard_normal((3, 10, model.input_shapes["x"][1])).astype(np.float32)
        np.testing.assert_allclose(call(exe, "forward", x, folder), np.asarray(model(x)).reshape(-1),
                                   rtol=1e-5, atol=1e-6)


def test_the_room_of_a_graph_is_kept_per_thread(monkeypatch):
    """The room a kernel's scratch may take (and the share of it, from two trial layouts) is worked
    out once per graph and kept for the layout and the code generated for it. Another thread
    compiling another model must not replace it: a kernel could then take more scratch than the
    layout gave it. Here the other thread's graph leaves this thread's entry in place (no recount)."""
    import threading
    from nnc.compiler import memory
    a = check(ROOT / "samples" / "unet.nn", {}).graph
    b = check(ROOT / "samples" / "resnet18.nn", {}).graph
    conv = next(n for n in a.nodes if n.op.name == "conv2d")
    before = c_gen._kernel_room(conv, a)
    counted = []
    profile = memory.live_profile
    monkeypatch.setattr(memory, "live_profile", lambda g: counted.append(g) or profile(g))
    other = threading.Thread(target=lambda: c_gen._kernel_room(next(iter(b.nodes)), b))
    other.start()
    other.join()
    assert counted == [b]                        # the other thread worked out its own graph's room ...
    assert c_gen._kernel_room(conv, a) == before and counted == [b]      # ... and this one kept its own
