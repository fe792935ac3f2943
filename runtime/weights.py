"""Weights: reading `.npz` and `.safetensors` files strictly, the seeded default
initialisation, and the effective tensors a plan's kernels use.

In:  a state_dict specification (full key -> `Spec`), and a file path or a
     dict of arrays (NumPy arrays, PyTorch tensors, nested lists of numbers).
Out: a complete `dict[str, np.ndarray]` of float32 arrays in PyTorch's layout,
     owned by the caller, or `WeightsError` (a one-line `UserError` and a
     `ValueError`) naming the file and listing every missing key, unexpected
     key, shape, dtype and non-finite problem at once.

A file is recognised by its first bytes, never by its name: a zip archive of
`.npy` members (`numpy.savez`), or safetensors (an 8-byte little-endian header
length, then a JSON object). Anything else is refused with what it looks like:
a single `.npy` array, a PyTorch checkpoint (a zip holding `data.pkl`, or a
pickle) with the line that exports its state dict, a text file, or unknown
bytes. Only regular files are opened, so a FIFO or a device never hangs.

Reading is safe on hostile files, and nothing is allocated that the model
does not need:

1. The key list (zip member names, or the safetensors JSON header) is checked
   first: missing, unexpected and duplicated keys.
2. For each expected key, the declared dtype and shape are read from the
   member's `.npy` header (or the JSON entry) and checked against the model,
   together with the stored size: a zip member larger than its array needs
   (a deflate bomb), or smaller (a truncated file), and safetensors offsets
   outside the file, are refused.
3. Only then, and only for expected keys, are the array bytes read, converted
   to float32 and checked for NaN and infinity.

Dtypes: float16, bfloat16 (safetensors), float32 and float64 are accepted
(float64 rounds to float32; a value beyond float32's range counts as
infinite); integers, booleans, complex numbers and Python objects are errors
naming the key. Keys ending in `num_batches_tracked` are ignored unread.
`docs/choices-weights.md` gives the reasons. Needs only NumPy.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from .errors import UserError

# Keys PyTorch writes that inference never reads.
IGNORED_SUFFIXES = (".num_batches_tracked",)

# The largest `.npy` header read (NumPy's own limit for untrusted files), and
# the largest safetensors JSON header (the safetensors library's limit).
NPY_HEADER_LIMIT = 10_000
SAFETENSORS_HEADER_LIMIT = 100_000_000
# How many names an error lists before it says "and N more".
LISTED_KEYS = 20

EXPORT_HINT = "numpy.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})"
NOT_WEIGHTS = "not a weights file (.npz or .safetensors)"
# The pickled number that starts every file of torch.save's legacy (non-zip) format.
TORCH_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


class WeightsError(UserError, ValueError):
    """A weights file or dict that cannot be read or does not fit the model.
    The message names the file and every problem found."""


@dataclass(frozen=True, slots=True)
class Spec:
    shape: tuple[int, ...]
    init: tuple[str, float]           # ("uniform", bound), ("normal", std) or ("const", value)


# ------------------------------------------------------------------ the API

def load(source: str | os.PathLike | Mapping[str, object], specs: Mapping[str, Spec]) -> dict[str, np.ndarray]:
    """The model's parameters from a weights file or a dict, checked."""
    if isinstance(source, Mapping):
        return check(source, specs, "the weights")
    try:
        path = os.fspath(source)
    except TypeError:
        raise WeightsError(f"weights must be a file path or a dict of arrays, not {type(source).__name__}") from None
    return _read_file(os.fsdecode(path), specs)


def check(arrays: Mapping[Any, object], specs: Mapping[str, Spec],
          source: str = "the weights") -> dict[str, np.ndarray]:
    """Validate a complete dict of arrays against the model; return float32 copies."""
    report = _Report(source)
    report.compare_keys(arrays.keys(), specs)
    found: dict[str, np.ndarray] = {}
    for k in specs:
        if k not in arrays:
            continue
        try:
            a = _as_array(arrays[k])
        except Exception as e:  # any object may be passed: report what NumPy says about it
            report.add(f"`{k}` is not an array of numbers ({_reason(e)})")
            continue
        problem = _dtype_problem(k, a.dtype)
        if problem:
            report.add(problem)
        elif tuple(a.shape) != specs[k].shape:
            report.add(_shape_problem(k, a.shape, specs[k].shape))
        else:
            found[k] = a
    report.raise_if_any()
    result = {k: _to_float32(k, a, report, copy=True) for k, a in found.items()}
    report.raise_if_any()
    return result


