"""Fuzzing the weights reader: a mutated weights file loads with the right
arrays or raises `WeightsError` naming the file, never another exception and
never a hang.

Valid `.npz` (stored and deflated) and `.safetensors` files of a small model
are mutated at three levels, with hypothesis (derandomized, so a failure
repeats; it shrinks to a minimal mutation):

- bytes: truncation, flipped and overwritten bytes, inserted and deleted runs,
  and the zip size fields (local header, central directory, end record) set
  to hostile values;
- zip members, re-zipped with correct CRCs so the reader gets past them:
  renamed, dropped, duplicated and junk members (random bytes, a nested zip,
  `.npy` headers declaring 2^36 elements or object, integer, structured
  dtypes), members truncated or grown, headers replaced by junk;
- the safetensors JSON header: hostile dtypes, shapes and offsets, duplicate
  and renamed keys, a lying header length, deep nesting.

An `.npz` file that loads after byte-level mutations must give exactly the
original arrays (its CRCs cover every member byte). Each load runs under a
2-second alarm. The whole file runs in a few seconds.
"""

from __future__ import annotations

import io
import json
import signal
import struct
import time
import warnings
import zipfile
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnc.runtime import weights as W
from nnc.runtime.weights import Spec, WeightsError

SPECS = {
    "fc.weight": Spec((3, 4), ("uniform", 0.5)),
    "fc.bias": Spec((3,), ("uniform", 0.5)),
    "out.weight": Spec((2, 3), ("uniform", 0.5)),
    "out.bias": Spec((2,), ("uniform", 0.5)),
}
STATE = {k: np.random.default_rng(1).standard_normal(s.shape).astype(np.float32) for k, s in SPECS.items()}
FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def npy_of(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=True)
    return buf.getvalue()


def npy(descr: object, shape: object, data: bytes, fortran: object = False) -> bytes:
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape})
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + data


def zipped(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names
        with zipfile.ZipFile(buf, "w", compression=method) as z:
            for name, data in members:
                z.writestr(name, data)
    return buf.getvalue()


def safetensors_of(entries: list[tuple[str, object]], data: bytes, length: int | None = None) -> bytes:
    """Entries as raw JSON pairs, so keys may repeat."""
    header = ("{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in entries) + "}").encode()
    return struct.pack("<Q", len(header) if length is None else length) + header + data


MEMBERS = [(f"{k}.npy", npy_of(v)) for k, v in STATE.items()]
ST_ENTRIES, ST_DATA = [], b""
for _k, _v in STATE.items():
    _offsets = [len(ST_DATA), len(ST_DATA) + _v.nbytes]
    ST_ENTRIES.append((_k, {"dtype": "F32", "shape": list(_v.shape), "data_offsets": _offsets}))
    ST_DATA += _v.tobytes()
BASES = {
    "npz": zipped(MEMBERS),
    "npz-deflated": zipped(MEMBERS, zipfile.ZIP_DEFLATED),
    "safetensors": safetensors_of(ST_ENTRIES, ST_DATA),
}


@contextmanager
def alarm(seconds: float):
    def fire(signum, frame):
        raise TimeoutError(f"loading took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def loads_or_refuses(path, data: bytes, exact: bool) -> None:
    path.write_bytes(data)
    try:
        with alarm(2.0):
            got = W.load(path, SPECS)
    except WeightsError as e:
        assert f"`{path}`" in str(e)
        assert "allow_pickle" not in str(e)
        return
    assert set(got) == set(SPECS)
    for k, a in got.items():
        assert a.dtype == np.float32 and a.shape == SPECS[k].shape and a.flags.c_contiguous
        assert np.isfinite(a).all()
        if exact:
            np.testing.assert_array_equal(a, STATE[k])


# ------------------------------------------------------------------ bytes

HOSTILE_U32 = [0, 1, 7, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFF0, 1 << 20]
byte_edit = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("set"), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 64)),
    st.tuples(st.just("size"), st.sampled_from(["local", "central", "end"]), st.integers(0, 11),
              st.sampled_from(HOSTILE_U32)),
)


