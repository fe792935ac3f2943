"""The training memory plan: which tensors share memory, lifetimes over the
training schedule, and the figures of `nnc summary --train`."""

from __future__ import annotations

from pathlib import Path

from nnc.compiler import plan as planner
from nnc.compiler.autodiff import differentiate
from nnc.compiler.codegen import train_numpy
from nnc.compiler.frontend import check
from nnc.compiler.train_memory import train_layout

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _layout(text: str, batch: int = 4, loss: str = "mse", **kw):
    tg = differentiate(check(text).graph, loss)
    return tg, train_layout(tg, batch, scratch=train_numpy.scratch_bytes, **kw)


def test_relu_runs_in_place_because_its_backward_reads_only_its_output():
    tg, lay = _layout("model m(x: [8]) {\n a: dense(8) -> relu\n b: dense(4)\n}")
    assert lay.same_memory("relu_0", "a")


def test_gelu_keeps_its_input_for_backward_so_it_does_not_run_in_place():
    tg, lay = _layout("model m(x: [8]) {\n a: dense(8) -> gelu\n b: dense(4)\n}")
    assert not lay.same_memory("gelu_0", "a")


def test_flatten_is_a_view_forward_and_its_gradient_a_view_backward():
    tg, lay = _layout("model m(x: [2, 4, 4]) {\n c: conv2d(3, 3)\n flatten\n d: dense(2)\n}")
    assert lay.same_memory("flatten_0", "c")
    assert lay.same_memory("d:flatten_0", "d:c")


def test_values_read_by_backward_live_until_their_backward_step():
    tg, lay = _layout("model m(x: [8]) {\n a: dense(8) -> tanh\n b: dense(4)\n}")
    b_backward = next(s.index for s in tg.steps if s.label == "backward b")
    buffer = next(b for b in lay.buffers if b.name == lay.places["tanh_0"])
    assert buffer.last >= b_backward


def test_parameter_gradients_die_at_their_update_and_kept_nowhere_else():
    tg, lay = _layout("model m(x: [8]) {\n a: dense(8) -> tanh\n b: dense(4)\n}")
    for s in tg.steps:
        if s.kind.value == "update":
            buffer = next(b for b in lay.buffers if b.name == lay.places[s.reads[0]])
            assert buffer.last == s.index


def test_every_training_plan_is_verified_and_scratch_lives_for_its_step():
    tg, lay = _layout((SAMPLES / "concat.nn").read_text(), batch=2, loss="cross_entropy")
    planner.verify_plan(lay.buffers, lay.plan)
    scratch = [b for b in lay.buffers if "#" in b.name]
    assert scratch and all(b.first == b.last for b in scratch)


def test_parameter_gradients_do_not_scale_with_the_batch_but_activations_do():
    _, small = _layout("model m(x: [8]) {\n a: dense(8) -> tanh\n b: dense(4)\n}", batch=1)
    _, big = _layout("model m(x: [8]) {\n a: dense(8) -> tanh\n b: dense(4)\n}", batch=10)
    assert small.sizes["d:a.weight"] == big.sizes["d:a.weight"] == 8 * 8 * 4
    assert big.sizes["a"] == 10 * small.sizes["a"]


def test_share_false_gives_every_tensor_its_own_buffer():
    tg, lay = _layout("model m(x: [8]) {\n a: dense(8) -> relu\n b: dense(4)\n}", share=False)
    assert not lay.same_memory("relu_0", "a")
