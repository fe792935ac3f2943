"""The execution plans end to end: samples against PyTorch's stored outputs (on
both targets), passes that keep the function, deterministic and golden
modules, weights and the Python API's errors (on both targets), and a call
that allocates nothing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.compiler.build import compile_plan
from nnc.runtime.weights import WeightsError

from torch_twins import DIMS, seeded_state_dict

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SAMPLES = ["mlp", "lenet", "concat", "resnet18", "mobilenetv2", "wavenet", "gru", "lstm"]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def seeded(model, seed: int) -> dict[str, np.ndarray]:
    return seeded_state_dict({k: v.shape for k, v in model.state_dict().items()}, seed)


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_matches_pytorch_reference_output(name, target):
    data = np.load(DATA / f"{name}.npz")
    model = nnc.build(ROOT / "samples" / f"{name}.nn", target=target, batch=2, dims=DIMS.get(name))
    model.load_weights(seeded(model, int(data["seed"])))
    y = model(data["input_x"])
    assert y.shape == data["output_0"].shape
    assert rel_err(y, data["output_0"]) < 1e-4


@pytest.mark.parametrize("name", ["lenet", "resnet18", "concat", "wavenet"])
def test_passes_keep_the_function(name):
    data = np.load(DATA / f"{name}.npz")
    fast = nnc.build(ROOT / "samples" / f"{name}.nn", batch=2, dims=DIMS.get(name))
    slow = nnc.build(ROOT / "samples" / f"{name}.nn", batch=2, dims=DIMS.get(name), optimize=False)
    w = seeded(fast, int(data["seed"]))
    fast.load_weights(w)
    slow.load_weights(w)
    assert rel_err(fast(data["input_x"]), slow(data["input_x"])) < 1e-5


def test_optimised_plan_folds_batchnorm_and_fuses_activations():
    plan = compile_plan(ROOT / "samples" / "resnet18.nn")
    ops = [n.op.name for n in plan.graph.nodes]
    assert "batchnorm" not in ops and "relu" not in ops
    assert plan.graph.node("conv1").norm.label == "bn1"
    assert plan.graph.node("conv1").activation.op == "relu"


def test_generated_module_is_deterministic():
    a = compile_plan(ROOT / "samples" / "mobilenetv2.nn").files
    b = compile_plan(ROOT / "samples" / "mobilenetv2.nn").files
    assert a == b


@pytest.mark.parametrize("name", ["lenet", "concat"])
def test_generated_module_golden(name, golden, monkeypatch):
    monkeypatch.chdir(ROOT)
    plan = compile_plan(f"samples/{name}.nn", bundle_weights=True)
    (text,) = plan.files.values()
    golden.check(f"numpy/{plan.name}.py.txt", text)


def test_a_call_with_out_allocates_no_activation_memory():
    model = nnc.build(ROOT / "samples" / "resnet18.nn")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    y = np.empty((1, 1000), np.float32)
    first = model(x)
    tracemalloc.start()
    second = model(x, out=y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert second is y                          # the caller's array, filled
    np.testing.assert_array_equal(y, first)
    assert peak < 64 * 1024                     # the smallest activation is 2 KiB, the largest 3 MiB


def test_concat_inputs_are_written_into_their_slices():
    plan = compile_plan(ROOT / "samples" / "concat.nn")
    places = plan.layout.places
    assert places["mix1.branch1"].within == "mix1.concat_0"
    assert places["mix1.branch3.1"].within == "mix1.concat_0"
    assert places["mix1.branch3.1"].channels == (8, 24)


def test_views_share_memory_and_arena_is_below_naive():
    plan = compile_plan(ROOT / "samples" / "lenet.nn")
    assert plan.layout.places["flatten_0"] == plan.layout.places["avgpool2d_1"]
    figures = plan.layout.figures(1)
    assert figures["lower_bound_bytes"] <= figures["arena_bytes"]
    assert figures["lower_bound_bytes"] < figures["naive_bytes"]


def test_mlp_chain_arena_equals_lower_bound():
    figures = compile_plan(ROOT / "samples" / "mlp.nn").layout.figures(1)
    assert figures["arena_bytes"] == figures["lower_bound_bytes"]


# ------------------------------------------------------------------ the Python API

MLP = "model tiny(x: [4]) {\n    fc: dense(3) -> relu\n    out: dense(2)\n}\n"


def test_build_from_source_text_and_named_inputs(target):
    model = nnc.build(MLP, target=target, batch=3)
    assert model.input_shapes == {"x": (4,)} and model.output_shapes == {"out": (2,)}
    x = np.ones((3, 4))
    assert np.array_equal(model(x), model(x=x))


def test_inputs_of_any_real_dtype_are_converted(target):
    model = nnc.build(MLP, target=target, batch=2)
    x = np.arange(8).reshape(2, 4)
    expected = model(x.astype(np.float32)).copy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-6)
    np.testing.assert_allclose(model(x.astype(np.float64)), expected, rtol=1e-6)


def test_wrong_shape_raises_value_error_naming_expected_shape(target):
    model = nnc.build(MLP, target=target, batch=2)
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        model(np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="batch"):
        model(np.ones((3, 4), np.float32))


def test_several_outputs_come_back_as_a_tuple(target):
    src = "model two(x: [4]) {\n    a = dense(3)\n    b = x -> dense(2)\n    return a, b\n}\n"
    model = nnc.build(src, target=target)
    a, b = model(np.ones((1, 4)))
    assert a.shape == (1, 3) and b.shape == (1, 2)
    assert model.output_shapes == {"a": (3,), "b": (2,)}


# ------------------------------------------------------------------ weights

def test_state_dict_round_trips_through_npz_and_safetensors(tmp_path, target):
    from safetensors.numpy import save_file
    model = nnc.build(MLP, target=target)
    state = model.state_dict()
    assert list(state) == ["fc.weight", "fc.bias", "out.weight", "out.bias"]
    scaled = {k: v * 2 for k, v in state.items()}
    np.savez(tmp_path / "w.npz", **scaled)
    save_file(scaled, str(tmp_path / "w.safetensors"))
    for path in ("w.npz", "w.safetensors"):
        other = nnc.build(MLP, target=target, weights=tmp_path / path)
        for k in state:
            np.testing.assert_array_equal(other.state_dict()[k], scaled[k])


def test_strict_loading_reports_every_problem_at_once(target):
    model = nnc.build(MLP, target=target)
    state = model.state_dict()
    del state["fc.bias"]
    state["out.weight"] = np.zeros((5, 5), np.float32)
    state["extra.weight"] = np.zeros(1, np.float32)
    state["fc.num_batches_tracked"] = np.array(3)
    with pytest.raises(WeightsError) as info:
        model.load_weights(state)
    text = str(info.value)
    assert "fc.bias" in text and "out.weight" in text and "extra.weight" in text
    assert "num_batches_tracked" not in text


def test_corrupt_and_pickled_weight_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(WeightsError, match="bad.npz"):
        nnc.build(MLP, weights=bad)
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, **{"fc.weight": np.array([object()], dtype=object)})
    with pytest.raises(WeightsError, match="obj.npz"):
        nnc.build(MLP, weights=pickled)


def test_default_initialisation_is_seeded_and_in_pytorch_ranges():
    a = nnc.build(ROOT / "samples" / "lenet.nn").state_dict()
    b = nnc.build(ROOT / "samples" / "lenet.nn").state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert np.abs(a["fc1.weight"]).max() <= 1 / np.sqrt(400)
    bn = nnc.build(ROOT / "samples" / "resnet18.nn").state_dict()
    assert (bn["bn1.running_var"] == 1).all() and (bn["bn1.running_mean"] == 0).all()


# ------------------------------------------------------------------ the command line

def test_compile_writes_an_importable_module_with_its_weights(tmp_path):
    out = tmp_path / "build"
    proc = subprocess.run([sys.executable, "-m", "nnc", "compile", str(ROOT / "samples" / "lenet.nn"),
                           "-t", "numpy", "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (out / "lenet.py").exists() and (out / "lenet.npz").exists()
    spec = importlib.util.spec_from_file_location("lenet", out / "lenet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Model(batch=2)
    reference = nnc.build(ROOT / "samples" / "lenet.nn", batch=2)
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(model(x), reference(x), rtol=1e-6)


def test_run_prints_and_saves_output(tmp_path):
    x = np.random.default_rng(2).standard_normal((784,)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-m", "nnc", "run", str(ROOT / "samples" / "mlp.nn"),
                           "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(y, nnc.build(ROOT / "samples" / "mlp.nn")(x[None]), rtol=1e-6)


def test_run_with_a_wrong_input_exits_1_without_traceback(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 3), np.float32))
    proc = subprocess.run([sys.executable, "-m", "nnc", "run", str(ROOT / "samples" / "mlp.nn"),
                           "--input", str(tmp_path / "x.npy")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "784" in proc.stderr


def test_the_module_says_how_to_regenerate_it_with_every_flag_it_was_compiled_with():
    plan = compile_plan(ROOT / "samples" / "gru.nn", target="numpy", stream=True, dims={"T": 16}, batch=3,
                        limits={"arena": 1 << 20})
    text = next(iter(plan.files.values()))
    assert "-t numpy --stream --dim T=16 --batch 3 --max-memory 1048576`" in text
    assert "ARENA_LIMIT = 1048576" in text


RUNTIME_ONLY = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "nnc.compiler" or name.startswith("nnc.compiler.") or name in ("lark", "jinja2"):
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, sys.argv[1])
import numpy as np
import {name}
model = {name}.Model(batch=2)
np.save(sys.argv[2], model(np.load(sys.argv[3])))
try:
    model(np.zeros((3, 1), np.float32))
except ValueError as e:
    print("refused:", e)
"""


