"""The sample models' PyTorch twins, their seeded weights and the reference data.

Pins: the twins have the published parameter counts and the output shapes of
their samples; `seeded_state_dict` is deterministic and independent of key
order; `tests/data/<sample>.npz` is what `scripts/make_reference.py` makes from
the twins today; and, once the front end parses, every sample's parameter names
and shapes are exactly its twin's `state_dict`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from torch_twins import DIMS, TIME_STEPS, TWINS, load_seeded_weights, seeded_state_dict

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
DATA = Path(__file__).resolve().parent / "data"

# Per example, as the sample's last statement produces it.
OUTPUT_SHAPES = {
    "mlp": (10,),
    "lenet": (10,),
    "resnet18": (1000,),
    "mobilenetv2": (1000,),
    "wavenet": (1, TIME_STEPS),
    "gru": (TIME_STEPS, 1),
    "lstm": (TIME_STEPS, 4),
    "concat": (10,),
    "unet": (1, 32, 32),
}


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def learnable_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def twin_shapes(sample: str) -> dict[str, tuple[int, ...]]:
    factory, _ = TWINS[sample]
    return {k: tuple(v.shape) for k, v in factory().state_dict().items()}


# ---------------------------------------------------------------- the twins

@pytest.mark.parametrize("sample, count", [
    ("resnet18", 11_689_512),
    ("mobilenetv2", 3_504_872),
    ("lenet", 61_706),
])
def test_twin_has_the_published_parameter_count(torch, sample, count):
    factory, _ = TWINS[sample]
    assert learnable_count(factory()) == count


def test_resnet18_twin_uses_torchvision_names(torch):
    keys = twin_shapes("resnet18")
    assert keys["conv1.weight"] == (64, 3, 7, 7)
    assert keys["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert keys["layer2.0.downsample.1.running_var"] == (128,)
    assert "layer1.0.downsample.0.weight" not in keys
    assert keys["fc.weight"] == (1000, 512)


def test_mobilenetv2_twin_numbers_the_expansion_free_block_from_its_depthwise_conv(torch):
    keys = twin_shapes("mobilenetv2")
    assert keys["features.1.conv.0.0.weight"] == (32, 1, 3, 3)
    assert keys["features.1.conv.1.weight"] == (16, 32, 1, 1)
    assert keys["features.1.conv.2.weight"] == (16,)
    assert keys["features.2.conv.0.0.weight"] == (96, 16, 1, 1)
    assert keys["features.2.conv.1.0.weight"] == (96, 1, 3, 3)
    assert keys["features.2.conv.3.weight"] == (24,)
    assert keys["classifier.1.weight"] == (1000, 1280)


@pytest.mark.parametrize("sample", list(TWINS))
def test_twin_maps_a_batch_of_inputs_to_the_sample_output_shape(torch, sample):
    factory, input_shapes = TWINS[sample]
    module = factory().eval()
    inputs = [torch.randn(2, *shape) for shape in input_shapes.values()]
    with torch.no_grad():
        y = module(*inputs)
    assert tuple(y.shape) == (2, *OUTPUT_SHAPES[sample])


@pytest.mark.parametrize("sample", list(TWINS))
def test_every_twin_has_a_sample_file(sample):
    assert (SAMPLES / f"{sample}.nn").is_file()


# ---------------------------------------------------------------- seeded weights

SHAPES = {
    "conv.weight": (8, 3, 3, 3),
    "conv.bias": (8,),
    "bn.weight": (8,),
    "bn.bias": (8,),
    "bn.running_mean": (8,),
    "bn.running_var": (8,),
    "bn.num_batches_tracked": (),
    "rec.weight_ih_l0": (12, 2),
    "rec.bias_ih_l0": (12,),
}


def test_seeded_state_dict_repeats_for_the_same_seed_and_differs_for_another():
    a, b, c = seeded_state_dict(SHAPES, 7), seeded_state_dict(SHAPES, 7), seeded_state_dict(SHAPES, 8)
    assert all(np.array_equal(a[k], b[k]) for k in SHAPES)
    assert not np.array_equal(a["conv.weight"], c["conv.weight"])


def test_seeded_state_dict_draws_each_key_independently_of_the_others():
    full = seeded_state_dict(SHAPES, 3)
    keys = [k for k in reversed(SHAPES) if not k.endswith("num_batches_tracked")]
    partial = seeded_state_dict({k: SHAPES[k] for k in keys}, 3)
    assert all(np.array_equal(full[k], partial[k]) for k in keys)


def test_seeded_state_dict_follows_the_documented_distributions():
    w = seeded_state_dict(SHAPES, 0)
    assert all(v.dtype == np.float32 for k, v in w.items() if not k.endswith("num_batches_tracked"))
    assert np.abs(w["conv.weight"]).max() <= np.sqrt(3 / 27)
    assert np.abs(w["conv.weight"]).max() > 1 / np.sqrt(27)        # wider than PyTorch's default
    assert np.abs(w["conv.bias"]).max() <= 1 / np.sqrt(27)
    assert np.abs(w["rec.bias_ih_l0"]).max() <= 1 / np.sqrt(2)
    assert w["bn.weight"].min() >= 0.5 and w["bn.weight"].max() <= 1.5
    assert w["bn.running_var"].min() >= 0.5 and w["bn.running_var"].max() <= 1.5
    assert w["bn.num_batches_tracked"].dtype == np.int64 and w["bn.num_batches_tracked"].shape == ()


def test_seeded_state_dict_rejects_a_bias_without_its_weight():
    with pytest.raises(ValueError, match="fc.weight"):
        seeded_state_dict({"fc.bias": (4,)}, 0)


# ---------------------------------------------------------------- reference data

@pytest.mark.parametrize("sample", list(TWINS))
def test_reference_data_is_what_the_twin_computes_from_the_seed(torch, sample):
    factory, input_shapes = TWINS[sample]
    with np.load(DATA / f"{sample}.npz", allow_pickle=False) as data:
        arrays = dict(data)
    module = factory()
    load_seeded_weights(module, int(arrays["seed"]))
    module.eval()
    inputs = [arrays[f"input_{name}"] for name in input_shapes]
    for x, shape in zip(inputs, input_shapes.values()):
        assert x.shape == (2, *shape) and x.dtype == np.float32
    with torch.no_grad():
        y = module(*(torch.from_numpy(x) for x in inputs))
    expected = arrays["output_0"]
    assert expected.shape == (2, *OUTPUT_SHAPES[sample])
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sample", list(TWINS))
def test_reference_output_depends_on_the_input(sample):
    """Seeded weights that drowned the input would make the data useless as a check."""
    with np.load(DATA / f"{sample}.npz", allow_pickle=False) as data:
        y = data["output_0"]
    assert np.abs(y[0] - y[1]).mean() > 1e-3 * np.abs(y).mean() + 1e-6


def test_reference_data_stays_small():
    assert sum(p.stat().st_size for p in DATA.glob("*.npz")) < 2_000_000


# ---------------------------------------------------------------- samples vs twins

@pytest.mark.parametrize("sample", list(TWINS))
def test_sample_parameters_are_exactly_the_twin_state_dict(torch, sample):
    frontend = pytest.importorskip("nnc.compiler.frontend")
    checked = frontend.check(SAMPLES / f"{sample}.nn", DIMS.get(sample))
    assert checked.warnings == ()
    ours = {k: tuple(p.shape) for k, p in checked.graph.param_specs().items()}
    theirs = {k: s for k, s in twin_shapes(sample).items() if not k.endswith("num_batches_tracked")}
    assert ours == theirs