def edit_bytes(data: bytes, edit: tuple) -> bytes:
    kind, *args = edit
    data = bytearray(data)
    at = lambda frac: min(int(frac * len(data)), max(len(data) - 1, 0))  # noqa: E731
    if kind == "truncate":
        del data[at(args[0]):]
    elif kind == "flip" and data:
        data[at(args[0])] ^= args[1]
    elif kind == "set":
        i = at(args[0])
        data[i:i + len(args[1])] = args[1]
    elif kind == "insert":
        i = at(args[0])
        data[i:i] = args[1]
    elif kind == "delete":
        i = at(args[0])
        del data[i:i + args[1]]
    elif kind == "size":
        where, index, value = args
        magic, fields = {"local": (b"PK\x03\x04", [18, 22]), "central": (b"PK\x01\x02", [20, 24]),
                         "end": (b"PK\x05\x06", [12, 16])}[where]
        starts = [i for i in range(len(data) - 3) if data[i:i + 4] == magic]
        if starts:
            i = starts[index % len(starts)] + fields[index % 2]
            data[i:i + 4] = struct.pack("<I", value)
    return bytes(data)


@FUZZ
@given(base=st.sampled_from(sorted(BASES)), edits=st.lists(byte_edit, min_size=1, max_size=3))
def test_byte_mutants_load_exactly_or_raise_weights_error(tmp_path, base, edits):
    data = BASES[base]
    for edit in edits:
        data = edit_bytes(data, edit)
    loads_or_refuses(tmp_path / "w.npz", data, exact=base.startswith("npz"))


# ------------------------------------------------------------------ zip members

NAMES = st.sampled_from(["fc.weight.npy", "fc.bias.npy", "out.weight", "junk.npy", "/", "a/../b.npy",
                         "x" * 300 + ".npy", "data.pkl", "fc.weight.npy/", "é\n.npy"])
SHAPES = st.sampled_from([(3, 4), (4, 3), (12,), (), (2 ** 36,), (2 ** 63 - 1, 2), (-1, 4), (3, 4, 1), (0,),
                          [3, 4], (3.0, 4), "x"])
DESCRS = st.sampled_from(["<f4", ">f4", "<f8", "<f2", "<f16", "<i8", "|b1", "|O", "<c8", "V48", "<U3",
                          [("a", "<f4")], ("<f4", (2,)), "f4,f4", 5, "", "<f4" * 50])
JUNK = st.one_of(st.binary(max_size=200), st.just(BASES["npz"]), st.just(b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 300),
                 st.just(b"\x93NUMPY\x02\x00\xff\xff\xff\x7f"), st.just(b"\x93NUMPY\x03\x00\x10\x00" + b" " * 16))
member_edit = st.one_of(
    st.tuples(st.just("rename"), st.integers(0, 3), NAMES),
    st.tuples(st.just("drop"), st.integers(0, 3)),
    st.tuples(st.just("duplicate"), st.integers(0, 3)),
    st.tuples(st.just("junk"), NAMES, JUNK),
    st.tuples(st.just("header"), st.integers(0, 3), DESCRS, SHAPES, st.sampled_from([False, True, 1, "no"])),
    st.tuples(st.just("resize"), st.integers(0, 3), st.integers(-60, 60)),
    st.tuples(st.just("nest"), st.integers(0, 3)),
)


def edit_members(members: list[tuple[str, bytes]], edit: tuple) -> list[tuple[str, bytes]]:
    kind, *args = edit
    members = list(members)
    if kind == "junk":
        return members + [(args[0], args[1])]
    if not members:
        return members
    i = args[0] % len(members)
    name, data = members[i]
    if kind == "rename":
        members[i] = (args[1], data)
    elif kind == "drop":
        del members[i]
    elif kind == "duplicate":
        members.append(members[i])
    elif kind == "header":
        descr, shape, fortran = args[1:]
        members[i] = (name, npy(descr, shape, data[128:] if data.startswith(b"\x93NUMPY") else data, fortran))
    elif kind == "resize":
        members[i] = (name, data[:args[1]] if args[1] < 0 else data + b"\x7f" * args[1])
    elif kind == "nest":
        members[i] = (name, zipped(members))
    return members