@pytest.mark.parametrize("name", ["lenet", "gru"])
def test_a_generated_module_needs_only_numpy_and_the_runtime(name, tmp_path):
    """INTERFACES.md 7: the module imports NumPy and nnc's runtime package only; with the compiler
    (and lark, jinja2) unimportable it loads its weights, runs and refuses a bad input."""
    dims = DIMS.get(name)
    nnc_args = [f"--dim={k}={v}" for k, v in (dims or {}).items()]
    subprocess.run([sys.executable, "-m", "nnc", "compile", str(ROOT / "samples" / f"{name}.nn"), "-o", str(tmp_path),
                    *nnc_args], check=True, capture_output=True)
    stem = next(tmp_path.glob("*.py")).stem
    model = nnc.build(ROOT / "samples" / f"{name}.nn", batch=2, dims=dims, weights=tmp_path / f"{stem}.npz")
    shape = tuple(d if isinstance(d, int) else dims[d] for d in model.input_shapes["x"])
    x = np.random.default_rng(5).standard_normal((2, *shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "runtime_only.py").write_text(RUNTIME_ONLY.replace("{name}", stem))
    proc = subprocess.run([sys.executable, str(tmp_path / "runtime_only.py"), str(tmp_path), str(tmp_path / "y.npy"),
                           str(tmp_path / "x.npy")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("refused:")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model(x), rtol=1e-6, atol=1e-7)
