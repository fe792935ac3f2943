"""Untrusted array files (`.npy`, `.npz`: inputs, training data, optimizer
state) checked from their headers before NumPy allocates anything.

In:  a path, the error type to raise, and the most bytes its arrays may take.
Out: nothing when `np.load(path, allow_pickle=False)` may read it, or `error`
     naming the file and the array: a header declaring more data than the
     file holds (truncated, or a zip member whose sizes lie), a member
     unpacking far beyond what deflate reaches (a compression bomb), or
     arrays larger together than the limit.

What is not an array file (no `.npy` magic, not a zip) passes: `np.load`
reports it as before. `memory_bytes()` is this machine's memory, the limit
for files nnc reads whole.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from .limits import format_bytes
from .weights import npy_header

# Deflate reaches about 1:1032; a member declaring far more than that over
# its compressed bytes is a bomb (or lies about its size).
_MAX_RATIO = 8 * 1024
_SMALL = 1 << 26          # members below this unpack whatever their ratio


def memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_sizes(path: str, error: type[Exception], limit: int | None, limit_name: str = "the limit") -> None:
    """Refuse, with `error`, a file whose arrays cannot be read within its
    bytes and `limit` (see the module docstring)."""
    try:
        if zipfile.is_zipfile(path):
            declared = _npz_declared(path, error)
        else:
            declared = _npy_declared(path, error)
    except error:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile and the .npy header parser raise many types on hostile files
        reason = (str(e).strip() or type(e).__name__).splitlines()[0][:160]
        raise error(f"`{path}` is not a readable array file ({reason})") from None
    if limit is not None and declared > limit:
        raise error(f"`{path}` holds {format_bytes(declared)} of arrays, more than {limit_name} "
                    f"({format_bytes(limit)})")


def _bytes(shape, dtype: np.dtype) -> int:
    count = 1
    for n in shape:
        count *= int(n)
    return count * dtype.itemsize


def _npy_declared(path: str, error: type[Exception]) -> int:
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            return 0                 # not an array: np.load says what it is
        f.seek(0)
        shape, _, dtype = npy_header(f)
        declared = _bytes(shape, dtype)
        held = os.fstat(f.fileno()).st_size - f.tell()
    if declared > held:
        raise error(f"`{path}` declares a {dtype} array of shape {list(shape)} ({format_bytes(declared)}) "
                    f"but holds {format_bytes(held)} of data: it is truncated")
    return declared


def _npz_declared(path: str, error: type[Exception]) -> int:
    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            member = f"`{path}`: member `{info.filename}`"
            if info.flag_bits & 0x1:
                raise error(f"{member} cannot be read: it is encrypted")
            if info.file_size > _SMALL and info.file_size > _MAX_RATIO * max(info.compress_size, 1):
                raise error(f"{member} unpacks to {info.file_size:,} bytes from {info.compress_size:,} "
                            "(refused as a compression bomb)")
            with zf.open(info) as m:
                shape, _, dtype = npy_header(m)
                declared = _bytes(shape, dtype)
            if declared > info.file_size:
                raise error(f"{member} declares {declared:,} bytes of data but holds {info.file_size:,}")
            total += declared
    return total
