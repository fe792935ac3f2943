"""Comparisons the numeric tests share.

In:  an array nnc computed and a reference (NumPy array or torch tensor).
Out: `rel_err`, the largest absolute difference relative to the reference's
     largest magnitude (the measure every "relative error < 1e-4" means here).
"""

from __future__ import annotations

import numpy as np


def rel_err(a, b) -> float:
    a = np.asarray(a.detach() if hasattr(a, "detach") else a, dtype=np.float64)
    b = np.asarray(b.detach() if hasattr(b, "detach") else b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
