"""The C code generator: an optimised graph and its memory layout -> C99.

In:  an `ir.Graph` (after `passes.optimize`, then `fuse_blocks` below, and
     `stream.to_stream` for a streaming plan), its `memory.Layout` (made with
     `scratch_bytes` and `state_bytes` below) and, to embed them, the weights.
Out: `generate(...)` -> {file name: text}: `NAME.h` (the context type with
     the arena, the API, the sizes as `#define`s, the arena layout),
     `NAME.c` (one commented kernel call per step) and `nnc_kernels.h` (the
     kernels, copied beside them so the folder builds alone);
     `pack_weights(graph, state)` -> the one float32 array of every weight in
     the kernels' layouts (`weight_slots` gives each tensor's place in it).

Code and weights are apart: the code reads every weight through the
context's `weights` pointer at offsets that depend on the graph alone. With
`embed_weights=True` (`nnc compile -t c`) `NAME.c` also holds the packed
array, as one string literal of bytes (compiles in seconds where millions of
float literals took minutes) that `NAME_init(ctx)` points the context at;
with `embed_weights=False` (the shared library behind `nnc.build(target="c")`,
or a plan whose weights come from a file) `NAME_init(ctx, weights)` takes
them, so one compiled library serves any weights of the same structure.

Every value lives at its planned offset in the context's arena; model
inputs are read where the caller keeps them and outputs are copied out at
the end. Named dimensions are `int` parameters of the internal `run`
function, in the order `dim_order` gives (the Python side passes them in the
same order), and every size that depends on them is a C expression, so one
plan serves any length up to the bound. The skeleton is the templates
(`templates/c_*.j2`); each step's lines come from `STEPS`, one function per
op of the catalog. Every identifier comes from a prefixed namespace (`v_`
values, `w_` weights, `y_` outputs, `d_` dimensions), so no label or
dimension name can meet a C keyword, a standard library name or the
templates' locals; every other text (paths, labels in comments) goes
through `c_text`. Output is deterministic: the same graph and weights give
the same bytes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Callable, Mapping

import jinja2
import numpy as np

from ...runtime.weights import Spec, default_init, fold_norm
from .. import ops as catalog
from ..dims import FloorDiv, Sym, SymbolicError, Var, evaluate, format_shape, product
from ..ir import Graph, Node
from .. import memory
from ..memory import Layout, min_dims
from ..passes.rewrite import bypass, single_reader
from . import numpy as numpy_gen
from .names import RESERVED, Namespace

VERSION = numpy_gen.VERSION
MR = 6            # rows of the packed weight blocks: NNC_MR in nnc_kernels.h
NR_MAX = 32       # NNC_NR_MAX: the widest register tile the panel scratch allows for
KC = 256          # NNC_KC
KC_MIN = 64       # the shallowest panel `panel_rows` picks (when K is deeper)
VB = 16           # NNC_VB: dense and recurrent weight rows are padded to a multiple of this many floats
KERNELS_HEADER = "nnc_kernels.h"
WEIGHT_ALIGN = 16  # floats: every tensor of the packed weights starts on a 64-byte boundary of the array
# the templates' own names (locals, the static `run`) and the kernels' prefixes
LOCALS = frozenset({"A", "W", "g", "in", "shape", "perm", "work", "tile", "n", "m", "k", "done", "run", "piece",
                    "gate", "nnc", "NNC"})


def _stdint_names() -> set[str]:
    names = {"intptr_t", "uintptr_t", "intmax_t", "uintmax_t", "INTPTR_MIN", "INTPTR_MAX", "UINTPTR_MAX",
             "INTMAX_MIN", "INTMAX_MAX", "UINTMAX_MAX", "INTMAX_C", "UINTMAX_C", "PTRDIFF_MIN", "PTRDIFF_MAX",
             "SIG_ATOMIC_MIN", "SIG_ATOMIC_MAX", "SIZE_MAX", "WCHAR_MIN", "WCHAR_MAX", "WINT_MIN", "WINT_MAX"}
    for bits in (8, 16, 32, 64):
        for kind in ("", "_least", "_fast"):
            names |= {f"int{kind}{bits}_t", f"uint{kind}{bits}_t", f"INT{kind.upper()}{bits}_MIN",
                      f"INT{kind.upper()}{bits}_MAX", f"UINT{kind.upper()}{bits}_MAX"}
        names |= {f"INT{bits}_C", f"UINT{bits}_C"}
    return names


def _math_names() -> set[str]:
    functions = """acos asin atan atan2 cos sin tan acosh asinh atanh cosh sinh tanh exp exp2 expm1 frexp ldexp
    log log10 log1p log2 logb ilogb modf scalbn scalbln cbrt fabs hypot pow sqrt erf erfc lgamma tgamma ceil
    floor nearbyint rint lrint llrint round lround llround trunc fmod remainder remquo copysign nan nextafter
    nexttoward fdim fmax fmin fma""".split()
    names = {f + suffix for f in functions for suffix in ("", "f", "l")}
    return names | set("""HUGE_VAL HUGE_VALF HUGE_VALL INFINITY NAN FP_INFINITE FP_NAN FP_NORMAL FP_SUBNORMAL
    FP_ZERO FP_FAST_FMA FP_FAST_FMAF FP_FAST_FMAL FP_ILOGB0 FP_ILOGBNAN MATH_ERRNO MATH_ERREXCEPT
    math_errhandling fpclassify isfinite isinf isnan isnormal signbit isgreater isgreaterequal isless
    islessequal islessgreater isunordered float_t double_t M_E M_LOG2E M_LOG10E M_LN2 M_LN10 M_PI M_PI_2
    M_PI_4 M_1_PI M_2_PI M_2_SQRTPI M_SQRT2 M_SQRT1_2 signgam j0 j1 jn y0 y1 yn""".split())


# Names the generated file and its kernels header can see: <math.h>,
# <string.h>, <stddef.h>, <stdint.h> (functions, macros, types). Every
# generated identifier is prefixed, so none can be one of these; the set
# keeps it so should a prefix ever be dropped.
C_LIBRARY = frozenset(_stdint_names() | _math_names() | set("""
memcpy memmove memset memcmp memchr strcpy strncpy strcat strncat strcmp strncmp strcoll strxfrm strchr
strrchr strspn strcspn strpbrk strstr strtok strerror strlen strdup strndup size_t ptrdiff_t wchar_t NULL
offsetof max_align_t""".split()))
C_RESERVED = RESERVED | C_LIBRARY | LOCALS


def dim_order(bounds: Mapping[str, int]) -> list[str]:
    """The order of the named dimensions in the C API (`NAME_forward_len`,
    `run`) and in the Python calls into it: sorted by name, so the order does
    not depend on how the bounds were given. Both sides use this function."""
    return sorted(bounds)


def c_text(text: Any) -> str:
    """Any text as it may appear inside a C comment or string literal: ASCII
    only (anything else becomes `?`), on one line, with no comment delimiter
    (`*/`, `/*`, `//`), no quote, no backslash (so no escape and no line
    continuation) and no `??` (so no trigraph)."""
    text = re.sub(r"[^ -~]", "?", str(text))
    text = text.replace("\\", "/").replace('"', "'")
    while "*/" in text or "/*" in text or "//" in text:
        text = text.replace("*/", "* /").replace("/*", "/ *").replace("//", "/ /")
    while "??" in text:
        text = text.replace("??", "? ?")
    return text

ACT_CODES = {"relu": "NNC_RELU", "relu6": "NNC_RELU6", "sigmoid": "NNC_SIGMOID", "tanh": "NNC_TANH",
             "gelu": "NNC_GELU", "silu": "NNC_SILU", "selu": "NNC_SELU", "softplus": "NNC_SOFTPLUS",
             "hardsigmoid": "NNC_HARDSIGMOID", "hardswish": "NNC_HARDSWISH", "leaky_relu": "NNC_LEAKY_RELU",
             "elu": "NNC_ELU", "neg": "NNC_NEG", "abs": "NNC_ABS", "exp": "NNC_EXP", "log": "NNC_LOG",
             "sqrt": "NNC_SQRT", "square": "NNC_SQUARE"}


def kernels_source() -> str:
    """nnc_kernels.h with every `#include "nnc_*.h"` of a family header under
    runtime/c/ replaced by that header's text: one self-contained file."""
    folder = resources.files("nnc.runtime").joinpath("c")
    return re.sub(r'^#include "(nnc_[a-z0-9_]+\.h)"$', lambda m: folder.joinpath(m.group(1)).read_text(),
                  folder.joinpath(KERNELS_HEADER).read_text(), flags=re.M)


# ------------------------------------------------------------------ sizes as C expressions

def cexpr(d: Any, names: Mapping[str, str]) -> str:
    """A size (int or `Sym`) as a C `long` expression over the dimension
    parameters (`names`: dimension -> C identifier)."""
    if isinstance(d, int):
        return str(d)
    assert isinstance(d, Sym), d
    parts = []
    for atom, coeff in d.terms:
        if isinstance(atom, Var):
            a = names[atom.name]
        else:
            assert isinstance(atom, FloorDiv)
            a = f"nnc_floordiv({cexpr(atom.num, names)}, {atom.den})"
        parts.append(a if coeff == 1 else f"{coeff} * {a}")
    text = " + ".join(parts)
    if d.const:
        text += f" + {d.const}" if d.const > 0 else f" - {-d.const}"
    return f"({text})".replace("+ -", "- ")


def _numel(shape) -> Any:
    return product(shape) if shape else 1


def csize(shape, names: Mapping[str, str]) -> str:
    """The element count of `shape` as a C expression: one linear size where
    the dimensions allow it, else the product of the axes' sizes (`[Z, A]`
    has Z * A elements, which no linear form holds)."""
    try:
        return cexpr(_numel(shape), names)
    except SymbolicError:
        return " * ".join(f"(long){cexpr(d, names)}" for d in shape)


def bound_numel(shape, bounds: Mapping[str, int]) -> int:
    """The element count of `shape` with every named dimension at its bound."""
    return math.prod(evaluate(d, bounds) if isinstance(d, Sym) else d for d in shape)


def _is_depthwise(n: Node) -> bool:
    """One input channel per group, several groups: the direct depthwise kernel."""
    a = n.attrs
    return n.op.name in ("conv1d", "conv2d", "depthwise_conv2d") and a["in_channels"] == a["groups"] > 1


WINO_MIN_TILES = 40   # 2x2 output tiles below which a 3x3 convolution stays a packed matrix multiply
WINO_ROOMS = (1.0, 0.5)   # the shares of the room beside the live values that Winograd's and the direct kernels'
                          # scratch may take: the first where its placement does not grow the arena past the
                          # second's (placement is not perfect: the whole room grew the U-Net's arena 1.15x)


_ROOM = memory.LastGraph()    # per thread: (headroom, peak, shares) of the last graph seen


