"""Weights files and dicts under misuse (issue 9, item 5): every bad input is a
`WeightsError` naming the file and the keys, found before any array data is
read; valid files in every accepted dtype and layout load exactly.

Files are recognised by content (a `.npy` or safetensors file named `.npz`,
a PyTorch checkpoint, a text file), headers are checked before data (a member
declaring 2^36 elements, a deflate bomb, an unexpected member that is
garbage), and special files are refused without being opened for reading (a
FIFO would block)."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import threading
import time
import warnings
import zipfile

import numpy as np
import pytest

import nnc
from nnc.compiler.diagnostics import UserError
from nnc.runtime import weights as W
from nnc.runtime.weights import Spec, WeightsError

SPECS = {
    "fc.weight": Spec((3, 4), ("uniform", 0.5)),
    "fc.bias": Spec((3,), ("uniform", 0.5)),
    "out.weight": Spec((2, 3), ("uniform", 0.5)),
    "out.bias": Spec((2,), ("uniform", 0.5)),
}
MLP = "model tiny(x: [4]) {\n    fc: dense(3) -> relu\n    out: dense(2)\n}\n"


def state(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s.shape).astype(np.float32) for k, s in SPECS.items()}


def npy(descr: str, shape: tuple, data: bytes = b"", fortran: bool = False) -> bytes:
    """An `.npy` file with a header written by hand (it may lie about its data)."""
    header = repr({"descr": descr, "fortran_order": fortran, "shape": tuple(shape)})
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + data


def npy_of(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=True)
    return buf.getvalue()


def write_zip(path, members: list[tuple[str, bytes]], method=zipfile.ZIP_STORED) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", compression=method) as z:
            for name, data in members:
                z.writestr(name, data)


def valid_members(sd=None, skip=()) -> list[tuple[str, bytes]]:
    sd = state() if sd is None else sd
    return [(f"{k}.npy", npy_of(v)) for k, v in sd.items() if k not in skip]


def load_error(source, specs=SPECS) -> str:
    with pytest.raises(WeightsError) as info:
        W.load(source, specs)
    text = str(info.value)
    assert "allow_pickle" not in text
    return text


# ------------------------------------------------------------------ the error class

def test_weights_error_is_a_user_error_and_a_value_error():
    assert issubclass(WeightsError, UserError) and issubclass(WeightsError, ValueError)


# ------------------------------------------------------------------ recognised by content, not by name

def test_a_single_npy_array_named_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "one.npz"
    path.write_bytes(npy_of(np.zeros((3, 4), np.float32)))
    text = load_error(path)
    assert "one.npz" in text and "holds one array" in text and "not a dict of named arrays" in text


def test_a_single_npy_array_through_build_is_a_weights_error(tmp_path):
    path = tmp_path / "one.npz"
    path.write_bytes(npy_of(np.zeros((3, 4), np.float32)))
    with pytest.raises(WeightsError, match="one.npz"):
        nnc.build(MLP, weights=path)


def test_safetensors_file_named_npz_loads_by_its_content(tmp_path):
    from safetensors.numpy import save_file
    sd = state()
    path = tmp_path / "actually_safetensors.npz"
    save_file(sd, str(path))
    got = W.load(path, SPECS)
    for k in sd:
        np.testing.assert_array_equal(got[k], sd[k])


def test_npz_file_named_safetensors_loads_by_its_content(tmp_path):
    sd = state()
    path = tmp_path / "actually_npz.safetensors"
    with open(path, "wb") as f:
        np.savez(f, **sd)
    got = W.load(path, SPECS)
    for k in sd:
        np.testing.assert_array_equal(got[k], sd[k])


def test_a_text_file_is_not_a_weights_file_and_no_pickle_advice(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("fc.weight = [[1, 2, 3, 4]]\n")
    text = load_error(path)
    assert "notes.npz" in text and "text file" in text and "not a weights file (.npz or .safetensors)" in text
    assert "pickle" not in text


@pytest.mark.parametrize("data", [b"\x00\x01\x02\xff" * 8, b"", b"\x89HDF\r\n\x1a\n" + b"\x00" * 8])
def test_unknown_bytes_are_not_a_weights_file(tmp_path, data):
    path = tmp_path / "blob.npz"
    path.write_bytes(data)
    text = load_error(path)
    assert "blob.npz" in text and "not a weights file (.npz or .safetensors)" in text


def test_a_torch_save_zip_checkpoint_says_how_to_export(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    torch.save({k: torch.from_numpy(v) for k, v in state().items()}, path)
    text = load_error(path)
    assert "model.pt" in text and "PyTorch checkpoint" in text
    assert "numpy.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})" in text


def test_a_legacy_torch_save_pickle_says_how_to_export(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.npz"
    torch.save({k: torch.from_numpy(v) for k, v in state().items()}, path, _use_new_zipfile_serialization=False)
    text = load_error(path)
    assert "model.npz" in text and "PyTorch checkpoint" in text and "legacy" in text and "numpy.savez(" in text


def test_any_other_pickle_is_refused_unread_with_the_export_line(tmp_path):
    path = tmp_path / "w.npz"
    path.write_bytes(pickle.dumps({"fc.weight": [[0.0] * 4] * 3}, protocol=4))
    text = load_error(path)
    assert "w.npz" in text and "pickle" in text and "never loaded" in text and "numpy.savez(" in text


def test_a_zip_with_a_data_pkl_member_is_a_pytorch_checkpoint(tmp_path):
    path = tmp_path / "w.npz"
    write_zip(path, [("archive/data.pkl", b"\x80\x02}q\x00."), ("archive/version", b"3\n")])
    assert "PyTorch checkpoint" in load_error(path)


# ------------------------------------------------------------------ special files

def test_a_fifo_is_refused_without_blocking(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    path = tmp_path / "pipe.npz"
    os.mkfifo(path)
    outcome: list[BaseException | None] = []

    def attempt():
        try:
            W.load(path, SPECS)
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            outcome.append(e)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():  # the old code blocks in open(): give it a writer so the thread ends
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
        pytest.fail("loading weights from a FIFO blocked")
    assert isinstance(outcome[0], WeightsError)
    assert "pipe.npz" in str(outcome[0]) and "not a regular file" in str(outcome[0])


def test_a_folder_is_refused_as_a_folder(tmp_path):
    (tmp_path / "w.npz").mkdir()
    text = load_error(tmp_path / "w.npz")
    assert "w.npz" in text and "is a folder" in text


def test_a_device_is_refused(tmp_path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    assert "not a regular file" in load_error("/dev/zero")


def test_a_missing_file_is_named():
    assert "nosuch.npz" in load_error("nosuch.npz") and "does not exist" in load_error("nosuch.npz")


def test_a_path_of_the_wrong_type_is_a_weights_error():
    assert "file path or a dict" in load_error(42)


# ------------------------------------------------------------------ headers before data

def test_a_member_declaring_2_to_the_36_elements_is_refused_from_its_header(tmp_path):
    path = tmp_path / "huge.npz"
    write_zip(path, valid_members(skip={"fc.weight"}) + [("fc.weight.npy", npy("<f4", (2 ** 36,), b"\0" * 64))])
    t = time.perf_counter()
    text = load_error(path)
    assert time.perf_counter() - t < 1
    assert "huge.npz" in text and "`fc.weight` has shape [68719476736], the model expects [3, 4]" in text


def test_a_deflate_bomb_is_refused_before_it_is_unpacked(tmp_path):
    path = tmp_path / "bomb.npz"
    bomb = npy("<f4", (3, 4), b"\0" * 48) + b"\0" * (64 << 20)
    write_zip(path, valid_members(skip={"fc.weight"}) + [("fc.weight.npy", bomb)], zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 200_000
    t = time.perf_counter()
    text = load_error(path)
    assert time.perf_counter() - t < 0.5
    assert "bomb.npz" in text and "fc.weight" in text and "unpacks to" in text


def test_a_central_directory_declaring_a_huge_size_is_refused(tmp_path):
    path = tmp_path / "liar.npz"
    write_zip(path, valid_members())
    data = bytearray(path.read_bytes())
    # the uncompressed size of the first member in the central directory
    cd = data.index(b"PK\x01\x02")
    data[cd + 24:cd + 28] = struct.pack("<I", 0xFFFFFFF0)
    path.write_bytes(bytes(data))
    text = load_error(path)
    assert "liar.npz" in text and "fc.weight" in text


def test_keys_are_checked_before_any_member_is_read(tmp_path):
    path = tmp_path / "extra.npz"
    write_zip(path, valid_members() + [("junk.npy", b"\x93NUMPY\x01\x00 and a broken header")])
    text = load_error(path)
    assert "extra.npz" in text and "unexpected: `junk`" in text


def test_missing_unexpected_and_mismatched_members_are_reported_at_once(tmp_path):
    path = tmp_path / "w.npz"
    sd = state()
    sd["out.weight"] = np.zeros((5, 5), np.float32)
    sd["extra.weight"] = np.zeros(1, np.float32)
    sd["fc.num_batches_tracked"] = np.array(3)
    del sd["fc.bias"]
    np.savez(path, **sd)
    text = load_error(path)
    assert "w.npz" in text and "missing: `fc.bias`" in text and "unexpected: `extra.weight`" in text
    assert "`out.weight` has shape [5, 5]" in text and "num_batches_tracked" not in text


def test_a_zero_d_array_where_a_vector_is_expected_is_a_shape_mismatch(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, **{**state(), "fc.bias": np.float32(1)})
    assert "`fc.bias` has shape [], the model expects [3]" in load_error(path)


def test_duplicate_member_names_are_an_error(tmp_path):
    path = tmp_path / "dup.npz"
    write_zip(path, valid_members() + [("fc.bias.npy", npy_of(np.ones(3, np.float32)))])
    text = load_error(path)
    assert "dup.npz" in text and "`fc.bias` twice" in text


def test_object_arrays_are_refused_without_unpickling_advice(tmp_path):
    path = tmp_path / "obj.npz"
    write_zip(path, valid_members(skip={"fc.bias"}) + [("fc.bias.npy", npy_of(np.array([1, "a", None], object)))])
    text = load_error(path)
    assert "obj.npz" in text and "`fc.bias` holds Python objects" in text and "pickle" not in text


def test_a_truncated_zip_names_the_file(tmp_path):
    path = tmp_path / "cut.npz"
    np.savez(path, **state())
    path.write_bytes(path.read_bytes()[:300])
    assert "cut.npz" in load_error(path)


def test_a_bad_crc_is_an_error(tmp_path):
    path = tmp_path / "crc.npz"
    np.savez(path, **state())
    data = bytearray(path.read_bytes())
    i = data.index(b"\x93NUMPY") + 128 + 5     # inside the first member's array data
    data[i] ^= 0x40
    path.write_bytes(bytes(data))
    text = load_error(path)
    assert "crc.npz" in text and "CRC" in text


def test_a_member_shorter_than_its_header_declares_is_truncated(tmp_path):
    path = tmp_path / "short.npz"
    write_zip(path, valid_members(skip={"fc.weight"}) + [("fc.weight.npy", npy("<f4", (3, 4), b"\0" * 20))])
    text = load_error(path)
    assert "short.npz" in text and "truncated" in text


def test_bzip2_members_are_refused(tmp_path):
    path = tmp_path / "bz.npz"
    write_zip(path, valid_members(), zipfile.ZIP_BZIP2)
    assert "compression method" in load_error(path)


def test_a_nested_zip_member_is_not_an_array(tmp_path):
    inner = io.BytesIO()
    write_zip(inner, valid_members())
    path = tmp_path / "nested.npz"
    write_zip(path, valid_members(skip={"fc.weight"}) + [("fc.weight.npy", inner.getvalue())])
    text = load_error(path)
    assert "nested.npz" in text and "`fc.weight.npy` is not an .npy array" in text


# ------------------------------------------------------------------ dtypes and values

def test_nan_and_inf_weights_are_errors_naming_every_key(tmp_path):
    sd = state()
    sd["fc.bias"][1] = np.nan
    sd["out.weight"][0, 0] = -np.inf
    path = tmp_path / "nan.npz"
    np.savez(path, **sd)
    text = load_error(path)
    assert "nan.npz" in text and "`fc.bias` holds 1 NaN value" in text and "`out.weight` holds 1 infinite value" in text
    assert "`fc.bias`" in load_error(sd)


def test_float64_beyond_float32_range_counts_as_infinite():
    sd = {k: v.astype(np.float64) for k, v in state().items()}
    sd["fc.bias"][0] = 1e300
    assert "`fc.bias` holds 1 infinite value (values beyond float32's range)" in load_error(sd)


def test_float64_and_float16_and_big_endian_arrays_load(tmp_path):
    sd = state()
    mixed = {"fc.weight": sd["fc.weight"].astype(np.float64), "fc.bias": sd["fc.bias"].astype(np.float16),
             "out.weight": sd["out.weight"].astype(">f4"), "out.bias": sd["out.bias"]}
    path = tmp_path / "mixed.npz"
    np.savez(path, **mixed)
    got = W.load(path, SPECS)
    for k, v in mixed.items():
        assert got[k].dtype == np.float32 and got[k].flags.c_contiguous
        np.testing.assert_array_equal(got[k], v.astype(np.float32))


def test_fortran_order_arrays_load_in_the_right_layout(tmp_path):
    sd = state()
    path = tmp_path / "f.npz"
    np.savez(path, **{**sd, "fc.weight": np.asfortranarray(sd["fc.weight"])})
    assert b"'fortran_order': True" in path.read_bytes()
    got = W.load(path, SPECS)
    np.testing.assert_array_equal(got["fc.weight"], sd["fc.weight"])
    assert got["fc.weight"].flags.c_contiguous


def test_compressed_npz_loads(tmp_path):
    sd = state()
    path = tmp_path / "c.npz"
    np.savez_compressed(path, **sd)
    got = W.load(path, SPECS)
    for k in sd:
        np.testing.assert_array_equal(got[k], sd[k])


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint8, np.bool_])
def test_integer_and_boolean_weights_are_errors_naming_the_key(tmp_path, dtype):
    path = tmp_path / "int.npz"
    np.savez(path, **{**state(), "fc.weight": np.ones((3, 4), dtype), "fc.num_batches_tracked": np.array(7)})
    text = load_error(path)
    assert "int.npz" in text and "`fc.weight` holds" in text and "not floating-point numbers" in text
    assert "num_batches_tracked" not in text


def test_complex_weights_are_errors(tmp_path):
    assert "`fc.bias` has dtype complex64" in load_error({**state(), "fc.bias": np.ones(3, np.complex64)})


# ------------------------------------------------------------------ safetensors

def safetensors_bytes(entries: dict, data: bytes) -> bytes:
    header = json.dumps(entries).encode()
    return struct.pack("<Q", len(header)) + header + data


def test_safetensors_bfloat16_and_float16_load_exactly(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    sd = state()
    tensors = {k: torch.from_numpy(v).to(torch.bfloat16 if "weight" in k else torch.float16) for k, v in sd.items()}
    path = tmp_path / "half.safetensors"
    save_file(tensors, str(path))
    got = W.load(path, SPECS)
    for k, t in tensors.items():
        np.testing.assert_array_equal(got[k], t.float().numpy())


def test_safetensors_offsets_outside_the_file_are_refused(tmp_path):
    path = tmp_path / "off.safetensors"
    sd = state()
    entries, data = {}, b""
    for k, v in sd.items():
        entries[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [len(data), len(data) + v.nbytes]}
        data += v.tobytes()
    entries["fc.weight"]["data_offsets"] = [1 << 40, (1 << 40) + 48]
    path.write_bytes(safetensors_bytes(entries, data))
    text = load_error(path)
    assert "off.safetensors" in text and "fc.weight" in text and "offsets" in text


def test_safetensors_header_length_beyond_the_file_is_refused(tmp_path):
    path = tmp_path / "len.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 30) + b'{"a": 1}')
    text = load_error(path)
    assert "len.safetensors" in text and "header length" in text


def test_safetensors_keys_and_shapes_are_checked_before_data(tmp_path):
    path = tmp_path / "keys.safetensors"
    entries = {k: {"dtype": "F32", "shape": [2 ** 36], "data_offsets": [0, 2 ** 38]} for k in SPECS}
    entries["junk"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    path.write_bytes(safetensors_bytes(entries, b"\0" * 4))
    text = load_error(path)
    assert "unexpected: `junk`" in text and "`fc.weight` has shape [68719476736]" in text


def test_safetensors_duplicate_keys_and_integer_dtypes_are_errors(tmp_path):
    path = tmp_path / "dup.safetensors"
    header = b'{"fc.bias": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}, ' \
             b'"fc.bias": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}'
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 12)
    assert "`fc.bias` twice" in load_error(path)
    path.write_bytes(safetensors_bytes({"fc.bias": {"dtype": "I64", "shape": [3], "data_offsets": [0, 24]}},
                                       b"\0" * 24))
    assert "`fc.bias` holds integers (I64)" in load_error(path)


# ------------------------------------------------------------------ dicts given in Python

def test_dict_values_must_be_arrays_of_real_numbers():
    text = load_error({**state(), "fc.bias": "abc", "out.bias": None, "out.weight": [[1.0, 2.0], [3.0]]})
    assert "`fc.bias` has dtype <U3" in text and "`out.bias` holds Python objects" in text
    assert "`out.weight` is not an array of numbers" in text


def test_dict_keys_that_are_not_strings_are_unexpected_keys():
    assert "unexpected: `7`" in load_error({**state(), 7: np.zeros(1)})


def test_dict_integer_values_are_errors_but_num_batches_tracked_is_ignored():
    text = load_error({**state(), "fc.bias": np.array([1, 2, 3]), "bn.num_batches_tracked": np.array(5)})
    assert "`fc.bias` holds integers (int64)" in text and "num_batches_tracked" not in text


def test_dict_of_torch_tensors_loads():
    torch = pytest.importorskip("torch")
    sd = state()
    tensors = {k: torch.from_numpy(v) for k, v in sd.items()}
    tensors["fc.weight"] = tensors["fc.weight"].requires_grad_()
    tensors["fc.bias"] = tensors["fc.bias"].to(torch.bfloat16)
    got = W.load(tensors, SPECS)
    np.testing.assert_array_equal(got["fc.weight"], sd["fc.weight"])
    np.testing.assert_array_equal(got["fc.bias"], tensors["fc.bias"].float().numpy())


def test_loaded_dict_arrays_are_copies_the_caller_may_change():
    sd = state()
    got = W.load(sd, SPECS)
    sd["fc.weight"][:] = 0
    assert got["fc.weight"].any()


def test_hostile_key_names_are_escaped_and_long_lists_are_cut():
    sd = {**state(), "evil\nerror: fake": np.zeros(1, np.float32)}
    sd.update({f"extra{i}": np.zeros(1, np.float32) for i in range(100)})
    text = load_error(sd)
    assert "`'evil\\nerror: fake'`" in text and "and 81 more" in text


# ------------------------------------------------------------------ every message names the file

BAD_FILES = {
    "npy.npz": npy_of(np.zeros(3, np.float32)),
    "text.npz": b"hello\n",
    "empty.npz": b"",
    "zip.npz": b"PK\x03\x04 not really a zip",
    "st.safetensors": struct.pack("<Q", 5) + b"{bad}",
    "pickle.npz": b"\x80\x04\x95.",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_every_file_error_names_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    assert f"`{path}`" in load_error(path)