@FUZZ
@given(edits=st.lists(member_edit, min_size=1, max_size=3), deflate=st.booleans())
def test_member_mutants_load_or_raise_weights_error(tmp_path, edits, deflate):
    members = MEMBERS
    for edit in edits:
        members = edit_members(members, edit)
    loads_or_refuses(tmp_path / "w.npz", zipped(members, zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED),
                     exact=False)


# ------------------------------------------------------------------ safetensors headers

ST_VALUES = {
    "dtype": st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "", "f32", 5, None]),
    "shape": st.sampled_from([[3, 4], [4, 3], [12], [], [2 ** 36], [2 ** 64], [-1], [3.0, 4], [True], "x", None]),
    "data_offsets": st.sampled_from([[0, 48], [0, 2 ** 40], [48, 0], [-4, 44], [0], [], [0, 2 ** 64], "a",
                                     [1.5, 4], None, [0, 48, 96]]),
}
st_edit = st.one_of(
    st.tuples(st.just("field"), st.integers(0, 3), st.sampled_from(sorted(ST_VALUES)), st.data()),
    st.tuples(st.just("rename"), st.integers(0, 3), st.sampled_from(["fc.bias", "junk", "", "__metadata__"])),
    st.tuples(st.just("entry"), st.integers(0, 3), st.sampled_from([None, [], 1, "F32", {}])),
    st.tuples(st.just("length"), st.sampled_from([0, 1, 7, 2 ** 32, 2 ** 63, -1])),
    st.tuples(st.just("metadata"), st.sampled_from([{"format": "pt"}, [], None, {"a": {"b": [1] * 5}}])),
    st.tuples(st.just("nesting"), st.integers(1, 100_000)),
)


@FUZZ
@given(edits=st.lists(st_edit, min_size=1, max_size=3), truncate=st.one_of(st.none(), st.integers(0, 200)))
def test_safetensors_header_mutants_load_or_raise_weights_error(tmp_path, edits, truncate):
    entries = [(k, dict(v)) for k, v in ST_ENTRIES]
    length, raw = None, None
    for kind, *args in edits:
        if kind == "field":
            i, field, data = args
            if isinstance(entries[i][1], dict):
                entries[i][1][field] = data.draw(ST_VALUES[field])
        elif kind == "rename":
            entries[args[0]] = (args[1], entries[args[0]][1])
        elif kind == "entry":
            entries[args[0]] = (entries[args[0]][0], args[1])
        elif kind == "length":
            length = args[0] % 2 ** 64
        elif kind == "metadata":
            entries.append(("__metadata__", args[0]))
        elif kind == "nesting":
            raw = b"{\"a\": " + b"[" * args[0] + b"]" * args[0] + b"}"
    data = safetensors_of(entries, ST_DATA, length)
    if raw is not None:
        data = struct.pack("<Q", len(raw)) + raw + ST_DATA
    if truncate is not None:
        data = data[:len(data) - truncate]
    loads_or_refuses(tmp_path / "w.safetensors", data, exact=False)


def test_the_unmutated_files_load_exactly(tmp_path):
    for name, data in BASES.items():
        path = tmp_path / name
        path.write_bytes(data)
        got = W.load(path, SPECS)
        for k in SPECS:
            np.testing.assert_array_equal(got[k], STATE[k])


def test_the_fuzz_budget_is_tight(tmp_path):
    """A bomb that the fuzz might build (every member a megabyte of zeros,
    deflated) is refused in well under a second."""
    bomb = [(n, d + b"\0" * (1 << 20)) for n, d in MEMBERS]
    path = tmp_path / "bomb.npz"
    path.write_bytes(zipped(bomb, zipfile.ZIP_DEFLATED))
    t = time.perf_counter()
    with pytest.raises(WeightsError, match="unpacks to"):
        W.load(path, SPECS)
    assert time.perf_counter() - t < 0.5