def default_init(specs: Mapping[str, Spec], seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch's default distributions, drawn in key order from one seeded generator:
    uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for layer weights and biases
    (recurrent layers: 1/sqrt(hidden)); N(0, 1) for embedding tables; batchnorm
    weight 1, bias 0, mean 0, var 1."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for k, spec in specs.items():
        kind, value = spec.init
        if kind in DRAWN:
            out[k] = draw(rng, kind, value, spec.shape)
        else:
            out[k] = np.full(spec.shape, value, dtype=np.float32)
    return out


DRAWN = {"uniform": 1, "normal": 2}     # drawn kinds -> doubles of the generator each element takes


def draw(rng: np.random.Generator, kind: str, value: float, shape: tuple[int, ...]) -> np.ndarray:
    """`shape` elements of a drawn kind, each from its own DRAWN[kind] doubles in
    order (so a generator advanced past k elements draws element k on: growth
    draws new units' entries alone). Normal: Box-Muller on two uniforms."""
    if kind == "uniform":
        return rng.uniform(-value, value, size=shape).astype(np.float32)
    u = rng.random((*shape, 2))
    r = np.sqrt(-2.0 * np.log1p(-u[..., 0]))         # 1 - u in (0, 1]
    return (value * r * np.cos(2.0 * np.pi * u[..., 1])).astype(np.float32)


def fold_norm(weight: np.ndarray, bias: np.ndarray | None, gamma: np.ndarray, beta: np.ndarray,
              mean: np.ndarray, var: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The weight and bias of a layer followed by an inference batchnorm on its
    output channels (axis 0 of the weight)."""
    scale = (gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps))
    w = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    b = (bias.astype(np.float64) if bias is not None else 0.0) - mean.astype(np.float64)
    b = b * scale + beta.astype(np.float64)
    return w.astype(np.float32), np.asarray(b, dtype=np.float32)


def nbytes(specs: Mapping[str, Spec]) -> int:
    return sum(math.prod(s.shape) * 4 for s in specs.values())


# ------------------------------------------------------------------ checks shared by dicts and files

class _Report:
    """Every problem with one set of weights, raised together."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []
        self.missing: list[str] = []
        self.unexpected: list[Any] = []

    def compare_keys(self, keys: Any, specs: Mapping[str, Spec]) -> None:
        keys = list(keys)
        present = set(keys)
        self.missing = [k for k in specs if k not in present]
        self.unexpected = [k for k in keys if k not in specs and not _ignored(k)]

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def raise_if_any(self) -> None:
        lines = list(self.problems)
        if self.missing:
            lines.append("missing: " + _listing(self.missing))
        if self.unexpected:
            lines.append("unexpected: " + _listing(self.unexpected))
        if lines:
            raise WeightsError(f"{self.source} do not fit the model:\n  " + "\n  ".join(lines))


def _ignored(key: object) -> bool:
    return isinstance(key, str) and key.endswith(IGNORED_SUFFIXES)


def _show(key: object) -> str:
    """A key as an error shows it: printable text as is, anything else escaped."""
    return key if isinstance(key, str) and key.isprintable() else repr(key)


def _listing(keys: list) -> str:
    shown = ", ".join(f"`{_show(k)}`" for k in keys[:LISTED_KEYS])
    return shown + (f" and {len(keys) - LISTED_KEYS} more" if len(keys) > LISTED_KEYS else "")


def _as_array(value: object) -> np.ndarray:
    """NumPy's view of a value; PyTorch tensors go through `.numpy()` (bfloat16
    ones through float32, which holds them exactly)."""
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _dtype_problem(key: str, dtype: np.dtype) -> str | None:
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return None
    if dtype.kind in "iu":
        return _not_float(key, f"integers ({dtype})")
    if dtype.kind == "b":
        return _not_float(key, "booleans")
    if dtype.kind == "O":
        return f"`{key}` holds Python objects, not numbers"
    return f"`{key}` has dtype {dtype}, expected float16, float32 or float64 numbers"


def _not_float(key: str, what: str) -> str:
    return f"`{key}` holds {what}, not floating-point numbers (convert it with .astype(numpy.float32) if that is meant)"


def _shape_problem(key: str, shape: tuple, expected: tuple) -> str:
    return f"`{key}` has shape {list(shape)}, the model expects {list(expected)}"


def _to_float32(key: str, a: np.ndarray, report: _Report, copy: bool) -> np.ndarray:
    """A C-contiguous float32 array of `a` (a new one when `copy`); NaN and
    infinity, also from float64 values beyond float32's range, are reported."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array(a, dtype=np.float32, order="C", copy=True if copy else None)
        # one fast pass without a temporary (NaN and infinity survive a dot
        # product); exact counts only when something is off
        if out.size and not np.isfinite(np.dot(out.ravel(), out.ravel())):
            nan = int(np.isnan(out).sum())
            inf = int(np.isinf(out).sum())
            if nan or inf:
                what = " and ".join(f"{n} {name}" for n, name in ((nan, "NaN"), (inf, "infinite")) if n)
                what += " value" + ("s" if nan + inf > 1 else "")
                if a.dtype.itemsize > 4 and np.isfinite(a).sum() > out.size - nan - inf:
                    what += " (values beyond float32's range)"
                report.add(f"`{key}` holds {what}")
    return out


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]


# ------------------------------------------------------------------ files

# Each expected member, once its header is checked: a function that reads its
# array (raw dtype, final shape).
_Reader = Callable[[], np.ndarray]

_FOREIGN = {
    b"\x89HDF\r\n\x1a\n": "an HDF5 file",
    b"\x1f\x8b": "a gzip-compressed file",
}


def _read_file(path: str, specs: Mapping[str, Spec]) -> dict[str, np.ndarray]:
    f = _open_regular(path)
    with f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(16)
        kind = _sniff(path, head)
        report = _Report(f"the weights in `{path}`")
        if kind == "zip":
            readers = _npz_readers(path, f, specs, report)
        else:
            readers = _safetensors_readers(path, f, size, head, specs, report)
        report.raise_if_any()
        arrays = {k: read() for k, read in readers.items()}
    result = {k: _to_float32(k, a, report, copy=False) for k, a in arrays.items()}
    report.raise_if_any()
    return result


def _open_regular(path: str):
    """The file opened for reading, refused first when it is not a regular
    file: opening a FIFO for reading would wait for a writer."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise WeightsError(f"weights file `{path}` does not exist") from None
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot read weights file `{path}`: {_os_reason(e)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise WeightsError(f"`{path}` is a folder, {NOT_WEIGHTS}")
    if not stat.S_ISREG(st.st_mode):
        raise WeightsError(f"`{path}` is not a regular file (a FIFO, socket or device), so it is not read as weights")
    try:
        # O_NONBLOCK: should the path become a FIFO after the check, opening returns at once
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise WeightsError(f"cannot read weights file `{path}`: {_os_reason(e)}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise WeightsError(f"`{path}` is not a regular file (a FIFO, socket or device), so it is not read as weights")
    return os.fdopen(fd, "rb")


def _os_reason(e: BaseException) -> str:
    return (getattr(e, "strerror", None) or _reason(e)).lower()


def _sniff(path: str, head: bytes) -> str:
    """"zip" or "safetensors" by the first bytes, or the error saying what the file is."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 40:
        return "safetensors"
    if head.startswith(b"\x93NUMPY"):
        raise WeightsError(f"`{path}` holds one array (.npy), not a dict of named arrays: "
                           f"write the weights with numpy.savez(path, **state_dict)")
    if head.startswith(b"\x80\x02" + TORCH_LEGACY_MAGIC):
        raise WeightsError(f"`{path}` is a PyTorch checkpoint (written by torch.save in its legacy format): "
                           f"export its state dict with {EXPORT_HINT}")
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise WeightsError(f"`{path}` is a Python pickle (a PyTorch checkpoint?), which is never loaded: "
                           f"export the state dict with {EXPORT_HINT}")
    if not head:
        raise WeightsError(f"`{path}` is empty, {NOT_WEIGHTS}")
    for magic, what in _FOREIGN.items():
        if head.startswith(magic):
            raise WeightsError(f"`{path}` is {what}, {NOT_WEIGHTS}")
    if b"\x00" not in head and _is_text(head):
        raise WeightsError(f"`{path}` is a text file, {NOT_WEIGHTS}")
    raise WeightsError(f"`{path}` is {NOT_WEIGHTS}")


def _is_text(head: bytes) -> bool:
    for cut in range(4):  # the sample may end inside a multi-byte character
        try:
            text = head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return all(c.isprintable() or c in "\t\r\n\f" for c in text)
    return False


# ------------------------------------------------------------------ .npz

# What zipfile raises for a broken archive or member, as opposed to NumPy's
# errors about the `.npy` header inside.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError)


def _npz_readers(path: str, f, specs: Mapping[str, Spec], report: _Report) -> dict[str, _Reader]:
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
    except Exception as e:  # zipfile raises many types on hostile archives
        raise _unreadable(path, "npz", _reason(e)) from None
    names = [i.filename for i in infos]
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        raise WeightsError(f"`{path}` is a PyTorch checkpoint (written by torch.save): "
                           f"export its state dict with {EXPORT_HINT}")
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if key in members:
            raise _unreadable(path, "npz", f"it holds `{_show(key)}` twice")
        members[key] = info
    report.compare_keys(members, specs)

    readers: dict[str, _Reader] = {}
    for key, spec in specs.items():
        info = members.get(key)
        if info is None:
            continue
        member = f"member `{_show(info.filename)}`"
        if info.flag_bits & 0x1:
            raise _unreadable(path, "npz", f"{member} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _unreadable(path, "npz", f"{member} uses zip compression method {info.compress_type}; "
                                           "numpy.savez and savez_compressed write stored or deflated members")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise _unreadable(path, "npz", f"{member} is stored uncompressed but its two sizes differ")
        count = math.prod(spec.shape)
        # the largest member a valid array of this shape can be: header and float64 data
        if info.file_size > 12 + NPY_HEADER_LIMIT + 8 * count:
            raise _unreadable(path, "npz", f"{member} unpacks to {info.file_size} bytes, far more than "
                                           f"an array of shape {list(spec.shape)} needs")
        try:
            with zf.open(info) as m:
                shape, fortran, dtype = npy_header(m)
                start = m.tell()
        except _ZIP_ERRORS as e:
            raise _unreadable(path, "npz", f"{member}: {_reason(e)}") from None
        except Exception as e:  # the header is untrusted text that NumPy's literal_eval parses
            if isinstance(e, ValueError) and "magic string" in str(e):
                raise _unreadable(path, "npz", f"{member} is not an .npy array") from None
            raise _unreadable(path, "npz", f"{member} has an unreadable .npy header ({_reason(e)})") from None
        problem = _dtype_problem(key, dtype)
        if problem:
            report.add(problem)
            continue
        if tuple(shape) != spec.shape:
            report.add(_shape_problem(key, shape, spec.shape))
            continue
        stored = info.file_size - start
        if stored != count * dtype.itemsize:
            what = "is truncated" if stored < count * dtype.itemsize else "has bytes after its array"
            raise _unreadable(path, "npz", f"{member} {what}: it holds {stored} bytes of data, "
                                           f"a {dtype} array of shape {list(spec.shape)} has {count * dtype.itemsize}")
        readers[key] = _npz_reader(path, f, zf, info, start, dtype, tuple(shape), fortran)
    return readers


def _npz_reader(path: str, f, zf: zipfile.ZipFile, info: zipfile.ZipInfo, start: int,
                dtype: np.dtype, shape: tuple, fortran: bool) -> _Reader:
    def read() -> np.ndarray:
        a = np.empty(math.prod(shape), dtype)
        data = a.view(np.uint8)
        try:
            if info.compress_type == zipfile.ZIP_STORED:
                _read_stored(f, info, start, data)
            else:
                with zf.open(info) as m:
                    m.read(start)
                    got = 0
                    while got < data.size:  # the last read ends the member: zipfile checks the CRC
                        chunk = m.read(min(1 << 20, data.size - got))
                        if not chunk:
                            raise EOFError("it is truncated")
                        data[got:got + len(chunk)] = np.frombuffer(chunk, np.uint8)
                        got += len(chunk)
        except Exception as e:  # bad CRC, corrupt deflate stream, short file
            raise _unreadable(path, "npz", f"member `{_show(info.filename)}`: {_reason(e)}") from None
        return a.reshape(shape[::-1]).T if fortran else a.reshape(shape)
    return read


def npy_header(m) -> tuple[tuple, bool, np.dtype]:
    """The shape, Fortran order and dtype an open `.npy` stream declares,
    read without touching its data (a header over NPY_HEADER_LIMIT is refused)."""
    version = np.lib.format.read_magic(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumPy warns about headers written by Python 2
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(m, NPY_HEADER_LIMIT)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(m, NPY_HEADER_LIMIT)
    raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")


def _read_stored(f, info: zipfile.ZipInfo, start: int, data: np.ndarray) -> None:
    """An uncompressed member's array bytes straight into `data` (one copy,
    where zipfile's reader makes three), with zipfile's checks: the local
    header and the CRC."""
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile("bad local file header")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    f.seek(info.header_offset + 30 + name_length + extra_length)
    header = f.read(start)
    if len(header) != start or f.readinto(data) != data.size:
        raise EOFError("it is truncated")
    if zlib.crc32(data, zlib.crc32(header)) != info.CRC:
        raise zipfile.BadZipFile("bad CRC-32")


def _unreadable(path: str, kind: str, reason: str) -> WeightsError:
    return WeightsError(f"`{path}` is not a readable {kind} weights file: {reason}")


# ------------------------------------------------------------------ .safetensors

# safetensors dtype -> the NumPy dtype its bytes are read as
_ST_FLOATS = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}
_ST_INTEGERS = {"I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64"}


def _safetensors_readers(path: str, f, size: int, head: bytes, specs: Mapping[str, Spec],
                         report: _Report) -> dict[str, _Reader]:
    n = int.from_bytes(head[:8], "little")
    if n > size - 8 or n > SAFETENSORS_HEADER_LIMIT:
        raise _unreadable(path, "safetensors", f"its header length {n} exceeds the file")
    f.seek(8)
    try:
        header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:
        raise _unreadable(path, "safetensors", f"its JSON header is invalid ({_reason(e)})") from None
    if not isinstance(header, dict):
        raise _unreadable(path, "safetensors", "its JSON header is not an object")
    header.pop("__metadata__", None)
    report.compare_keys(header, specs)
    data_start, data_size = 8 + n, size - 8 - n

    readers: dict[str, _Reader] = {}
    for key, spec in specs.items():
        if key not in header:
            continue
        entry = header[key]
        fields = entry if isinstance(entry, dict) else {}
        kind, shape, offsets = fields.get("dtype"), fields.get("shape"), fields.get("data_offsets")
        if not (isinstance(kind, str) and _int_list(shape) and _int_list(offsets) and len(offsets) == 2):
            raise _unreadable(path, "safetensors", f"the entry of `{key}` is not "
                                                   "{\"dtype\": ..., \"shape\": [...], \"data_offsets\": [begin, end]}")
        if kind in _ST_INTEGERS:
            report.add(_not_float(key, f"integers ({kind})"))
            continue
        if kind == "BOOL":
            report.add(_not_float(key, "booleans"))
            continue
        if kind not in _ST_FLOATS:
            report.add(f"`{key}` has dtype {_show(kind)}, expected F16, BF16, F32 or F64")
            continue
        if tuple(shape) != spec.shape:
            report.add(_shape_problem(key, shape, spec.shape))
            continue
        begin, end = offsets
        dtype = _ST_FLOATS[kind]
        if not 0 <= begin <= end <= data_size or end - begin != math.prod(shape) * dtype.itemsize:
            raise _unreadable(path, "safetensors", f"the data offsets of `{key}` ({begin}, {end}) do not "
                                                   f"fit a {kind} array of shape {list(shape)} in the file")
        readers[key] = _safetensors_reader(path, f, data_start + begin, dtype, tuple(shape), kind == "BF16")
    return readers


def _safetensors_reader(path: str, f, offset: int, dtype: np.dtype, shape: tuple, bf16: bool) -> _Reader:
    def read() -> np.ndarray:
        a = np.empty(math.prod(shape), dtype)
        f.seek(offset)
        if f.readinto(a.view(np.uint8)) != a.nbytes:
            raise _unreadable(path, "safetensors", "it is truncated")
        if bf16:  # bfloat16 is the upper half of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        return a.reshape(shape)
    return read


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"it holds `{_show(twice)}` twice")
    return out


def _int_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