def _room(graph: Graph) -> tuple[dict[str, int], int, dict[str, float]]:
    """(node label -> bytes its scratch may take with the values alive at its
    step and stay within the peak of live values (the arena's lower bound),
    that peak, node label -> the share of that room its kernel's scratch
    takes, WINO_ROOMS[-1] where none is given). Computed once per graph and
    thread (`memory.LastGraph`, so a layout and the code generated for it
    see the same answer). Every node takes the larger share WINO_ROOMS[0]
    when the layout that gives it to all is no larger than the one that
    gives the smaller to all (ResNet-18's Winograd layers ran 10-30% faster
    in the larger blocks of the whole room); else the nodes whose scratch
    the larger share changes take it a group at a time, in schedule order,
    each group kept while the arena stays at the smaller share's and halved
    where it does not (one layout a group: about k log N layouts for k
    layers refused of N; the U-Net's first decoder layer: 100 -> 62 us, the
    arena unchanged)."""
    got = _ROOM.get(graph)
    if got is None:
        live, peak = memory.live_profile(graph)
        room = {n.label: peak - live[i] for i, n in enumerate(graph.nodes)}
        shares: dict[str, float] = {}
        if any(n.op.name == "conv2d" for n in graph.nodes):    # the kernels that take a share of the room
            def arena(trial: dict[str, float]) -> int:
                _ROOM.put(graph, (room, peak, trial))     # what the trial's scratch_bytes reads
                return memory.layout(graph, scratch=scratch_bytes, persistent=state_bytes(graph)).plan.arena_bytes

            def scratch(trial: dict[str, float]) -> list[dict[str, int]]:
                _ROOM.put(graph, (room, peak, trial))
                return [scratch_bytes(n, graph) for n in graph.nodes]

            whole = {n.label: WINO_ROOMS[0] for n in graph.nodes}
            try:
                base = arena({})
                if arena(whole) <= base:
                    shares = whole
                else:
                    changed = [n.label for n, a, b in zip(graph.nodes, scratch({}), scratch(whole)) if a != b]
                    groups = [changed[:len(changed) // 2], changed[len(changed) // 2:]]
                    while groups:                       # halves of a group that grows the arena, in order
                        group = groups.pop(0)
                        trial = {**shares, **dict.fromkeys(group, WINO_ROOMS[0])}
                        if arena(trial) <= base:
                            shares = trial
                        elif len(group) > 1:
                            groups[:0] = [group[:len(group) // 2], group[len(group) // 2:]]
            except BaseException:
                _ROOM.put(None, None)
                raise
        got = (room, peak, shares)
        _ROOM.put(graph, got)
    return got


def _headroom(graph: Graph) -> dict[str, int]:
    """node label -> bytes its scratch may take beside the values alive at its step (`_room`)."""
    return _room(graph)[0]


def _kernel_room(n: Node, graph: Graph) -> float:
    """Bytes Winograd's or a direct kernel's scratch may take at `n`'s step."""
    room, _, shares = _room(graph)
    return room.get(n.label, 0) * shares.get(n.label, WINO_ROOMS[-1])


PANEL_SLACK = 0.05    # the share of the peak a 1-d convolution's panel may add to the arena
PANEL_MIN = 8         # the shallowest panel of a 1-d convolution; below it, the direct kernel


def _panel_room(n: Node, graph: Graph) -> int:
    """Rows of NR_MAX floats that a 1-d convolution's panel may take: the
    room the values alive at its step leave below their peak, plus
    PANEL_SLACK of the peak. A short sequence's panel can otherwise be
    larger than the values themselves (glu_tcn at 16 steps: 6 KiB of panel
    beside 4 KiB of values, 2.25x the lower bound)."""
    headroom, peak, _ = _room(graph)
    room = headroom.get(n.label, 0) + PANEL_SLACK * peak
    return int(room) // (NR_MAX * 4)


WINO4_MIN_SIDE = 16    # output rows and columns below which F(4x4, 3x3) stays F(2x2, 3x3) (its spare tile a
                       # row and its blocks of whole tile rows waste too much of a small output)
WINO_NB = 64           # the most tiles of one block of nnc_winograd (the columns of its matrix multiplies)


def _wino_scratch(n: Node, m: int, rows: int) -> int:
    """Bytes of the scratch of Winograd's F(m x m, 3x3) (nnc_winograd,
    NNC_WINO_SCRATCH) for `n` in blocks of `rows` tile rows."""
    tw = -(-n.shape[2] // m)
    nb = -(-(rows * (tw + 1)) // NR_MAX) * NR_MAX
    mp = -(-n.attrs["filters"] // MR) * MR
    return ((m + 2) ** 2 * (n.attrs["in_channels"] + mp) * nb + 40 * (m * (rows + 1) * (tw + 1) + 1) + 40 * nb) * 4


def _is_winograd(n: Node, graph: Graph) -> bool:
    """A 2-d 3x3 convolution of stride 1, no dilation, one group, with at
    least WINO_MIN_TILES output tiles of 2x2, whose scratch (one tile row a
    block) fits beside the values alive at its step within the share of the
    room below their peak that `_kernel_room` gives (so the arena stays at
    the lower bound; the whole room at every step grew the U-Net sample's
    arena 1.15x, no share at all 1.6x): Winograd's
    F(2x2, 3x3) does 16 multiplies a tile per input channel where the
    matrix multiply does 36 (its weights are 16/9 larger, so small outputs,
    which read each weight few times, stay with the matrix multiply)."""
    a = n.attrs
    if n.op.name != "conv2d" or n.history or graph.streaming or len(n.shape) != 3:
        return False
    oh, ow = n.shape[1], n.shape[2]
    return (tuple(a["kernel"]) == (3, 3) and tuple(a["stride"]) == (1, 1) and tuple(a["dilation"]) == (1, 1)
            and a["groups"] == 1 and isinstance(oh, int) and isinstance(ow, int)
            and -(-oh // 2) * -(-ow // 2) >= WINO_MIN_TILES
            and _wino_scratch(n, 2, 1) <= _kernel_room(n, graph))


def wino_rows(n: Node, graph: Graph, m: int) -> int | None:
    """Tile rows of one block when a 3x3 convolution that Winograd takes
    (`_is_winograd`) runs by F(m x m, 3x3), else None: blocks of as many
    tile rows as keep at most WINO_NB tiles and a scratch within the room
    Winograd may take; F(4x4, 3x3) only for outputs at least
    WINO4_MIN_SIDE a side."""
    if not _is_winograd(n, graph) or (m == 4 and min(n.shape[1], n.shape[2]) < WINO4_MIN_SIDE):
        return None
    th, tw = -(-n.shape[1] // m), -(-n.shape[2] // m)
    room = _kernel_room(n, graph)
    rows = max(1, min(th, WINO_NB // (tw + 1)))
    while rows > 1 and _wino_scratch(n, m, rows) > room:
        rows -= 1
    return rows if _wino_scratch(n, m, rows) <= room else None


BCAST_CB = 32          # the most output channels of one register tile of nnc_conv_bcast (AVX-512); the packed
                       # weights' output channels are padded to a multiple of it
BCAST_ROW = 16         # NNC_CB: output channels of one packed weight block (a tap's row is one 64-byte line)
BCAST_PT = (6, 7)      # NNC_PT on the targets: the output pixels of its register tile
BCAST_TAPS = 1024      # NNC_BCAST_TAPS: the most taps of one depth block
BCAST_DEPTH = 72       # taps of one depth block: its weights (9 KiB for a tile of 32 channels) stay in L1 across
                       # the band's tiles, beside their partial sums
BCAST_WHOLE = 288      # taps of a layer that runs in one depth block (no partial sums: a stem's few channels)
BCAST_L1 = 16384       # bytes of a depth block of a 1x1 convolution read in place: its input rows (4 bytes a
                       # pixel) and weights (a 64-byte line per channel on AVX2, two on AVX-512) stay in half of a 32 KiB L1
BCAST_L1_DEPTH = 32    # the shallowest depth block that rule gives (a large plane's rows overflow L1 anyway)
ROWS_RB = 16           # NNC_RB at its widest (AVX-512): output channels of nnc_conv_rows's register tile
ROWS_RV = 16           # ... and its pixels (NNC_VL); a layer of at most 8 channels takes 8 x 32 (NNC_ROWS_TWO)
ROWS_WQ = 32           # the multiple of pixels its phase rows are padded to (NNC_ROWS_WQ)
ROWS_TAPS = 288        # the most taps (input channels x kernel) it takes: a 16-channel tile's weights (18 KiB)
                       # stay in L1 beside the band's rows (DEEP's 64 -> 72 at 14x14, 576 taps: 270 us where
                       # nnc_conv_bcast's depth blocks take 209)
ROWS_BAND = 65536      # bytes of nnc_conv_rows's band at most (it stays in L2 while its tiles read it)
# the cost model that picks the kernel of a 2-d convolution (`_direct_costs`), in multiply-adds at the
# peak rate: the share of the peak each reaches, packing one column element (read in one stride or
# strided), storing one output transposed (nnc_conv_bcast), copying one out (nnc_conv_planes),
# copying one input element into a phase row and finishing one register tile (nnc_conv_rows: ~44 ns a
# tile on a Zen 4 core, MobileNetV2's and ResNet-18's stems alike)
GEMM_EFF, BCAST_EFF, PLANES_EFF, ROWS_EFF = 0.95, 0.9, 0.72, 0.95
PACK_COST, PACK_COST_STRIDED, STORE_COST, COPY_COST, BUILD_COST, ROWS_BUILD = 32, 48, 16, 8, 16, 4
ROWS_TILE = 2600


def _bcast_in_place(n: Node) -> bool:
    """Whether nnc_conv_bcast reads the input of `n` in place (a 1x1
    convolution of stride 1 without padding, at least a tile of pixels).
    The tile is taken at its widest on any target (7 pixels; 6 on AVX2),
    so a plane of 6 pixels gets the band scratch on every target: the
    kernel's own test (NNC_PT) is looser, and more scratch is never wrong."""
    a = n.attrs
    return (tuple(a["kernel"]) == (1, 1) and tuple(a["stride"]) == (1, 1) and not any(map(any, a["pads"]))
            and n.shape[1] * n.shape[2] >= max(BCAST_PT))


def _bcast_depth(n: Node) -> int:
    """Input channels of one depth block of nnc_conv_bcast: all of them when
    the layer has at most BCAST_WHOLE taps, else BCAST_DEPTH taps' worth
    (ResNet-18's 7x7 3x3 layers on AVX-512: 2.83 ms in blocks of 32
    channels, 36 KiB of weights a tile, 2.66 in 16, 2.30 in 8, 2.42 in 4);
    for a 1x1 convolution read in place, as many channels as keep
    their input rows and weights within BCAST_L1 bytes (at least
    BCAST_L1_DEPTH): MobileNetV2's 7x7 pointwise layers ran at ~50 GFLOP/s
    in blocks of 288 channels (56 KiB of input rows), ~75 in blocks of 63
    (AVX2, one core of ~94 peak)."""
    a = n.attrs
    cin, taps = a["in_channels"], math.prod(a["kernel"])
    if _bcast_in_place(n):
        return min(cin, max(BCAST_L1_DEPTH, BCAST_L1 // (4 * n.shape[1] * n.shape[2] + 64)))
    if cin * taps <= BCAST_WHOLE:
        return cin
    return min(cin, max(1, BCAST_DEPTH // taps))


def _bcast_scratch(n: Node, rows: int, depth: int) -> int:
    """Bytes of nnc_conv_bcast's scratch for `n` in bands of `rows` output
    rows and depth blocks of `depth` input channels (on any target)."""
    a = n.attrs
    cin, oh, ow = a["in_channels"], n.shape[1], n.shape[2]
    (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"], a["dilation"]
    blocks = min(depth, BCAST_TAPS // (kh * kw)) < cin       # the kernel's depth blocks: at most BCAST_TAPS taps
    if _bcast_in_place(n):
        # read in place: the partial sums of its tiles along the flattened plane only
        return max(-(-(oh * ow) // pt) * pt for pt in BCAST_PT) * BCAST_CB * 4 if blocks else 4
    wp = (ow - 1) * sw + (kw - 1) * dw + 1
    band = cin * ((rows - 1) * sh + (kh - 1) * dh + 1) * wp
    parts = max(-(-(rows * ow) // pt) * pt for pt in BCAST_PT) * BCAST_CB if blocks else 0
    return (band + parts) * 4


def _planes_scratch(n: Node, rows: int) -> int:
    """Bytes of nnc_conv_planes's scratch for `n` in bands of `rows` output
    rows (NNC_PLANES_SCRATCH)."""
    a = n.attrs
    cin, ow = a["in_channels"], n.shape[2]
    (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"], a["dilation"]
    wq = ow + (kw - 1) * dw // sw
    planes = cin * sh * sw * (rows + (kh - 1) * dh // sh + 1) * wq
    return (planes + NR_MAX + -(-a["filters"] // MR) * MR * -(-(rows * wq) // NR_MAX) * NR_MAX) * 4


def _rows_wq(n: Node) -> int:
    """NNC_ROWS_WQ: the width of one phase row of nnc_conv_rows's band."""
    a = n.attrs
    (_, kw), (_, sw), (_, dw) = a["kernel"], a["stride"], a["dilation"]
    return -(-n.shape[2] // ROWS_WQ) * ROWS_WQ + (kw - 1) * dw // sw


def _rows_scratch(n: Node, rows: int) -> int:
    """Bytes of nnc_conv_rows's scratch for `n` in bands of `rows` output
    rows: per input channel, the band's input rows by column phase."""
    a = n.attrs
    (kh, _), (sh, sw), (dh, _) = a["kernel"], a["stride"], a["dilation"]
    return a["in_channels"] * ((rows - 1) * sh + (kh - 1) * dh + 1) * sw * _rows_wq(n) * 4


def _direct_costs(n: Node) -> dict[str, float]:
    """The cost model of a 2-d convolution of one group, in multiply-adds at
    the peak rate: the packed matrix multiply ("gemm") pads the pixels to
    NNC_NR and packs the columns (a 1x1 convolution of stride 1 reads them
    in place); nnc_conv_bcast pads the output channels to BCAST_CB (32)
    and the output to whole tiles of NNC_PT pixels, and stores transposed;
    nnc_conv_planes builds its planes, computes the band's padding columns
    too and copies its products out; nnc_conv_rows pads the output channels
    to ROWS_RB and each output row to whole vectors of ROWS_RV pixels (8
    channels and two vectors for a layer of at most 8), and
    copies the input into phase rows (at most ROWS_TAPS taps)."""
    a = n.attrs
    m, k = _conv_dims(n)
    oh, ow = n.shape[1], n.shape[2]
    N = oh * ow
    (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"], a["dilation"]
    pointwise = (kh, kw) == (1, 1) and (sh, sw) == (1, 1) and not any(map(any, a["pads"]))
    strided = (sh, sw) != (1, 1) or (dh, dw) != (1, 1)
    gemm = -(-m // MR) * MR * k * -(-N // NR_MAX) * NR_MAX / GEMM_EFF
    if not pointwise:
        gemm += k * N * (PACK_COST_STRIDED if strided else PACK_COST)
    out = {"gemm": gemm}
    if pointwise:              # read in place, in tiles along the flattened plane
        out["bcast"] = -(-m // BCAST_CB) * BCAST_CB * k * N / BCAST_EFF + m * N * STORE_COST
    else:
        out["bcast"] = (-(-m // BCAST_CB) * BCAST_CB * k * -(-N // BCAST_PT[1]) * BCAST_PT[1] / BCAST_EFF
                        + m * N * STORE_COST)
    if k <= ROWS_TAPS:
        rb, rv = (ROWS_RB // 2, 2 * ROWS_RV) if m <= ROWS_RB // 2 else (ROWS_RB, ROWS_RV)
        tiles = -(-m // rb) * oh * -(-ow // rv)
        out["rows"] = (tiles * (rb * k * rv / ROWS_EFF + ROWS_TILE)
                       + a["in_channels"] * oh * sh * sw * _rows_wq(n) * ROWS_BUILD)
    if kh * kw > 1:            # a 1x1 one's packed panel is its one plane
        wq = ow + (kw - 1) * dw // sw
        phases = len({(i * dh % sh, j * dw % sw) for i in range(kh) for j in range(kw)})
        out["planes"] = (-(-m // MR) * MR * k * oh * wq / PLANES_EFF + m * N * COPY_COST
                         + a["in_channels"] * phases * oh * wq * BUILD_COST)
    return out


WINO2_XF = 16          # multiply-adds' worth of transforming one element of a 4x4 tile in or out (F(2x2), fitted
                       # to the concat sample's 3 -> 16 and 16 -> 32 layers at 32x32 and 16x16: 21 and 29 us)


def _wino2_cost(n: Node) -> float:
    """The cost model's estimate of F(2x2, 3x3) for `n` (as `_direct_costs`):
    16 multiplies a tile per input and output channel (rows padded to MR),
    and the transforms of every tile's input and output channels, which
    dominate a shallow layer's."""
    m, _ = _conv_dims(n)
    cin, tiles = n.attrs["in_channels"], -(-n.shape[1] // 2) * -(-n.shape[2] // 2)
    return tiles * 16 * (cin * -(-m // MR) * MR / GEMM_EFF + (cin + m) * WINO2_XF)


def direct_plan(n: Node, graph: Graph) -> tuple[str, int, int] | None:
    """(kernel, depth of a block, output rows of a band) when `n` runs as
    nnc_conv_bcast ("bcast": depth in input channels), nnc_conv_planes
    ("planes": depth in taps) or nnc_conv_rows ("rows": one block, its bands
    within ROWS_BAND bytes where a row fits), else None: a 2-d convolution of one group
    whose shape is known, that the cost model gives to one of them, and
    whose scratch (with bands of as many rows as fit) fits beside the values
    alive at its step (the room Winograd may take) or within the packed
    panel it replaces."""
    a = n.attrs
    if (n.op.name != "conv2d" or n.history or graph.streaming or len(n.shape) != 3 or a["groups"] != 1
            or not all(isinstance(d, int) for d in n.shape)):
        return None
    taps = math.prod(a["kernel"])
    if taps > BCAST_TAPS:
        return None
    room = max(panel_rows(n, graph) * NR_MAX * 4, _kernel_room(n, graph))
    costs = _direct_costs(n)
    for kind in sorted(costs, key=costs.get):
        if kind == "gemm":
            return None
        if kind == "planes":
            depths = [min(_conv_dims(n)[1], KC)]
        elif kind == "rows":
            depths = [a["in_channels"]]
        else:   # a 1x1 layer read in place whose partial sums find no room runs in one block (4 bytes of scratch)
            whole = _bcast_in_place(n) and a["in_channels"] <= BCAST_TAPS
            depths = list(dict.fromkeys([_bcast_depth(n)] + ([a["in_channels"]] if whole else [])))
        for depth in depths:
            scratch = {"bcast": lambda r: _bcast_scratch(n, r, depth), "planes": lambda r: _planes_scratch(n, r),
                       "rows": lambda r: _rows_scratch(n, r)}[kind]
            rows = n.shape[1]
            while rows > 1 and scratch(rows) > (min(room, ROWS_BAND) if kind == "rows" else room):
                rows = -(-rows // 2) if rows > 8 else rows - 1
            if scratch(rows) <= room:
                return kind, depth, rows
    return None


DW_SCRATCH = 4096      # floats of nnc_depthwise's scratch (16 KiB: its phase planes stay in L1)
DW_TAPS = 64           # NNC_DW_TAPS: the most taps its phase planes take (larger kernels run row by row)
DW_PHASES = 8          # NNC_DW_PHASES: the largest stride they take
DW_BLOCK = 64          # NNC_DW_BLOCK


def _dw_scratch(n: Node, rows: int) -> int:
    """Floats of nnc_depthwise's scratch (NNC_DW_SCRATCH) for bands of `rows` output rows."""
    a = n.attrs
    kh, kw = (1, a["kernel"][0]) if len(n.shape) == 2 else a["kernel"]
    sh, sw = (1, a["stride"][0]) if len(n.shape) == 2 else a["stride"]
    dh, dw = (1, a["dilation"][0]) if len(n.shape) == 2 else a["dilation"]
    wq = n.shape[-1] + (kw - 1) * dw // sw
    return sh * sw * (rows + (kh - 1) * dh // sh + 1) * wq + rows * wq + 2 * DW_BLOCK


DWC = 16               # NNC_DWC: output channels side by side in nnc_depthwise_cv
DWC_STAGE = 4096       # NNC_DWC_STAGE
DWC_RUN = 96           # NNC_DWC_RUN
DWC_SCRATCH = 10240    # floats of nnc_depthwise_cv's scratch at most (40 KiB: MobileNetV2's widest takes 9,008)


def _dwc_scratch(n: Node, ih: int, iw: int) -> int:
    """Floats of nnc_depthwise_cv's own scratch (NNC_DWC_SCRATCH) for a 2-d
    depthwise convolution `n` of input height `ih` and width `iw`: a ring of input rows
    [width][16] and the staged output rows."""
    a = n.attrs
    (kh, kw), (_, sw), (dh, dw) = a["kernel"], a["stride"], a["dilation"]
    oh, ow, pl = n.shape[1], n.shape[2], a["pads"][1][0]
    width = max((ow - 1) * sw + (kw - 1) * dw + 1, iw + pl)
    batch = min(-(-DWC_RUN // iw), ih)
    rows = min(max(DWC_STAGE // (ow * DWC), 1), oh)
    return DWC * ((kh - 1) * dh + batch) * width + DWC * ow * rows


def _dwc_need(n: Node, graph: Graph) -> int | None:
    """Floats of nnc_depthwise_cv's ring and staging for a depthwise
    convolution that runs by phase planes, if it is 2-d and they fit in
    DWC_SCRATCH floats; else None."""
    if not depthwise_rows(n, graph) or len(n.shape) != 3:
        return None
    need = _dwc_scratch(n, *graph.shape_of(n.inputs[0])[1:])
    return need if need <= DWC_SCRATCH else None


def depthwise_cv(n: Node, graph: Graph) -> bool:
    """Whether a depthwise convolution that runs by phase planes runs with
    its channels side by side (nnc_depthwise_cv) where the C compiler
    targets 16-float vectors: every 2-d one whose ring and staging fit in
    DWC_SCRATCH floats; its scratch then holds what either method needs
    (the phase planes in bands of depthwise_rows rows elsewhere)."""
    return _dwc_need(n, graph) is not None


PW_DEPTH = 256         # the most input channels of a 1x1 convolution fused into its depthwise reader (each block of
                       # 16 channels reads its whole input again)
PW_ACTS = frozenset({"relu", "relu6"})   # the activations nnc_pw applies (besides none)
PW_MIN_PIXELS = 64     # the smallest plane a fused 1x1 convolution takes: on MobileNetV2's 7x7 ones the ring's 60
                       # blocks of 16 channels (each reading the 31 KB input again) lost to the whole matrix multiply
                       # in the plan, 227 -> 275 us a block (its 14x14 ones gain, 311/311/275 -> 295/286/253)
PW_ROW = 48            # NNC_PWB: output channels of a block of a fused 1x1 convolution's weights
PW_PLANES = 40960      # floats of a block's planes beyond which nnc_pw_depthwise's other targets take 16 channels at
                       # a time, not multiples of 48 (whole tiles of MR = 6 rows: 16 wasted 2 of 18, +10-35% on AVX2)


def fuse_blocks(graph: Graph) -> Graph:
    """The C plan's block fusion: a 1x1 convolution (stride 1, no padding,
    one group, at most PW_DEPTH input channels, no activation or relu or
    relu6, a plane of at least PW_MIN_PIXELS) whose output only a 2-d depthwise convolution of one output
    channel per input channel reads, with at most DW_TAPS taps and its ring
    within DWC_SCRATCH floats, becomes that convolution's `pre`: computed
    inside its kernel (nnc_pw_depthwise), its output never stored
    (MobileNetV2's expansions: 4.8 MB of its 6 MB arena at 112x112).
    The two must be neighbours in the schedule (so the weights keep their
    order, in which default initialisation draws them), and the fused
    kernel's scratch no larger than the expansion and the depthwise
    convolution's own scratch. The arena must not grow: the fused step
    keeps the 1x1 convolution's input alive beside the depthwise output,
    so where fusing every pair grows the trial layout's arena, pairs are
    taken one by one in schedule order while it does not.
    In: an optimised graph; out: the graph the C plan lays out and emits."""
    if graph.streaming:
        return graph
    reader = single_reader(graph)
    pairs: dict[str, Node] = {}                   # depthwise label -> the fused node
    for e, d in zip(graph.nodes, graph.nodes[1:]):
        a = d.attrs
        if (not _is_depthwise(d) or len(d.shape) != 3 or a["filters"] != a["in_channels"] or d.pre is not None
                or math.prod(a["kernel"]) > DW_TAPS or not all(isinstance(v, int) for v in d.shape)):
            continue
        if d.inputs[0] != e.label or reader.get(e.label) != d.label or not _fusable_pointwise(e):
            continue
        fused = replace(d, pre=e)
        if (_dwc_scratch(d, *e.shape[1:]) > DWC_SCRATCH
                or _fused_scratch(fused, graph) > math.prod(e.shape) + _depthwise_scratch(d, graph)):
            continue
        pairs[d.label] = fused
    if not pairs:
        return graph

    def fuse(chosen: Mapping[str, Node]) -> tuple[Graph, int]:
        g = bypass(graph, {n.pre.label: n.pre.inputs[0] for n in chosen.values()}, dict(chosen))
        lay = memory.layout(g, scratch=scratch_bytes, persistent=state_bytes(g))
        return g, lay.plan.arena_bytes

    base = fuse({})[1]
    fused_graph, arena = fuse(pairs)
    if arena <= base:
        return fused_graph
    kept: dict[str, Node] = {}                    # the fused step keeps the 1x1 input alive: pair by pair
    for d, fused in pairs.items():
        if fuse({**kept, d: fused})[1] <= base:
            kept[d] = fused
    return fuse(kept)[0]


def _fusable_pointwise(e: Node) -> bool:
    a = e.attrs
    return (e.op.name == "conv2d" and a["groups"] == 1 and tuple(a["kernel"]) == (1, 1)
            and tuple(a["stride"]) == (1, 1) and not any(map(any, a["pads"])) and not e.history
            and a["in_channels"] <= PW_DEPTH and len(e.shape) == 3 and all(isinstance(v, int) for v in e.shape)
            and e.shape[1] * e.shape[2] >= PW_MIN_PIXELS
            and (e.activation is None or e.activation.op in PW_ACTS) and e.pre is None)


def _fused_scratch(n: Node, graph: Graph) -> int:
    """Floats of nnc_pw_depthwise's scratch: with AVX-512 the ring of
    nnc_depthwise_cv, elsewhere (NNC_PW_PLANES) a block's planes of the 1x1
    convolution (`pw_block` channels) and `_pw_extra`."""
    ih, iw = n.pre.shape[1:]
    return max(_dwc_scratch(n, ih, iw), min(n.shape[0], pw_block(n, graph)) * ih * iw + _pw_extra(n, graph))


def _pw_extra(n: Node, graph: Graph) -> int:
    """Floats of nnc_pw_depthwise's scratch beside its planes (NNC_PW_PLANES):
    the zero-padded last columns where the plane is not whole tiles, then
    nnc_depthwise's phase planes (none row by row)."""
    cin, hw, rows = n.pre.attrs["in_channels"], n.pre.shape[1] * n.pre.shape[2], depthwise_rows(n, graph)
    return (NR_MAX * cin if hw % NR_MAX else 0) + (_dw_scratch(n, rows) if rows else 0)


def pw_block(n: Node, graph: Graph) -> int:
    """Channels of one block of nnc_pw_depthwise on targets without the
    16-float ring (`nnc_conv.kc`): the largest multiple of PW_ROW (whole
    blocks of weights and register tiles) whose planes fit in PW_PLANES
    floats and leave the scratch no larger than the unfused pair's (the
    expansion and the depthwise convolution's scratch), else 16."""
    hw, c = n.pre.shape[1] * n.pre.shape[2], n.shape[0]
    room = min(PW_PLANES, c * hw + _depthwise_scratch(n, graph) - _pw_extra(n, graph))
    return next((PW_ROW * k for k in range(-(-c // PW_ROW), 0, -1) if min(c, PW_ROW * k) * hw <= room), DWC)


def _depthwise_scratch(n: Node, graph: Graph) -> int:
    """Floats of a depthwise convolution's scratch (0: row by row)."""
    rows = depthwise_rows(n, graph)
    return max(_dw_scratch(n, rows), _dwc_need(n, graph) or 0) if rows else 0


def depthwise_rows(n: Node, graph: Graph) -> int | None:
    """Output rows of one band when a depthwise convolution runs by phase
    planes (nnc_depthwise with scratch), else None (row by row): its shape
    is known, its kernel has at most DW_TAPS taps, a band of one row fits in
    DW_SCRATCH floats, and it is not a 3x3 one of stride 1 keeping rows of
    32 or more (the row-by-row kernel reads those in place, no copy)."""
    a = n.attrs
    if not _is_depthwise(n) or graph.streaming or not all(isinstance(d, int) for d in n.shape):
        return None
    if math.prod(a["kernel"]) > DW_TAPS or max(a["stride"]) > DW_PHASES or _dw_scratch(n, 1) > DW_SCRATCH:
        return None
    if (len(n.shape) == 3 and tuple(a["kernel"]) == (3, 3) and tuple(a["stride"]) == (1, 1)
            and tuple(a["dilation"]) == (1, 1) and n.shape[2] >= 32):
        return None
    oh = n.shape[1] if len(n.shape) == 3 else 1
    rows = 1
    while rows < oh and _dw_scratch(n, rows + 1) <= DW_SCRATCH:
        rows += 1
    return rows


def _conv_kind(n: Node, graph: Graph) -> str:
    """The kernel of a convolution: the direct depthwise one, the direct
    1-d one for streaming plans (nnc_conv1d_stream: the history read where it
    is kept, no scratch) and for 1-d ones whose packed panel would grow the
    arena (it needs no scratch),
    Winograd's F(4x4, 3x3) or F(2x2, 3x3) for large 3x3 ones (F(2x2) unless the one along output
    rows costs less, `_wino2_cost`: a shallow layer's transforms outweigh the multiplies), the
    direct one over output channels, the one along output rows or the one over shifted input planes
    (`direct_plan`) for strided, shallow or small 2-d ones, or the packed matrix multiply."""
    if graph.streaming and n.op.name == "conv1d":
        return "direct"          # depthwise ones too: nnc_conv1d_stream reads the history where it is
    if _is_depthwise(n):
        return "depthwise"
    if wino_rows(n, graph, 4) is not None:
        return "winograd4"
    plan = direct_plan(n, graph)
    if _is_winograd(n, graph) and not (plan is not None and plan[0] == "rows"
                                       and _direct_costs(n)["rows"] < _wino2_cost(n)):
        return "winograd"
    if plan is not None:
        return plan[0]
    if n.op.name == "conv1d" and not n.history and _panel_room(n, graph) < PANEL_MIN:
        return "direct"
    return "gemm"


def panel_rows(n: Node, graph: Graph) -> int:
    """The depth of a convolution's packed panel (its scratch is this many
    rows of NR_MAX floats): KC, but no more than K, and for a small layer no
    more than a quarter of its output (at least KC_MIN rows), so that the
    panel never dominates the values live beside it and the arena stays near
    the live-set lower bound (LeNet: 64 rows, not 150). A 1-d convolution's
    panel also fits in the room beside the live values (`_panel_room`, at
    least PANEL_MIN rows), in passes of equal depth."""
    _, k = _conv_dims(n)
    out_floats = bound_numel(n.shape, graph.bounds)
    rows = min(k, KC, max(KC_MIN, out_floats // (4 * NR_MAX)))
    if n.op.name == "conv1d" and not n.history and not graph.streaming:
        fit = max(PANEL_MIN, _panel_room(n, graph))
        if fit < rows:
            rows = -(-k // -(-k // fit))
    return rows


def _conv_dims(n: Node) -> tuple[int, int]:
    """(M, K) of the packed matrix multiply of a convolution, per group."""
    a = n.attrs
    g = a["groups"]
    return a["filters"] // g, a["in_channels"] // g * math.prod(a["kernel"])


TRANSPOSED = ("conv_transpose1d", "conv_transpose2d")


def transpose_panel(n: Node, graph: Graph) -> tuple[int, int]:
    """(panel depth, rows of NR_MAX floats of scratch) of a transposed
    convolution as nnc_conv_transpose_gemm: C [cout/g*kh*kw][h*w] per group
    is a matrix multiply over K = cin/g reading the input in place (MR rows
    of C at a time on the stack); its panel (min(K, KC) rows) holds a short
    last tile of input pixels, so there is none when h*w is a known multiple
    of NR_MAX."""
    a = n.attrs
    depth = min(a["in_channels"] // a["groups"], KC)
    spatial = graph.shape_of(n.inputs[0])[1:]
    whole = all(isinstance(d, int) for d in spatial) and math.prod(spatial) % NR_MAX == 0
    return depth, 0 if whole else depth


# ------------------------------------------------------------------ scratch and state for the planner

def scratch_bytes(node: Node, graph: Graph) -> dict[str, int]:
    """name -> bytes of one example, for `memory.layout`."""
    op = node.op.name
    if op in ("conv1d", "conv2d", "depthwise_conv2d"):
        out: dict[str, int] = {}
        kind = _conv_kind(node, graph)
        if kind == "gemm":
            out["panel"] = panel_rows(node, graph) * NR_MAX * 4
        elif kind == "winograd":
            out["panel"] = _wino_scratch(node, 2, wino_rows(node, graph, 2))
        elif kind == "winograd4":
            out["panel"] = _wino_scratch(node, 4, wino_rows(node, graph, 4))
        elif kind == "bcast":
            _, depth, rows = direct_plan(node, graph)
            out["panel"] = _bcast_scratch(node, rows, depth)
        elif kind == "planes":
            out["panel"] = _planes_scratch(node, direct_plan(node, graph)[2])
        elif kind == "rows":
            out["panel"] = _rows_scratch(node, direct_plan(node, graph)[2])
        elif kind == "depthwise" and node.pre is not None:
            out["panel"] = _fused_scratch(node, graph) * 4
        elif kind == "depthwise" and (floats := _depthwise_scratch(node, graph)):
            out["panel"] = floats * 4
        return out
    if op in TRANSPOSED:
        rows = transpose_panel(node, graph)[1]
        return {"panel": rows * NR_MAX * 4} if rows else {}
    if op == "attention":
        # nnc_attention: every row's key and value, one query row (then its context) and one
        # head's scores; streaming, the keys and values go straight into the cache (state)
        t, e = graph.shape_of(node.inputs[0])
        rows = evaluate(t, graph.bounds)
        if graph.streaming:
            return {"query": e * 4, "row": graph.bounds.get(graph.time_dim, rows) * 4}
        return {"kv": rows * 2 * e * 4, "query": e * 4, "row": rows * 4}
    if op in ("gru", "lstm", "rnn"):
        plan = rnn_plan(node, graph)
        fixed = {} if plan.on_stack else plan.fixed
        return {name: floats * 4 for name, floats in {**fixed, **plan.sized}.items()}
    return {}


TILE_FLOATS = 2048    # the most floats of fixed-size scratch a recurrent step keeps on the stack (8 KiB)
RNN_SLACK = 0.05      # the share of the peak a two-way stack's recomputed rows may add to the arena
RNN_GATES = {"gru": 3, "lstm": 4, "rnn": 1}
RNN_BLOCK = 4         # the most steps whose input projections one pass over the weights makes
NNC_RNN_KB = 4        # the kernels' limit on it (nnc_v2_tensor.h)


@dataclass(frozen=True)
class RnnPlan:
    """Where a recurrent step's scratch lives. `fixed`: buffers whose size does
    not depend on the sequence length (name -> floats, in order), on the stack
    (one local array, `tile`) when `on_stack`, else in the arena; `sized`:
    buffers that grow with the length, in the arena; `seg`: the block length
    of a two-way stack's recomputed layer (nnc_rnn_stack), its rows in `seg`
    (fixed) and `rows` (sized); `block`: a stack's steps per block of input
    projections (nnc_rnn_proj)."""

    fixed: Mapping[str, int]
    sized: Mapping[str, int]
    seg: int
    on_stack: bool
    block: int = 1


def rnn_tile(op: str, a: Mapping[str, Any], block: int) -> int:
    """Floats of nnc_rnn_stack's `tile` for blocks of `block` steps: their
    input projections, the recurrent gate vector, a zero state and two cells."""
    h = a["hidden"]
    return (block + 1) * padded(RNN_GATES[op] * h) + 3 * h


def _in_arena(plan: RnnPlan) -> int:
    """Floats of a recurrent step's scratch in the arena."""
    return sum(plan.sized.values()) + (0 if plan.on_stack else sum(plan.fixed.values()))


def _ring_plan(op: str, a: Mapping[str, Any], block: int, rows: int, room: int) -> RnnPlan:
    """A two-way stack of two or more layers with blocks of `block` steps
    (see rnn_plan): `room`, the bytes its arena scratch may take."""
    h = a["hidden"]
    fixed = {"tile": rnn_tile(op, a, block)}
    state = 2 * h if op == "lstm" else h

    def saved(seg: int) -> int:
        return max(0, -(-rows // seg) - 2) * state

    on_stack = fixed["tile"] + 2 * h <= TILE_FLOATS
    near = min(rows, (TILE_FLOATS - fixed["tile"]) // h) if on_stack else 0
    room = room // 4 - (0 if on_stack else fixed["tile"])
    far = max(0, min(rows - near, room // h))
    while far > 0 and far * h + saved(near + far) > room:
        far -= 1
    if near + far < 2 or saved(near + far) > room:      # the ring of at least 2 rows that keeps the fewest floats
        least = max(0, 2 - near)
        far = min(range(least, max(least, rows - near) + 1), key=lambda f: f * h + saved(near + f))
    if near:
        fixed["seg"] = near * h
    sized = {"rows": far * h} if far else {}
    if saved(near + far):
        sized["ckpt"] = saved(near + far)
    if a["layers"] > 2:
        sized["mid"] = rows * 2 * h
    return RnnPlan(fixed, sized, near + far, on_stack, block)


def _pick_block(plans: list[RnnPlan]) -> RnnPlan:
    """Of a stack's plans for blocks of RNN_BLOCK, 2 and 1 steps, the first
    whose arena scratch is no larger than one step's: a larger block's tile
    leaves fewer ring rows on the stack, for more saved states in the arena."""
    return next(p for p in plans if _in_arena(p) <= _in_arena(plans[-1]))


def rnn_plan(node: Node, graph: Graph) -> RnnPlan:
    """The scratch of a recurrent step. One layer (nnc_gru, nnc_lstm): the two
    gate vectors and, unless streaming, the zero initial state (and cell).
    A stack (nnc_rnn_stack): its tile for blocks of up to RNN_BLOCK steps and,
    for two-way layers above the first, a ring of `seg` rows of the
    recomputed layer (as many as the stack tile holds, `seg`, plus as many
    as fit with the saved states, `rows`, in the room the live values leave
    below their peak and RNN_SLACK of the peak: with `seg` + `rows` >= T
    nothing is recomputed; with no room, the ring that keeps the fewest
    floats) and its saved states (`ckpt`); for three or more two-way layers
    one [T, 2H] buffer for the lower layers (`mid`). Fixed-size scratch of at
    most TILE_FLOATS floats lives on the stack, so it adds nothing to the
    arena; the block is the largest that adds nothing to the arena beside
    one step's (`_pick_block`)."""
    from ..ops.recurrent import stacked
    op, a = node.op.name, node.attrs
    h = a["hidden"]
    if not stacked(op, a):
        fixed = {"gates": 2 * padded(RNN_GATES[op] * h)}
        if not graph.streaming:
            fixed["h"] = h
            if op == "lstm":
                fixed["c"] = h
        return RnnPlan(fixed, {}, 0, sum(fixed.values()) <= TILE_FLOATS)
    top = max(1, min(RNN_BLOCK, NNC_RNN_KB))
    blocks = sorted({top, min(2, top), 1}, reverse=True)
    if not (a["bidirectional"] and a["layers"] > 1):
        plans = [RnnPlan({"tile": rnn_tile(op, a, kb)}, {}, 0, rnn_tile(op, a, kb) <= TILE_FLOATS, kb)
                 for kb in blocks]
        return _pick_block(plans)
    rows = evaluate(graph.shape_of(node.inputs[0])[0], graph.bounds)
    headroom, peak, _ = _room(graph)
    room = int(headroom.get(node.label, 0) + RNN_SLACK * peak)
    return _pick_block([_ring_plan(op, a, kb, rows, room) for kb in blocks])


state_shapes = numpy_gen.state_shapes
state_bytes = numpy_gen.state_bytes


# ------------------------------------------------------------------ weights in the kernels' layouts

def padded(out: int) -> int:
    """The row length of a dense or recurrent weight matrix in the kernels'
    layout: `out` rounded up to a multiple of VB (a dense layer of one
    output keeps 1: it is a dot product), so every tile of the matrix-vector
    kernel is full and its loops have constant trip counts."""
    return out if out == 1 else -(-out // VB) * VB


def pack_rows(w: np.ndarray) -> np.ndarray:
    """[out, in] -> W transposed with zero-padded rows: [in][padded(out)]."""
    out, inp = w.shape
    t = np.zeros((inp, padded(out)), np.float32)
    t[:, :out] = w.T
    return t


def pad_vector(b: np.ndarray) -> np.ndarray:
    """A bias of a dense or recurrent layer, zero-padded to padded(len)."""
    out = np.zeros(padded(b.size), np.float32)
    out[:b.size] = b.reshape(-1)
    return out


def pack_conv_transpose(w: np.ndarray, groups: int) -> np.ndarray:
    """[C_in, C_out/g, *k] -> `pack_conv` of the matrix per group of rows
    (output channel, tap) and columns (input channel): nnc_conv_transpose_gemm's weights."""
    cig, taps = w.shape[0] // groups, int(np.prod(w.shape[2:]))
    m = w.shape[1] * taps
    return pack_conv(w.reshape(groups, cig, m).transpose(0, 2, 1).reshape(groups * m, cig), groups)


def pack_conv(w: np.ndarray, groups: int) -> np.ndarray:
    """[C_out, C_in/g, *k] -> per group, blocks of MR rows: [g][ceil(M/MR)][K][MR]."""
    cout = w.shape[0]
    m = cout // groups
    k = int(np.prod(w.shape[1:]))
    mb = -(-m // MR)
    flat = w.reshape(groups, m, k)
    padded = np.zeros((groups, mb * MR, k), np.float32)
    padded[:, :m] = flat
    return padded.reshape(groups, mb, MR, k).transpose(0, 1, 3, 2).reshape(-1)


WINO_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def pack_winograd(w: np.ndarray) -> np.ndarray:
    """[C_out, C_in, 3, 3] -> the 16 matrices of G g G^T (in float64, then
    rounded), each packed as `pack_conv` packs [C_out, C_in]: [16][ceil(C_out/MR)][C_in][MR]."""
    u = np.einsum("ij,ocjk,lk->iloc", WINO_G, w.astype(np.float64), WINO_G).reshape(16, *w.shape[:2])
    return np.concatenate([pack_conv(u[e].astype(np.float32), 1) for e in range(16)])


WINO4_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                    [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])


def pack_winograd4(w: np.ndarray) -> np.ndarray:
    """[C_out, C_in, 3, 3] -> the 36 matrices of G g G^T for F(4x4, 3x3) (in
    float64, then rounded), each packed as `pack_conv` packs [C_out, C_in]:
    [36][ceil(C_out/MR)][C_in][MR]."""
    u = np.einsum("ij,ocjk,lk->iloc", WINO4_G, w.astype(np.float64), WINO4_G).reshape(36, *w.shape[:2])
    return np.concatenate([pack_conv(u[e].astype(np.float32), 1) for e in range(36)])


def pack_bcast(w: np.ndarray, to: int = BCAST_CB) -> np.ndarray:
    """[C_out, C_in, kh, kw] -> blocks of BCAST_ROW output channels, each
    [K][BCAST_ROW] (K = C_in*kh*kw), the channels padded with zeros to a
    multiple of `to`: [C_out'/ROW][K][ROW] (nnc_conv_bcast's layout, its
    tiles of 32 channels reading two blocks; nnc_conv_rows's with `to` =
    ROWS_RB, its tiles one block or half of one)."""
    cout, k = w.shape[0], int(np.prod(w.shape[1:]))
    padded = -(-cout // to) * to
    out = np.zeros((padded, k), np.float32)
    out[:cout] = w.reshape(cout, k)
    return out.reshape(padded // BCAST_ROW, BCAST_ROW, k).transpose(0, 2, 1).reshape(-1)


def pack_pw(w: np.ndarray) -> np.ndarray:
    """[C_out, C_in, 1, 1] -> blocks of PW_ROW output channels, each
    [C_in][PW_ROW], zeros past C_out (nnc_pw's layout: a 16-lane row of the
    AVX-512 ring and the matrix multiply's tiles of MR rows read in place),
    then MR zeros: a tile of fewer rows at a block's end still reads MR."""
    cout, k = w.shape[0], int(np.prod(w.shape[1:]))
    padded = -(-cout // PW_ROW) * PW_ROW
    out = np.zeros((padded, k), np.float32)
    out[:cout] = w.reshape(cout, k)
    return np.concatenate([out.reshape(padded // PW_ROW, PW_ROW, k).transpose(0, 2, 1).reshape(-1),
                           np.zeros(MR, np.float32)])


def pack_attention(name: str, w: np.ndarray) -> np.ndarray:
    """An attention's parameter in nnc_attention's layout: in_proj_weight
    [3E, E] -> the query, key and value projections each as `pack_rows`
    ([3][E][padded(E)]), in_proj_bias [3E] -> each `pad_vector`-ed,
    out_proj.weight -> `pack_rows`, out_proj.bias -> `pad_vector`."""
    if name == "in_proj_weight":
        return np.concatenate([pack_rows(part).reshape(-1) for part in np.split(w, 3)])
    if name == "in_proj_bias":
        return np.concatenate([pad_vector(part) for part in np.split(w.reshape(-1), 3)])
    return pack_rows(w) if name == "out_proj.weight" else pad_vector(w)


def _kernel_nodes(graph: Graph):
    """(node, its convolution kernel or None) of every node whose weights the
    C file holds, in schedule order: a fused block's 1x1 convolution (`pre`,
    "pw": `pack_pw`'s layout, which nnc_pw_depthwise reads) before it."""
    for node in graph.nodes:
        for n in node.parts():
            if n is not node:
                yield n, "pw"
            else:
                yield n, (_conv_kind(n, graph) if n.op.name in ("conv1d", "conv2d", "depthwise_conv2d") else None)


def kernel_arrays(graph: Graph, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays the C file embeds, by parameter key (`label.weight`, ...),
    from PyTorch-layout `state`: batchnorms folded, convolution weights
    packed, dense and recurrent weights transposed and padded (`pack_rows`)."""
    arrays: dict[str, np.ndarray] = {}
    for n, kind in _kernel_nodes(graph):
        if not n.params:
            continue
        p = {q.name: np.asarray(state[n.param_key(q.name)], np.float32) for q in n.params}
        if n.norm is not None:
            nl = n.norm.label
            p["weight"], p["bias"] = fold_norm(p["weight"], p.get("bias"), state[f"{nl}.weight"], state[f"{nl}.bias"],
                                               state[f"{nl}.running_mean"], state[f"{nl}.running_var"], n.norm.eps)
        op = n.op.name
        if kind in ("gemm", "planes"):
            p["weight"] = pack_conv(p["weight"], n.attrs["groups"])
        elif kind == "winograd":
            p["weight"] = pack_winograd(p["weight"])
        elif kind == "winograd4":
            p["weight"] = pack_winograd4(p["weight"])
        elif kind == "bcast":
            p["weight"] = pack_bcast(p["weight"])
        elif kind == "rows":
            p["weight"] = pack_bcast(p["weight"], ROWS_RB)
        elif kind == "pw":
            p["weight"] = pack_pw(p["weight"])
        elif op in TRANSPOSED:
            p["weight"] = pack_conv_transpose(p["weight"], n.attrs["groups"])
        elif kind == "direct":
            w, g = p["weight"], n.attrs["groups"]
            p["weight"] = w.reshape(g, w.shape[0] // g, -1).transpose(0, 2, 1)
        elif op == "dense":
            p["weight"] = pack_rows(p["weight"])
            if "bias" in p:
                p["bias"] = pad_vector(p["bias"])
        elif op == "attention":
            p = {key: pack_attention(key, arr) for key, arr in p.items()}
        elif op in ("gru", "lstm", "rnn"):
            for key in p:              # every layer and direction (`_l{k}`, `_l{k}_reverse`)
                p[key] = pack_rows(p[key]) if key.startswith("weight_") else pad_vector(p[key])
        for name, arr in p.items():
            arrays[n.param_key(name)] = np.ascontiguousarray(arr, np.float32).reshape(-1)
    return arrays


def _packed_sizes(graph: Graph) -> list[tuple[str, int]]:
    """(parameter key, floats) of every array `kernel_arrays` gives, in its
    order, from the graph's structure alone."""
    specs = graph.param_specs()
    out = []
    for n, kind in _kernel_nodes(graph):
        if not n.params:
            continue
        names = [q.name for q in n.params]
        if n.norm is not None and "bias" not in names:
            names.append("bias")       # folding a norm gives a bias
        for name in names:
            key = n.param_key(name)
            if key in specs:
                shape = tuple(specs[key].shape)
            else:                      # the folded bias: one per output channel
                shape = (specs[n.param_key("weight")].shape[0],)
            size = math.prod(shape)
            if kind in ("gemm", "planes") and name == "weight":
                groups = n.attrs["groups"]
                m, k = shape[0] // groups, math.prod(shape[1:])
                size = groups * -(-m // MR) * MR * k
            elif kind == "winograd" and name == "weight":
                size = 16 * -(-shape[0] // MR) * MR * shape[1]
            elif kind == "winograd4" and name == "weight":
                size = 36 * -(-shape[0] // MR) * MR * shape[1]
            elif kind in ("bcast", "rows") and name == "weight":
                size = -(-shape[0] // (BCAST_CB if kind == "bcast" else ROWS_RB)) * math.prod(shape[1:])
                size *= BCAST_CB if kind == "bcast" else ROWS_RB
            elif kind == "pw" and name == "weight":
                size = -(-shape[0] // PW_ROW) * PW_ROW * math.prod(shape[1:]) + MR
            elif n.op.name in TRANSPOSED and name == "weight":     # `pack_conv_transpose`
                groups = n.attrs["groups"]
                m = shape[1] * math.prod(shape[2:])
                size = groups * -(-m // MR) * MR * (shape[0] // groups)
            elif n.op.name in ("dense", "gru", "lstm", "rnn"):
                size = padded(shape[0]) * (shape[1] if len(shape) == 2 else 1)
            elif n.op.name == "attention":     # `pack_attention`: one block, or three, of E padded rows
                parts = 3 if name.startswith("in_proj") else 1
                e = shape[0] // parts
                size = parts * padded(e) * (shape[1] if len(shape) == 2 else 1)
            out.append((key, size))
    return out


def weight_slots(graph: Graph) -> tuple[dict[str, tuple[int, int]], int]:
    """({parameter key: (offset, floats)}, total floats) of the packed weights
    array: tensors in schedule order, each starting at a multiple of
    WEIGHT_ALIGN floats. Depends on the graph's structure only."""
    slots, at = {}, 0
    for key, size in _packed_sizes(graph):
        slots[key] = (at, size)
        at += -(-size // WEIGHT_ALIGN) * WEIGHT_ALIGN
    return slots, at


def pack_weights(graph: Graph, state: Mapping[str, np.ndarray]) -> np.ndarray:
    """Every weight in the kernels' layouts, in one float32 array at the
    offsets of `weight_slots`: what `NAME_init` takes (or `NAME.c` embeds)."""
    slots, total = weight_slots(graph)
    blob = np.zeros(max(total, 1), np.float32)
    for key, a in kernel_arrays(graph, state).items():
        at, size = slots[key]
        assert a.size == size, (key, a.size, size)
        blob[at:at + size] = a
    return blob


def _escape_table() -> tuple[np.ndarray, np.ndarray]:
    """Each byte as C string literal text: printable ASCII as itself (but for
    the quote, the backslash and `?`, which could start a trigraph), anything
    else as a three-digit octal escape (never longer, so a digit after it is
    not taken in)."""
    text = np.zeros((256, 4), np.uint8)
    length = np.zeros(256, np.int64)
    for b in range(256):
        ch = chr(b)
        t = ch if 32 <= b < 127 and ch not in '"\\?' else "\\%03o" % b
        text[b, :len(t)] = np.frombuffer(t.encode(), np.uint8)
        length[b] = len(t)
    return text, length


def c_bytes_literal(data: bytes, per_line: int = 96) -> str:
    """`data` as adjacent C string literals, `per_line` bytes a line (lines
    stay far below C99's 4095 characters); together one literal of exactly
    these bytes. Vectorised: tens of megabytes take a second or two."""
    text, length = _escape_table()
    raw = np.frombuffer(data, np.uint8)
    lines = []
    step = per_line * 8192
    for start in range(0, len(raw), step):
        part = raw[start:start + step]
        rows = -(-len(part) // per_line)
        padded = np.zeros(rows * per_line, np.uint8)
        padded[:len(part)] = part
        keep = np.zeros(rows * per_line, bool)
        keep[:len(part)] = True
        chars = text[padded].reshape(rows, per_line * 4)
        mask = ((np.arange(4)[None, :] < length[padded][:, None]) & keep[:, None]).reshape(rows, per_line * 4)
        head = np.frombuffer(b'    "', np.uint8)
        tail = np.frombuffer(b'"\n', np.uint8)
        chars = np.concatenate([np.broadcast_to(head, (rows, len(head))), chars,
                                np.broadcast_to(tail, (rows, len(tail)))], axis=1)
        mask = np.concatenate([np.ones((rows, len(head)), bool), mask, np.ones((rows, len(tail)), bool)], axis=1)
        lines.append(chars[mask].tobytes().decode("ascii"))
    return "".join(lines).rstrip("\n") or '    ""'


# ------------------------------------------------------------------ one function per op

@dataclass
class _Ctx:
    graph: Graph
    layout: Layout
    values: Namespace
    params: Namespace
    dims: Mapping[str, str]
    inputs: Mapping[str, str]

    def v(self, value: str) -> str:
        return self.inputs.get(value) or self.values(value)

    def p(self, node: Node, name: str) -> str:
        return self.params(node.param_key(name))

    def e(self, d: Any) -> str:
        return cexpr(d, self.dims)

    def ints(self, sizes) -> str:
        """Sizes as a list of C `int` arguments."""
        return ", ".join(f"(int){self.e(d)}" if isinstance(d, Sym) else str(d) for d in sizes)

    def size(self, shape) -> str:
        """The element count of `shape` as a C expression."""
        return csize(shape, self.dims)

    def numel(self, value: str) -> str:
        return self.size(self.graph.shape_of(value))

    def scratch(self, node: Node, name: str) -> str:
        return self.values(f"{node.label}#{name}")

    def state(self, node: Node, name: str) -> str:
        return self.values(f"{node.label}@{name}")


def _act(n: Node) -> str:
    if n.activation is None:
        return "NNC_ACT_NONE, 0.0f"
    alpha = next(iter(n.activation.attrs.values()), 0.0)
    return f"{ACT_CODES[n.activation.op]}, {_float(alpha)}"


def _float(x: Any) -> str:
    text = "%.9g" % float(x)
    return text + ("f" if any(ch in text for ch in ".e") else ".0f")


def _bias(c: _Ctx, n: Node) -> str:
    has = any(p.name == "bias" for p in n.params) or n.norm is not None
    return c.p(n, "bias") if has else "NULL"


def _conv_geometry(c: _Ctx, n: Node) -> tuple:
    """A 1-d or 2-d (transposed) convolution as 2-d: input and output sizes,
    kernel, stride, dilation and the top/left padding."""
    a = n.attrs
    x = n.pre.shape if n.pre is not None else c.graph.shape_of(n.inputs[0])
    if len(x) == 2:
        return (x, 1, x[1], 1, n.shape[1], 1, a["kernel"][0], 1, a["stride"][0], 1, a["dilation"][0],
                0, a["pads"][0][0])
    (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"], a["dilation"]
    return (x, x[1], x[2], n.shape[1], n.shape[2], kh, kw, sh, sw, dh, dw, a["pads"][0][0], a["pads"][1][0])


def _conv(c: _Ctx, n: Node) -> list[str]:
    a = n.attrs
    x, ih, iw, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl = _conv_geometry(c, n)
    kind = _conv_kind(n, c.graph)
    streaming = c.graph.streaming and n.op.name == "conv1d"
    if streaming:
        pl = 0                      # its left padding is the history
    geo = [x[0], ih, iw, n.shape[0], oh, ow, kh, kw, sh, sw, pt, pl, dh, dw, a["groups"],
           panel_rows(n, c.graph) if kind == "gemm" else 0, 0]
    if kind in ("bcast", "planes", "rows"):
        geo[-2:] = direct_plan(n, c.graph)[1:]
    dw_rows = depthwise_rows(n, c.graph) if kind == "depthwise" else None
    if dw_rows:
        geo[-1] = dw_rows
    if kind == "depthwise" and n.pre is not None:
        geo[-2] = pw_block(n, c.graph)
    if kind in ("winograd", "winograd4"):
        geo[-1] = wino_rows(n, c.graph, 4 if kind == "winograd4" else 2)
    lines = ["const nnc_conv g = {" + c.ints(geo) + "};"]
    panel = (c.scratch(n, "panel") if kind in ("gemm", "winograd", "winograd4", "bcast", "planes", "rows") or dw_rows
             or n.pre is not None else "NULL")
    w, b = c.p(n, "weight"), _bias(c, n)
    if streaming:
        hist = c.state(n, "history") if n.history else "NULL"
        lines.append(f"nnc_conv1d_stream(&g, {c.v(n.inputs[0])}, {hist}, {n.history}, {w}, {b}, {c.v(n.label)}, "
                     f"{_act(n)});")
    elif kind == "depthwise" and n.pre is not None:
        e = n.pre
        lines.append(f"const nnc_pw e = {{{c.v(n.inputs[0])}, {e.attrs['in_channels']}, {c.p(e, 'weight')}, "
                     f"{_bias(c, e)}, {ACT_CODES[e.activation.op] if e.activation else 'NNC_ACT_NONE'}}};")
        lines.append(f"nnc_pw_depthwise(&g, &e, {w}, {b}, {c.v(n.label)}, {_act(n)}, {panel});")
    elif kind == "depthwise":
        fn = "nnc_depthwise_cv" if depthwise_cv(n, c.graph) else "nnc_depthwise"
        lines.append(f"{fn}(&g, {c.v(n.inputs[0])}, {w}, {b}, {c.v(n.label)}, {_act(n)}, {panel});")
    elif kind == "winograd":
        lines.append(f"nnc_conv3x3_wino(&g, {c.v(n.inputs[0])}, {w}, {b}, {c.v(n.label)}, {_act(n)}, {panel});")
    elif kind == "winograd4":
        lines.append(f"nnc_conv3x3_wino4(&g, {c.v(n.inputs[0])}, {w}, {b}, {c.v(n.label)}, {_act(n)}, {panel});")
    elif kind == "bcast":
        lines.append(f"nnc_conv_bcast(&g, {c.v(n.inputs[0])}, {w}, {b}, {c.v(n.label)}, {_act(n)}, {panel});")
    elif kind == "rows":
        lines.append(f"nnc_conv_rows(&g, {c.v(n.inputs[0])}, {w}, {b}, {c.v(n.label)}, {_act(n)}, {panel});")
    elif kind == "planes":
        lines.append(f"nnc_conv_planes(&g, {c.v(n.inputs[0])}, {w}, {b}, {c.v(n.label)}, {_act(n)}, {panel});")
    elif kind == "direct":
        lines.append(f"nnc_conv1d_direct(&g, {c.v(n.inputs[0])}, {w}, {b}, {c.v(n.label)}, {_act(n)});")
    else:
        lines.append(f"nnc_conv2d(&g, {c.v(n.inputs[0])}, {w}, {b}, {c.v(n.label)}, {_act(n)}, {panel});")
    return lines


def _dense(c: _Ctx, n: Node) -> list[str]:
    f = n.attrs["in_features"]
    rows = c.size(n.shape[:-1])
    return [f"nnc_dense({c.v(n.inputs[0])}, {rows}, {f}, {n.shape[-1]}, {padded(n.shape[-1])}, {c.p(n, 'weight')}, "
            f"{_bias(c, n)}, "
            f"{c.v(n.label)}, {_act(n)});"]


def _pool(c: _Ctx, n: Node) -> list[str]:
    a = n.attrs
    x = c.graph.shape_of(n.inputs[0])
    if len(x) == 2:
        dims = [x[0], 1, x[1], 1, n.shape[1], 1, a["kernel"][0], 1, a["stride"][0], 0, a["pads"][0][0]]
    else:
        dims = [x[0], x[1], x[2], n.shape[1], n.shape[2], *a["kernel"], *a["stride"], a["pads"][0][0],
                a["pads"][1][0]]
    args = c.ints(dims)
    is_max = int(n.op.name.startswith("max"))
    return [f"nnc_pool2d({c.v(n.inputs[0])}, {c.v(n.label)}, {args}, {is_max});"]


def _inner(c: _Ctx, value: str) -> str:
    shape = c.graph.shape_of(value)
    return c.size(shape[1:])


def _global_avgpool(c: _Ctx, n: Node) -> list[str]:
    x = n.inputs[0]
    return [f"nnc_global_avgpool({c.v(x)}, {c.v(n.label)}, {c.size(c.graph.shape_of(x)[:1])}, {_inner(c, x)});"]


def _batchnorm(c: _Ctx, n: Node) -> list[str]:
    x = n.inputs[0]
    ps = ", ".join(c.p(n, k) for k in ("running_mean", "running_var", "weight", "bias"))
    return [f"nnc_batchnorm({c.v(x)}, {c.v(n.label)}, {n.shape[0]}, {_inner(c, x)}, {ps}, {_float(n.attrs['eps'])});"]


def _layernorm(c: _Ctx, n: Node) -> list[str]:
    f = n.shape[-1]
    rows = c.size(n.shape[:-1])
    return [f"nnc_layernorm({c.v(n.inputs[0])}, {c.v(n.label)}, {rows}, {f}, {c.p(n, 'weight')}, {c.p(n, 'bias')}, "
            f"{_float(n.attrs['eps'])});"]


def _prelu(c: _Ctx, n: Node) -> list[str]:
    x = n.inputs[0]
    return [f"nnc_prelu({c.v(x)}, {c.v(n.label)}, {c.e(n.shape[0])}, {_inner(c, x)}, {c.p(n, 'weight')}, "
            f"{n.attrs['channels']});"]


def _softmax(c: _Ctx, n: Node) -> list[str]:
    axis = n.attrs["axis"]
    outer, inner = c.size(n.shape[:axis]), c.size(n.shape[axis + 1:])
    log = int(n.op.name == "log_softmax")
    return [f"nnc_softmax({c.v(n.inputs[0])}, {c.v(n.label)}, {outer}, (int){c.e(n.shape[axis])}, {inner}, {log});"]


def _activation(c: _Ctx, n: Node) -> list[str]:
    alpha = next(iter(n.attrs.values()), 0.0)
    return [f"nnc_activation({c.v(n.inputs[0])}, {c.v(n.label)}, {c.numel(n.label)}, {ACT_CODES[n.op.name]}, "
            f"{_float(alpha)});"]


def _merge(c: _Ctx, n: Node) -> list[str]:
    ins = ", ".join(c.v(v) for v in n.inputs)
    product_ = int(n.op.name == "mul")
    act = _act(n) if n.op.name == "add" else "NNC_ACT_NONE, 0.0f"
    return [f"const float *const in[{len(n.inputs)}] = {{{ins}}};",
            f"nnc_merge(in, {len(n.inputs)}, {c.v(n.label)}, {c.numel(n.label)}, {product_}, {act});"]


def _sub(c: _Ctx, n: Node) -> list[str]:
    return [f"nnc_sub({c.v(n.inputs[0])}, {c.v(n.inputs[1])}, {c.v(n.label)}, {c.numel(n.label)});"]


def _view(c: _Ctx, n: Node) -> list[str]:
    src = n.inputs[0]
    if src not in c.inputs and c.layout.places[src] == c.layout.places[n.label]:
        return ["/* a view of its input: nothing to compute */"]
    return [f"memmove({c.v(n.label)}, {c.v(src)}, (size_t){c.numel(n.label)} * sizeof(float));"]


def _concat(c: _Ctx, n: Node) -> list[str]:
    axis = n.attrs["axis"]
    outer, inner = c.size(n.shape[:axis]), c.size(n.shape[axis + 1:])
    lines, start = [], 0
    total = c.e(n.shape[axis])
    for v in n.inputs:
        size = c.graph.shape_of(v)[axis]
        place = c.layout.places.get(v)
        if place is not None and place.within == n.label:
            lines.append(f"/* `{c_text(v)}` was written into its slice */")
        else:
            lines.append(f"nnc_concat_part({c.v(v)}, {c.v(n.label)}, {outer}, {c.e(size)}, {inner}, {c.e(start)}, "
                         f"{total});")
        start = start + size
    return lines


def _transpose(c: _Ctx, n: Node) -> list[str]:
    x = c.graph.shape_of(n.inputs[0])
    perm = n.attrs["perm"]
    shape = c.ints(x)
    work = "work" if len(x) > 4 else "NULL"
    lines = [f"const int shape[{len(x)}] = {{{shape}}}, perm[{len(x)}] = {{{', '.join(map(str, perm))}}};"]
    if len(x) > 4:
        lines.append(f"long work[{2 * len(x)}];")
    return lines + [f"nnc_transpose({c.v(n.inputs[0])}, {c.v(n.label)}, {len(x)}, shape, perm, {work});"]


def _upsample(c: _Ctx, n: Node) -> list[str]:
    x = c.graph.shape_of(n.inputs[0])
    scale = n.attrs["scale"]
    if len(x) == 2:
        dims = [x[0], 1, x[1], 1, scale if isinstance(scale, int) else scale[0]]
    else:
        sh, sw = (scale, scale) if isinstance(scale, int) else scale
        dims = [x[0], x[1], x[2], sh, sw]
    args = c.ints(dims)
    fn = "nnc_upsample" if n.attrs.get("mode", "nearest") == "nearest" else "nnc_upsample_linear"
    return [f"{fn}({c.v(n.inputs[0])}, {c.v(n.label)}, {args});"]


def _recurrent_stack(c: _Ctx, n: Node) -> list[str]:
    """Stacked or two-way layers: nnc_rnn_stack (runtime/c/nnc_v2_tensor.h)."""
    from ..ops.recurrent import parts
    x = c.graph.shape_of(n.inputs[0])
    a = n.attrs
    ws = []
    for _, sfx in parts(a):
        ws += [c.p(n, f"weight_ih{sfx}"), c.p(n, f"weight_hh{sfx}")]
        ws += [c.p(n, f"bias_ih{sfx}"), c.p(n, f"bias_hh{sfx}")] if a["bias"] else ["NULL", "NULL"]
    lstm = int(n.op.name == "lstm")
    kind = {"gru": 0, "lstm": 1}.get(n.op.name) if n.op.name != "rnn" else (3 if a["nonlinearity"] == "relu" else 2)
    if c.graph.streaming:
        h, cc, carry = c.state(n, "h"), c.state(n, "c") if lstm else "NULL", 1
    else:
        h, cc, carry = "NULL", "NULL", 0
    dirs = 2 if a["bidirectional"] else 1
    plan = rnn_plan(n, c.graph)
    lines, buf = _rnn_scratch(c, n, plan)
    lines.append(f"const float *const w[{len(ws)}] = {{{', '.join(ws)}}};")
    lines.append(f"nnc_rnn_stack({kind}, (int){c.e(x[0])}, {x[1]}, {a['hidden']}, {a['layers']}, {dirs}, "
                 f"{c.v(n.inputs[0])}, w, {h}, {cc}, {carry}, {c.v(n.label)}, {buf('tile')}, "
                 f"{plan.block}, {buf('seg')}, {plan.fixed.get('seg', 0) // a['hidden']}, "
                 f"{buf('rows')}, {max(plan.seg, 2)}, {buf('ckpt')}, {buf('mid')});")
    return lines


def _rnn_scratch(c: _Ctx, n: Node, plan: RnnPlan) -> tuple[list[str], Callable[[str], str]]:
    """The declaration of a recurrent step's stack tile (if any) and a
    function from a scratch name to its C pointer (NULL when it has none)."""
    lines, at, offset = [], {}, 0
    if plan.on_stack:
        lines.append(f"float tile[{sum(plan.fixed.values())}];")
        for name, floats in plan.fixed.items():
            at[name] = f"tile + {offset}" if offset else "tile"
            offset += floats
    else:
        at.update((name, c.scratch(n, name)) for name in plan.fixed)
    at.update((name, c.scratch(n, name)) for name in plan.sized)
    return lines, lambda name: at.get(name, "NULL")


def _recurrent(c: _Ctx, n: Node) -> list[str]:
    if n.op.name == "rnn" or n.attrs["layers"] > 1 or n.attrs["bidirectional"]:
        return _recurrent_stack(c, n)
    x = c.graph.shape_of(n.inputs[0])
    h = n.attrs["hidden"]
    bias = n.attrs["bias"]
    ws = [c.p(n, "weight_ih_l0"), c.p(n, "weight_hh_l0"),
          c.p(n, "bias_ih_l0") if bias else "NULL", c.p(n, "bias_hh_l0") if bias else "NULL"]
    lines, buf = _rnn_scratch(c, n, rnn_plan(n, c.graph))
    if c.graph.streaming:
        state = [c.state(n, "h")] + ([c.state(n, "c")] if n.op.name == "lstm" else [])
    else:
        state = [buf("h")] + ([buf("c")] if n.op.name == "lstm" else [])
        lines += [f"memset({s}, 0, {h} * sizeof(float));" for s in state]
    args = [f"(int){c.e(x[0])}", str(x[1]), str(h), c.v(n.inputs[0]), *ws, *state, c.v(n.label), buf("gates")]
    lines.append(f"nnc_{n.op.name}({', '.join(args)});")
    return lines


def _clamp(c: _Ctx, n: Node) -> list[str]:
    lo, hi = n.attrs["min"], n.attrs["max"]
    return [f"nnc_clamp({c.v(n.inputs[0])}, {c.v(n.label)}, {c.numel(n.label)}, {int(lo is not None)}, "
            f"{_float(lo or 0.0)}, {int(hi is not None)}, {_float(hi or 0.0)});"]


def _axis_split(c: _Ctx, n: Node) -> tuple[str, str, str]:
    """The input seen as [outer, n, inner] around the op's axis (per example)."""
    x, axis = c.graph.shape_of(n.inputs[0]), n.attrs["axis"]
    return c.size(x[:axis]), c.e(x[axis]), c.size(x[axis + 1:])


def _glu(c: _Ctx, n: Node) -> list[str]:
    outer, size, inner = _axis_split(c, n)
    return [f"nnc_glu({c.v(n.inputs[0])}, {c.v(n.label)}, {outer}, {size}, {inner});"]


def _slice(c: _Ctx, n: Node) -> list[str]:
    outer, size, inner = _axis_split(c, n)
    a = n.attrs
    start, count, step = (a["start"], a["count"], a["step"]) if n.op.name == "slice" else (a["index"], 1, 1)
    if start < 0:                     # select(axis, -1) on a named axis: the last position
        start = f"({size}) - 1"
    return [f"nnc_slice({c.v(n.inputs[0])}, {c.v(n.label)}, {outer}, {size}, {inner}, {start}, {count}, {step});"]


def _reduce(c: _Ctx, n: Node) -> list[str]:
    x, axes = c.graph.shape_of(n.inputs[0]), n.attrs["axes"]
    flags = ", ".join("1" if k in axes else "0" for k in range(len(x)))
    return [f"const long shape[{len(x)}] = {{{', '.join(c.e(d) for d in x)}}};",
            f"const int reduced[{len(x)}] = {{{flags}}};",
            f"nnc_reduce({c.v(n.inputs[0])}, {c.v(n.label)}, {len(x)}, shape, reduced, "
            f"NNC_REDUCE_{n.op.name.upper()});"]


# section 9's elementwise and axis ops (helper 13C; kernels in runtime/c/nnc_v2_tensor.h)
V2_TENSOR_STEPS: dict[str, Callable[[_Ctx, Node], list[str]]] = {
    "clamp": _clamp, "glu": _glu, "slice": _slice, "select": _slice, "mean": _reduce, "sum": _reduce,
    "max": _reduce}


def _conv_transpose(c: _Ctx, n: Node) -> list[str]:
    a = n.attrs
    x, ih, iw, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl = _conv_geometry(c, n)
    depth, rows = transpose_panel(n, c.graph)
    geo = [x[0], ih, iw, n.shape[0], oh, ow, kh, kw, sh, sw, pt, pl, dh, dw, a["groups"], depth, 0]
    return ["const nnc_conv g = {" + c.ints(geo) + "};",
            f"nnc_conv_transpose_gemm(&g, {c.v(n.inputs[0])}, {c.p(n, 'weight')}, {_bias(c, n)}, {c.v(n.label)}, "
            f"{c.scratch(n, 'panel') if rows else 'NULL'});"]


def _global_maxpool(c: _Ctx, n: Node) -> list[str]:
    x = n.inputs[0]
    return [f"nnc_global_maxpool({c.v(x)}, {c.v(n.label)}, {c.size(c.graph.shape_of(x)[:1])}, {_inner(c, x)});"]


def _adaptive(c: _Ctx, n: Node) -> list[str]:
    x = c.graph.shape_of(n.inputs[0])
    dims = [x[0], 1, x[1], 1, n.shape[1]] if len(x) == 2 else [x[0], x[1], x[2], n.shape[1], n.shape[2]]
    return [f"nnc_adaptive_avgpool({c.v(n.inputs[0])}, {c.v(n.label)}, {c.ints(dims)});"]


def _groupnorm(c: _Ctx, n: Node) -> list[str]:
    x = n.inputs[0]
    gamma, beta = (c.p(n, "weight"), c.p(n, "bias")) if n.params else ("NULL", "NULL")
    return [f"nnc_groupnorm({c.v(x)}, {c.v(n.label)}, {n.shape[0]}, {_inner(c, x)}, {n.attrs['groups']}, {gamma}, "
            f"{beta}, {_float(n.attrs['eps'])});"]


PAD_MODES = {"constant": "NNC_PAD_CONSTANT", "reflect": "NNC_PAD_REFLECT", "replicate": "NNC_PAD_REPLICATE"}


def _pad(c: _Ctx, n: Node) -> list[str]:
    a = n.attrs
    x = c.graph.shape_of(n.inputs[0])
    pads = a["pads"]
    if len(pads) == 1:
        outer, (h, w), ((t, b), (l, r)) = c.size(x[:-1]), (1, x[-1]), ((0, 0), pads[0])
    else:
        outer, (h, w), ((t, b), (l, r)) = c.size(x[:-2]), x[-2:], pads
    return [f"nnc_pad({c.v(n.inputs[0])}, {c.v(n.label)}, {outer}, {c.ints((h, w, t, b, l, r))}, "
            f"{PAD_MODES[a['mode']]}, {_float(a['value'])});"]


# the transformer family (helper 13A; kernels in runtime/c/nnc_v2_attention.h)
def _embedding(c: _Ctx, n: Node) -> list[str]:
    x = n.inputs[0]
    idx = f"(const int32_t *){c.v(x)}"
    return [f"if (nnc_embedding({idx}, {c.numel(x)}, {n.attrs['num']}, {n.attrs['dim']}, {c.p(n, 'weight')}, "
            f"{c.v(n.label)})) return 3;"]


def _positional(c: _Ctx, n: Node) -> list[str]:
    t, e = n.shape
    args = f"{c.v(n.inputs[0])}, {c.v(n.label)}, (int){c.e(t)}, {e}, {c.p(n, 'weight')}, {n.attrs['max_len']}"
    if c.graph.streaming:
        pos = c.state(n, "position")
        return [f"if (nnc_positional({args}, (long){pos}[0])) return 2;", f"{pos}[0] += (float){c.e(t)};"]
    return [f"if (nnc_positional({args}, 0)) return 1;"]


def _attention(c: _Ctx, n: Node) -> list[str]:
    t, e = n.shape
    bias = n.attrs["bias"]
    ws = [c.p(n, "in_proj_weight"), c.p(n, "in_proj_bias") if bias else "NULL", c.p(n, "out_proj.weight"),
          c.p(n, "out_proj.bias") if bias else "NULL"]
    scratch = [c.scratch(n, "query"), c.scratch(n, "row")]
    if c.graph.streaming:
        limit = c.graph.bounds[c.graph.time_dim]
        state = [c.state(n, "keys"), c.state(n, "values"), c.state(n, "position")]
        return [f"if (nnc_attention_stream({c.v(n.inputs[0])}, (int){c.e(t)}, {e}, {n.attrs['heads']}, "
                f"{', '.join(ws)}, {', '.join(state)}, {limit}, {c.v(n.label)}, {', '.join(scratch)})) return 2;"]
    return [f"nnc_attention({c.v(n.inputs[0])}, (int){c.e(t)}, {e}, {n.attrs['heads']}, {int(n.attrs['causal'])}, "
            f"{', '.join(ws)}, {c.v(n.label)}, {c.scratch(n, 'kv')}, {', '.join(scratch)});"]


def _matmul(c: _Ctx, n: Node) -> list[str]:
    a, b = (c.graph.shape_of(v) for v in n.inputs)
    lead = c.size(a[:-2]) if len(a) > 2 else "1"
    return [f"nnc_matmul({c.v(n.inputs[0])}, {c.v(n.inputs[1])}, {c.v(n.label)}, {lead}, "
            f"(int){c.e(a[-2])}, (int){c.e(a[-1])}, (int){c.e(b[-1])});"]


def _div(c: _Ctx, n: Node) -> list[str]:
    return [f"nnc_div({c.v(n.inputs[0])}, {c.v(n.inputs[1])}, {c.v(n.label)}, {c.numel(n.label)});"]


V2_ATTENTION_STEPS: dict[str, Callable[[_Ctx, Node], list[str]]] = {
    "embedding": _embedding, "positional": _positional, "attention": _attention, "matmul": _matmul, "div": _div}


STEPS: dict[str, Callable[[_Ctx, Node], list[str]]] = {
    "conv1d": _conv, "conv2d": _conv, "depthwise_conv2d": _conv,
    "conv_transpose1d": _conv_transpose, "conv_transpose2d": _conv_transpose, "pad": _pad,
    "global_maxpool": _global_maxpool, "adaptive_avgpool1d": _adaptive, "adaptive_avgpool2d": _adaptive,
    "groupnorm": _groupnorm, "instancenorm": _groupnorm,
    "dense": _dense,
    "maxpool1d": _pool, "maxpool2d": _pool, "avgpool1d": _pool, "avgpool2d": _pool,
    "global_avgpool": _global_avgpool,
    "batchnorm": _batchnorm, "layernorm": _layernorm, "prelu": _prelu,
    "softmax": _softmax, "log_softmax": _softmax,
    "flatten": _view, "reshape": _view, "dropout": _view, "identity": _view,
    "transpose": _transpose, "upsample": _upsample,
    "add": _merge, "mul": _merge, "sub": _sub, "concat": _concat,
    "gru": _recurrent, "lstm": _recurrent, "rnn": _recurrent,
    **{a: _activation for a in catalog.ACTIVATIONS},
    **V2_TENSOR_STEPS,
    **V2_ATTENTION_STEPS,
}
assert set(STEPS) == {e.name for e in catalog.CATALOG.values()}, "every catalog op needs a C step"


# ------------------------------------------------------------------ rendering

def _comment(n: Node) -> str:
    act = f" -> {n.activation.op}" if n.activation else ""
    norm = f" + {n.norm.label}" if n.norm else ""
    return c_text(f"{n.label}: {n.op.name}{norm}{act} -> {format_shape(n.shape)}")


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("nnc.compiler.codegen", "templates"),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True, autoescape=False)


@dataclass(frozen=True, slots=True)
class Port:
    """A model input or output as the C API sees it."""

    name: str          # the API name
    ident: str         # the C parameter
    size: str          # floats of one example, as a C expression over the dimensions
    bound: int         # floats at the bounds
    shape: str         # for comments
    macro: str = ""    # its part of the size macro's name (unique, upper case)
    pre: int = 1       # streaming: floats before the time axis (its outer extent) ...
    post: int = 1      # ... and after it, per step
    ctype: str = "float"   # the C element type: "int32_t" for an integer input


def _upper_names(idents: list[str]) -> list[str]:
    """Upper-case forms of distinct identifiers, still distinct (`t` and `T`
    would both give `T`: the second becomes `T_1`)."""
    taken: set[str] = set()
    out = []
    for ident in idents:
        base = name = ident.upper()
        k = 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        out.append(name)
    return out


def generate(graph: Graph, layout: Layout, *, name: str, state: Mapping[str, np.ndarray] | None = None,
             source: str | None = None, embed_weights: bool = True) -> dict[str, str]:
    """{file name: text} of the C plan. With `embed_weights`, `NAME.c` holds
    the packed weights of `state` (PyTorch layout; default: the seeded
    initialisation) and `NAME_init(ctx)` uses them; without, the text depends
    on the graph alone and `NAME_init(ctx, weights)` takes `pack_weights`'s
    array."""
    prefix = name                        # build.module_name: sanitised, and never nnc_*
    values = Namespace(C_RESERVED, prefix="v_")
    params = Namespace(C_RESERVED, prefix="w_")
    dim_names = Namespace(C_RESERVED, prefix="d_")
    order = dim_order(graph.bounds)
    dims = {d: dim_names(d) for d in order}
    inputs = {i.name: values(i.name) for i in graph.inputs}
    # integer inputs are `const int32_t *` in the API; other kernels see their bits as floats (copies only)
    c = _Ctx(graph, layout, values, params, dims,
             {i.name: f"((const float *){inputs[i.name]})" if i.dtype == "int32" else inputs[i.name]
              for i in graph.inputs})

    slots, total = weight_slots(graph)
    weights = [(params(k), at, size, c_text(k)) for k, (at, size) in slots.items()]
    blob = None
    if embed_weights:
        if state is None:
            state = default_init({k: Spec(p.shape, p.init) for k, p in graph.param_specs().items()})
        packed = pack_weights(graph, state)
        blob = c_bytes_literal(packed.astype("<f4").tobytes())

    # pointers into the arena: buffers first, then concat slices
    pointers, slices = [], []
    for n in graph.nodes:
        place = layout.places[n.label]
        if place.within is not None:
            lo = place.channels[0]
            slices.append((values(n.label), f"{values(place.within)} + {lo} * {c.size(n.shape[1:])}",
                           c_text(n.label)))
        else:
            pointers.append((values(n.label), layout.offset(n.label) // 4, c_text(n.label)))
    for label, names in layout.scratch.items():
        for s, bname in sorted(names.items()):
            pointers.append((values(bname), layout.plan.offsets[bname] // 4, c_text(bname)))
    for key in state_shapes(graph):
        pointers.append((values(key), layout.plan.offsets[key] // 4, c_text(key)))

    steps = []
    silent = dict(graph.silent)
    for n in graph.nodes:
        lines = STEPS[n.op.name](c, n)
        if n.label in silent:      # the offline pad's zeros, not the copied warm-up (stream.py)
            lines = [*lines, f"if (ctx->steps < {silent[n.label]}) memset({c.v(n.label)}, 0, "
                             f"(size_t)({c.numel(n.label)}) * sizeof(float));"]
        steps.append((_comment(n), lines))

    t = graph.time_dim if graph.streaming else None

    def port(pname: str, ident: str, shape, macro: str, ctype: str = "float") -> Port:
        pre = post = 1
        if t is not None:
            axis = next(i for i, d in enumerate(shape) if isinstance(d, Sym) and str(d) == t)
            pre, post = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
        return Port(pname, ident, c.size(shape), bound_numel(shape, graph.bounds), c_text(format_shape(shape)),
                    macro, pre, post, ctype)

    in_macros = _upper_names([inputs[i.name][2:] for i in graph.inputs])
    in_ports = [port(i.name, inputs[i.name], i.shape, m, "int32_t" if i.dtype == "int32" else "float")
                for i, m in zip(graph.inputs, in_macros)]
    outputs = Namespace(C_RESERVED, prefix="y_")
    out_idents = [outputs(o.name) for o in graph.outputs]
    out_macros = _upper_names([ident[2:] for ident in out_idents])
    out_ports = [port(o.name, ident, graph.shape_of(o.value), m)
                 for o, ident, m in zip(graph.outputs, out_idents, out_macros)]
    out_values = [c.v(o.value) for o in graph.outputs]
    checks = _dim_checks(graph, c)

    used = "\n".join([line for _, lines in steps for line in lines] + [e for _, e, _ in slices] + out_values)
    unused = [ident for ident, _, _ in pointers + slices if not re.search(rf"\b{ident}\b", used)]
    if not pointers and not re.search(r"\bA\b", used):   # a plan that only copies its input
        unused.insert(0, "A")
    state_regions = [(layout.plan.offsets[k] // 4, sz // 4) for k, sz in sorted(state_bytes(graph).items())]
    dim_macros = _upper_names([dims[d][2:] for d in order])
    ctx = dict(
        name=prefix, upper=prefix.upper(), version=VERSION, source=c_text(source or graph.path),
        arena_bytes=layout.plan.arena_bytes, arena_floats=max(1, -(-layout.plan.arena_bytes // 4)),
        naive_bytes=layout.naive_bytes, lower_bound_bytes=layout.lower_bound_bytes,
        layout=[c_text(r) for r in numpy_gen._layout_rows(layout)],
        dims=[(c_text(d), dims[d], graph.bounds[d], m) for d, m in zip(order, dim_macros)],
        lows={dims[d]: (1 if graph.streaming else low) for d, low in min_dims(graph).items()},
        regenerate=c_text(" ".join(["-t c", *(["--stream"] if graph.streaming else []),
                                    *(f"--dim {d}={graph.bounds[d]}" for d in order)])),
        positions=graph.streaming and any(n.op.name in ("positional", "attention") for n in graph.nodes),
        indices=any(i.dtype == "int32" for i in graph.inputs),
        inputs=in_ports, outputs=out_ports, out_values=out_values,
        weights=weights, weight_floats=total, weight_blob=blob, embed=embed_weights,
        pointers=pointers, unused=unused, slices=slices, steps=steps, checks=checks,
        streaming=graph.streaming, time=(c_text(t) if t else None), state_regions=state_regions,
        warmup=[(c_text(k), w) for k, w in graph.warmup],
        gates=[(w, [(off // 4, size // 4) for off, size in regions])
               for w, regions in numpy_gen.gate_regions(graph, layout)],
        chunk=graph.bounds.get(t, 0) if t else 0,
    )
    env = _env()
    return {f"{prefix}.h": env.get_template("c_header.h.j2").render(**ctx),
            f"{prefix}.c": env.get_template("c_source.c.j2").render(**ctx),
            KERNELS_HEADER: kernels_source()}


def _dim_checks(graph: Graph, c: _Ctx) -> list[str]:
    """C conditions that every symbolic size is at least 1 (a length too short
    for the model's valid convolutions fails instead of reading garbage)."""
    seen: dict[str, None] = {}
    for n in graph.nodes:
        for d in n.shape:
            if isinstance(d, Sym):
                seen.setdefault(f"{c.e(d)} < 1", None)
    return list(seen)

