"""The `onnx` package's backend node tests through `nnc.from_onnx` (INTERFACES.md section 10).

`onnx.backend.test.case.node` generates ONNX's own one-node test cases in
Python (`collect_testcases`, at collection: no data files): independent data
for the importer. Every case whose ops the importer has a handler for runs.

- A case's first graph input is the data and its first axis the batch (nnc's
  models are per example). Later inputs that are weights, shapes or settings
  (W, R, B, scale, mean, var, pads, scales, axes...) are baked into
  initializers from the case's data; a float input of the first one's rank
  and batch that a merge (Add, Mul, Concat, MatMul...) reads stays an input.
- Adapters that keep a case's numbers: a recurrent case (time-major
  `X [T, B, F]`) gets the Transposes PyTorch's exporter writes around a
  `batch_first=True` layer; a 1-d case of elementwise ops is lifted to
  [N, 1]; integer data of ops that float32 computes exactly on small
  integers (pads, max pools, clip, add...) becomes float32.
- Expressible cases: imported, built for NumPy (a sample for C too, and a
  sample with a dynamic batch), equal to the case's outputs within its rtol
  and atol. A case the importer newly handles must join them: it is neither
  listed below nor skipped.
- Inexpressible cases (`UNSUPPORTED`, case by case): `OnnxImportError`, one
  line, naming the node's op and why.
- Skipped, one reason each (`_skip_reason`): no data per example (a constant
  graph, a 1-d input of a non-elementwise op), integer, bool or non-tensor
  data, tensors with an axis of size 0.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
# The case lists below name the node cases of this onnx release; another release adds and renames
# cases, so the lists would be stale there rather than wrong about nnc.
LISTED_FOR = "1.23."
if not onnx.__version__.startswith(LISTED_FOR):
    pytest.skip(f"the node cases are listed for onnx {LISTED_FOR}x, not {onnx.__version__}", allow_module_level=True)

from onnx import helper, numpy_helper  # noqa: E402

import nnc  # noqa: E402
from nnc.compiler.onnx_import import _HANDLERS, OnnxImportError  # noqa: E402


def _collect() -> dict:
    from onnx.backend.test.case import node
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return {c.name: c for c in node.collect_testcases(None)}


CASES = _collect()
HANDLED = set(_HANDLERS) | {"Constant"}
SELECTED = sorted(name for name, c in CASES.items() if {n.op_type for n in c.model.graph.node} <= HANDLED)

MERGES = {"Add", "Sub", "Mul", "Div", "Sum", "Concat", "MatMul", "Pow"}     # ops whose later inputs are data
ELEMENTWISE = {"Abs", "Add", "Clip", "Constant", "Div", "Dropout", "Elu", "Exp", "Gelu", "HardSigmoid", "HardSwish",
               "Identity", "LeakyRelu", "Log", "Mish", "Mul", "Neg", "Pow", "Relu", "Selu", "Sigmoid", "Softplus",
               "Sqrt", "Sub", "Sum", "Tanh"}
RECURRENT = {"GRU", "LSTM", "RNN"}
INT_EXACT = {"Abs", "Add", "Clip", "Concat", "Constant", "Flatten", "GlobalMaxPool", "Identity", "MaxPool", "Mul", "Neg",
             "Pad", "ReduceMax", "ReduceSum", "Relu", "Reshape", "Slice", "Split", "Squeeze", "Sub", "Transpose",
             "Unsqueeze"}      # ops whose small-integer results float32 computes exactly


def _ops(case) -> set[str]:
    return {n.op_type for n in case.model.graph.node}


def _liftable(case) -> bool:
    """A 1-d case of elementwise ops: [N] -> [N, 1] keeps its numbers."""
    x = case.data_sets[0][0][0]
    return _ops(case) <= ELEMENTWISE and np.ndim(x) == 1 and \
        all(np.ndim(o) == 1 and np.shape(o) == np.shape(x) for o in case.data_sets[0][1])


def _skip_reason(case) -> str | None:
    inputs, outputs = case.data_sets[0]
    if not inputs:
        return "no graph input: a constant graph has nothing per example"
    x = inputs[0]
    if not isinstance(x, np.ndarray) or any(not isinstance(o, (np.ndarray, np.generic)) for o in outputs):
        return "sequence or optional values: nnc takes and gives tensors"
    if x.dtype.kind != "f" and not (x.dtype.kind in "iu" and _ops(case) <= INT_EXACT):
        return f"{x.dtype} data: nnc computes float32 (an integer input may only feed embedding)"
    if 0 in x.shape[1:]:
        return "an empty input (an axis of size 0)"
    if x.ndim < 2 and not _liftable(case):
        return f"a {x.ndim}-d first input: nothing per example besides the batch"
    return None


def _batch_first(g, feeds: list, outs: list) -> list:
    """Transposes around a time-major recurrent node: X [B, T, F] -> [T, B, F]
    in, Y [T, D, B, H] -> [B, T, D, H] and Y_h [D, B, H] -> [B, D, H] out."""
    x = g.input[0]
    dims = x.type.tensor_type.shape.dim
    dims[0].dim_value, dims[1].dim_value = dims[1].dim_value, dims[0].dim_value
    nodes = [helper.make_node("Transpose", [x.name + "_bf"], [x.name], perm=[1, 0, 2])]
    x.name += "_bf"
    feeds[0] = np.ascontiguousarray(feeds[0].transpose(1, 0, 2))
    nodes += g.node
    moved = []
    for o, want in zip(g.output, outs):
        perm = [2, 0, 1, 3] if want.ndim == 4 else [1, 0, 2]
        nodes.append(helper.make_node("Transpose", [o.name], [o.name + "_bf"], perm=perm))
        o.name += "_bf"
        od = o.type.tensor_type.shape.dim
        sizes = [d.dim_value for d in od]
        for d, p in zip(od, perm):
            d.dim_value = sizes[p]
        moved.append(np.ascontiguousarray(want.transpose(perm)))
    del g.node[:]
    g.node.extend(nodes)
    return moved


def _prepare(case, dynamic: bool = False, first_only: bool = False):
    """(model, feeds, expected outputs) in nnc's terms: weights baked, the
    batch first; `dynamic`: the batch axis named, and the data doubled;
    `first_only`: the node's first output alone (no mask, no statistics)."""
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    g = m.graph
    inputs = [np.asarray(a) for a in case.data_sets[0][0]]
    outs = [np.asarray(a) for a in case.data_sets[0][1]]
    if first_only:
        del g.output[1:]
        outs = outs[:1]
    kind = inputs[0].dtype
    if kind.kind in "iu":           # INT_EXACT: the data's integers as float32
        inputs = [a.astype(np.float32) if a.dtype == kind else a for a in inputs]
        outs = [a.astype(np.float32) if a.dtype == kind else a for a in outs]
        for vi in [*g.input, *g.output]:
            if vi.type.tensor_type.elem_type == helper.np_dtype_to_tensor_dtype(kind):
                vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    if inputs[0].ndim == 1:         # _liftable: every 1-d value of the input's length gets a unit axis
        n = inputs[0].shape[0]
        inputs = [a.reshape(n, 1) if a.shape == (n,) else a for a in inputs]
        outs = [a.reshape(n, 1) for a in outs]
        for vi in [*g.input, *g.output]:
            shape = vi.type.tensor_type.shape
            if len(shape.dim) == 1 and shape.dim[0].dim_value == n:
                shape.dim.add().dim_value = 1
    readers: dict[str, set] = {}
    for node in g.node:
        for v in node.input:
            readers.setdefault(v, set()).add(node.op_type)
    first = inputs[0]
    data, feeds = {g.input[0].name}, [first]
    for vi, a in zip(list(g.input)[1:], inputs[1:]):
        if a.dtype.kind == "f" and a.ndim == first.ndim and a.shape[0] == first.shape[0] and \
                readers.get(vi.name, set()) & MERGES:
            data.add(vi.name)
            feeds.append(a)
        else:
            g.initializer.append(numpy_helper.from_array(a, vi.name))
    kept = [vi for vi in g.input if vi.name in data]
    del g.input[:]
    g.input.extend(kept)
    rec = [n for n in g.node if n.op_type in RECURRENT]
    if rec and not any(a.name == "layout" and a.i == 1 for a in rec[0].attribute):
        outs = _batch_first(g, feeds, outs)
    if dynamic:
        for vi in [*g.input, *g.output]:
            vi.type.tensor_type.shape.dim[0].dim_param = "batch"
        feeds = [np.concatenate([f, f]) for f in feeds]
        outs = [np.concatenate([o, o]) for o in outs]
    return m, feeds, outs


def _import(case, tmp_path, dynamic: bool = False, first_only: bool = False):
    m, feeds, outs = _prepare(case, dynamic, first_only)
    path = tmp_path / f"{case.name}.onnx"
    onnx.save(m, str(path))
    text, weights = nnc.from_onnx(path)
    return text, weights, feeds, outs


def _check(case, tmp_path, target: str = "numpy", dynamic: bool = False, first_only: bool = False) -> None:
    text, weights, feeds, outs = _import(case, tmp_path, dynamic, first_only)
    model = nnc.build(text, target=target, batch=feeds[0].shape[0], weights=weights)
    got = model(*feeds)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(outs), text
    for y, want in zip(got, outs):
        # an output may keep nnc's shape: unit axes dropped (from_onnx's drop_units)
        assert y.shape[0] == want.shape[0] and [d for d in y.shape[1:] if d != 1] == \
            [d for d in want.shape[1:] if d != 1], f"{y.shape} vs {want.shape}\n{text}"
        np.testing.assert_allclose(y.reshape(want.shape), want.astype(np.float64), rtol=case.rtol,
                                   atol=case.atol, err_msg=text)


INEXPRESSIBLE = [     # (the op the error names, words of its reason, cases without their "test_")
    ("Add", 'adds a constant of shape [5]', ["add_bcast"]),
    ("AveragePool", '3-d pooling', [
        "averagepool_3d_default", "averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False",
        "averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True",
        "averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False",
        "averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True", "averagepool_3d_dilations_small",
    ]),
    ("AveragePool", 'ceil_mode=1 where the last window is partial', ["averagepool_2d_ceil"]),
    ("AveragePool", 'count_include_pad=0 with padding', [
        "averagepool_2d_pads", "averagepool_2d_precomputed_pads", "averagepool_2d_precomputed_same_upper",
        "averagepool_2d_same_lower", "averagepool_2d_same_upper",
    ]),
    ("AveragePool", 'dilated pooling', ["averagepool_2d_dilations"]),
    ("BatchNormalization", 'training_mode=1', ["batchnorm_epsilon_training_mode", "batchnorm_example_training_mode"]),
    ("Concat", 'concatenates along the batch axis', [
        "concat_2d_axis_0", "concat_2d_axis_negative_2", "concat_3d_axis_0", "concat_3d_axis_negative_3",
    ]),
    ("ConvTranspose", 'a 3-d transposed convolution', ["convtranspose_3d"]),
    ("ConvTranspose", 'output_shape', ["convtranspose_kernel_shape", "convtranspose_output_shape"]),
    ("Div", 'divides by or into a constant', ["div_bcast"]),
    ("Dropout", 'its mask is used', [
        "dropout_default_mask", "dropout_default_mask_ratio", "training_dropout_zero_ratio_mask",
    ]),
    ("Dropout", 'training_mode=true', [
        "training_dropout", "training_dropout_default", "training_dropout_default_mask", "training_dropout_mask",
    ]),
    ("Flatten", '(only 1: keep the batch)', [
        "flatten_axis0", "flatten_axis2", "flatten_axis3", "flatten_negative_axis1", "flatten_negative_axis2",
        "flatten_negative_axis3", "flatten_negative_axis4",
    ]),
    ("GRU", 'direction=reverse', ["gru_reverse"]),
    ("GRU", 'linear_before_reset=0', [
        "gru_batchwise", "gru_bidirectional", "gru_defaults", "gru_seq_length", "gru_with_initial_bias",
    ]),
    ("Gather", 'indexes the batch axis', ["gather_0"]),
    ("Gather", 'indices (nnc selects one, or slices)', ["gather_1", "gather_2d_indices"]),
    ("Gelu", 'the tanh approximation', ["gelu_tanh_1", "gelu_tanh_2"]),
    ("Gemm", 'a bias C of shape [3, 4]', ["gemm_default_matrix_bias"]),
    ("Gemm", 'transA=1', ["gemm_all_attributes", "gemm_transposeA"]),
    ("HardSigmoid", "alpha/beta other than PyTorch's 1/6 and 0.5", [
        "hardsigmoid", "hardsigmoid_default", "hardsigmoid_example",
    ]),
    ("LSTM", 'direction=reverse', ["lstm_reverse"]),
    ("LSTM", 'its final cell state is used', ["lstm_bidirectional"]),
    ("LSTM", 'peepholes or coupled gates', ["lstm_with_peepholes"]),
    ("LayerNormalization", 'its output 2', [
        "layer_normalization_2d_axis1", "layer_normalization_2d_axis_negative_1",
        "layer_normalization_3d_axis1_epsilon", "layer_normalization_3d_axis2_epsilon",
        "layer_normalization_3d_axis_negative_1_epsilon", "layer_normalization_3d_axis_negative_2_epsilon",
        "layer_normalization_4d_axis1", "layer_normalization_4d_axis2", "layer_normalization_4d_axis3",
        "layer_normalization_4d_axis_negative_1", "layer_normalization_4d_axis_negative_2",
        "layer_normalization_4d_axis_negative_3", "layer_normalization_default_axis",
    ]),
    ("LayerNormalization", 'normalises over the batch axis', [
        "layer_normalization_2d_axis0", "layer_normalization_2d_axis_negative_2",
        "layer_normalization_3d_axis0_epsilon", "layer_normalization_3d_axis_negative_3_epsilon",
        "layer_normalization_4d_axis0", "layer_normalization_4d_axis_negative_4",
    ]),
    ("LogSoftmax", 'over the batch axis', ["logsoftmax_axis_0"]),
    ("MatMul", 'a weight of rank 1', ["matmul_4d_1d"]),
    ("MatMul", 'a weight of rank 4', ["matmul_bcast"]),
    ("MaxPool", '3-d pooling', [
        "maxpool_3d_default", "maxpool_3d_dilations", "maxpool_3d_dilations_use_ref_impl",
        "maxpool_3d_dilations_use_ref_impl_large",
    ]),
    ("MaxPool", 'dilated pooling', ["maxpool_2d_dilations"]),
    ("MaxPool", 'its output 2', [
        "maxpool_with_argmax_2d_precomputed_pads", "maxpool_with_argmax_2d_precomputed_strides",
    ]),
    ("Mul", 'scales by a constant', ["mul_bcast"]),
    ("PRelu", 'a slope of shape', ["prelu_broadcast", "prelu_example"]),
    ("Pad", 'mode=wrap', ["wrap_pad"]),
    ("Pad", 'padding of selected axes', ["constant_pad_axes", "constant_pad_negative_axes"]),
    ("Pow", 'an exponent of', [
        "pow_bcast_array", "pow_types_float32_int32", "pow_types_float32_int64", "pow_types_float32_uint32",
        "pow_types_float32_uint64",
    ]),
    ("Pow", 'its exponent is not a constant', ["pow", "pow_example"]),
    ("RNN", 'direction=reverse', ["simple_rnn_reverse"]),
    ("ReduceMax", 'reduces every axis but the batch', [
        "logsoftmax_example_1_expanded", "logsoftmax_example_1_expanded_ver18", "logsoftmax_large_number_expanded",
        "logsoftmax_large_number_expanded_ver18", "softmax_example_expanded", "softmax_example_expanded_ver18",
        "softmax_large_number_expanded", "softmax_large_number_expanded_ver18",
    ]),
    ("ReduceMax", 'reduces every axis, the batch too', [
        "reduce_max_default_axes_keepdim_example", "reduce_max_default_axes_keepdims_random",
    ]),
    ("ReduceMax", 'reduces the batch axis', [
        "logsoftmax_axis_0_expanded", "logsoftmax_axis_0_expanded_ver18", "softmax_axis_0_expanded",
        "softmax_axis_0_expanded_ver18",
    ]),
    ("ReduceMean", 'reduces every axis, the batch too', [
        "reduce_mean_default_axes_keepdims_example", "reduce_mean_default_axes_keepdims_random",
    ]),
    ("ReduceMean", 'reduces the batch axis', ["mvn_expanded", "mvn_expanded_ver18"]),
    ("ReduceSum", 'reduces every axis but the batch', ["reduce_log_sum_desc_axes_expanded"]),
    ("ReduceSum", 'reduces every axis, the batch too', [
        "reduce_l1_default_axes_keepdims_example_expanded", "reduce_l1_default_axes_keepdims_random_expanded",
        "reduce_log_sum_default_expanded", "reduce_sum_default_axes_keepdims_example",
        "reduce_sum_default_axes_keepdims_random", "reduce_sum_square_default_axes_keepdims_example_expanded",
        "reduce_sum_square_default_axes_keepdims_random_expanded",
    ]),
    ("ReduceSum", 'reduces the batch axis', ["reduce_log_sum_asc_axes_expanded"]),
    ("Reshape", 'reshapes the batch axis', [
        "reshape_allowzero_reordered", "reshape_negative_extended_dims", "reshape_one_dim", "reshape_reordered_all_dims",
    ]),
    ("Resize", 'asymmetric, nearest_mode=round_prefer_ceil', [
        "resize_upsample_sizes_nearest_round_prefer_ceil_asymmetric",
    ]),
    ("Resize", 'coordinate_transformation_mode=align_corners', [
        "resize_upsample_scales_linear_align_corners", "resize_upsample_sizes_nearest_floor_align_corners",
    ]),
    ("Resize", 'mode=cubic', [
        "resize_downsample_scales_cubic", "resize_downsample_scales_cubic_A_n0p5_exclude_outside",
        "resize_downsample_scales_cubic_align_corners", "resize_downsample_scales_cubic_antialias",
        "resize_downsample_sizes_cubic", "resize_downsample_sizes_cubic_antialias", "resize_upsample_scales_cubic",
        "resize_upsample_scales_cubic_A_n0p5_exclude_outside", "resize_upsample_scales_cubic_align_corners",
        "resize_upsample_scales_cubic_asymmetric", "resize_upsample_sizes_cubic",
    ]),
    ("Resize", 'nearest_mode=ceil', ["resize_upsample_sizes_nearest_ceil_half_pixel"]),
    ("Resize", 'only whole numbers on the spatial axes', [
        "resize_downsample_scales_linear", "resize_downsample_scales_linear_align_corners",
        "resize_downsample_scales_linear_antialias", "resize_downsample_scales_linear_half_pixel_symmetric",
        "resize_downsample_scales_nearest", "resize_downsample_sizes_linear_antialias",
        "resize_downsample_sizes_linear_pytorch_half_pixel", "resize_downsample_sizes_nearest",
        "resize_downsample_sizes_nearest_not_larger", "resize_downsample_sizes_nearest_not_smaller",
        "resize_tf_crop_and_resize", "resize_tf_crop_and_resize_axes_2_3", "resize_tf_crop_and_resize_axes_3_2",
        "resize_tf_crop_and_resize_extrapolation_value", "resize_upsample_scales_linear_half_pixel_symmetric",
        "resize_upsample_sizes_nearest", "resize_upsample_sizes_nearest_axes_2_3",
        "resize_upsample_sizes_nearest_axes_3_2", "resize_upsample_sizes_nearest_not_larger",
    ]),
    ("Selu", 'alpha=2.0', ["selu", "selu_example"]),
    ("Shape", "the model's output is a constant", [
        "shape", "shape_clip_end", "shape_clip_start", "shape_end_1", "shape_end_negative_1", "shape_example",
        "shape_start_1", "shape_start_1_end_2", "shape_start_1_end_negative_1", "shape_start_greater_than_end",
        "shape_start_negative_1",
    ]),
    ("Slice", 'a step of -1', ["slice_neg_steps"]),
    ("Slice", 'an empty slice', ["slice_start_out_of_bounds"]),
    ("Slice", 'slices the batch axis', ["slice"]),
    ("Softmax", 'over the batch axis', ["softmax_axis_0"]),
    ("Squeeze", 'squeezes the batch axis', ["squeeze"]),
    ("Sub", 'a constant operand', ["sub_bcast"]),
    ("Sub", 'broadcasting between shapes', [
        "logsoftmax_axis_1_expanded", "logsoftmax_axis_1_expanded_ver18", "logsoftmax_axis_2_expanded",
        "logsoftmax_axis_2_expanded_ver18", "logsoftmax_default_axis_expanded",
        "logsoftmax_default_axis_expanded_ver18", "logsoftmax_negative_axis_expanded",
        "logsoftmax_negative_axis_expanded_ver18", "softmax_axis_1_expanded", "softmax_axis_1_expanded_ver18",
        "softmax_axis_2_expanded", "softmax_axis_2_expanded_ver18", "softmax_default_axis_expanded",
        "softmax_default_axis_expanded_ver18", "softmax_negative_axis_expanded",
        "softmax_negative_axis_expanded_ver18",
    ]),
    ("Transpose", 'reads a value whose batch axis is not first', [
        "transpose_all_permutations_2", "transpose_all_permutations_3", "transpose_all_permutations_4",
        "transpose_all_permutations_5", "transpose_default",
    ]),
    ("Unsqueeze", 'reads a value whose batch axis is not first', ["unsqueeze_axis_0"]),
]
UNSUPPORTED = {f"test_{name}": (op, why) for op, why, names in INEXPRESSIBLE for name in names}

NOT_HANDLED = {        # cases of ops no handler takes: the error names them as "(Op)"
    f"test_{name}": op for name, op in (
        ("argmax_default_axis_example", "ArgMax"), ("celu", "Celu"), ("depthtospace_example", "DepthToSpace"),
        ("einsum_batch_matmul", "Einsum"), ("erf", "Erf"), ("hardmax_axis_1", "Hardmax"), ("lppool_2d_default", "LpPool"),
        ("lrn", "LRN"), ("mvn", "MeanVarianceNormalization"), ("reciprocal", "Reciprocal"),
        ("reduce_min_do_not_keepdims_example", "ReduceMin"), ("softsign", "Softsign"),
        ("spacetodepth", "SpaceToDepth"), ("thresholdedrelu", "ThresholdedRelu"), ("tile", "Tile"))
}

SKIPPED = {name: why for name in SELECTED if (why := _skip_reason(CASES[name]))}
EMPTY = sorted(name for name, why in SKIPPED.items() if why.startswith("an empty input"))
EXPRESSIBLE = [n for n in SELECTED if n not in SKIPPED and n not in UNSUPPORTED]
FIRST_OUTPUT = sorted(n for n, (_, why) in UNSUPPORTED.items() if why in ("its output 2", "its mask is used"))
C_SAMPLE = [f"test_{name}" for name in (
    "averagepool_2d_pads_count_include_pad", "batchnorm_epsilon", "conv_with_strides_and_asymmetric_padding",
    "convtranspose_pads", "edge_pad", "gemm_alpha", "group_normalization_example", "instancenorm_example",
    "lstm_with_initial_bias", "matmul_3d", "maxpool_2d_same_upper", "mish", "reduce_mean_keepdims_random",
    "resize_upsample_scales_linear", "simple_rnn_batchwise", "softmax_axis_1")]
DYNAMIC_SAMPLE = [f"test_{name}" for name in (
    "concat_3d_axis_1", "conv_with_autopad_same", "convtranspose_autopad_same", "flatten_default_axis",
    "gemm_default_vector_bias", "lstm_defaults", "maxpool_2d_ceil", "reduce_sum_keepdims_random",
    "resize_upsample_sizes_nearest_not_smaller", "softmax_axis_2", "split_equal_parts_2d", "upsample_nearest")]


@pytest.mark.parametrize("name", EXPRESSIBLE)
def test_expressible_case_imports_and_computes_the_cases_outputs(name, tmp_path):
    _check(CASES[name], tmp_path)


@pytest.mark.parametrize("name", FIRST_OUTPUT)
def test_the_first_output_alone_computes_the_cases_first_output(name, tmp_path):
    """A layernorm without its statistics, a dropout or max pool without
    its mask or indices: the output a model uses."""
    _check(CASES[name], tmp_path, first_only=True)


@pytest.mark.parametrize("name", C_SAMPLE)
def test_c_target_computes_the_cases_outputs(name, tmp_path):
    _check(CASES[name], tmp_path, target="c")


@pytest.mark.parametrize("name", DYNAMIC_SAMPLE)
def test_a_dynamic_batch_computes_the_cases_outputs(name, tmp_path):
    _check(CASES[name], tmp_path, dynamic=True)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED) + sorted(NOT_HANDLED))
def test_inexpressible_case_is_one_line_naming_the_op(name, tmp_path):
    op, why = UNSUPPORTED.get(name) or (NOT_HANDLED[name], "")
    with pytest.raises(OnnxImportError) as e:
        _import(CASES[name], tmp_path)
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message
    assert f"({op}: " in message or f"({op})" in message, message
    assert why in message, message


@pytest.mark.parametrize("name", EMPTY)
def test_an_empty_input_is_one_line_naming_it(name, tmp_path):
    with pytest.raises(OnnxImportError) as e:
        _import(CASES[name], tmp_path)
    message = str(e.value)
    assert "\n" not in message and "is empty (an axis of size 0)" in message
    assert f"input `{CASES[name].model.graph.input[0].name}`" in message, message


def test_the_lists_name_real_cases_and_cover_the_selection():
    """Stale names fail here, and the selection is the large one expected
    (not a partial collection)."""
    assert len(CASES) > 1000
    assert set(UNSUPPORTED) <= set(SELECTED) and set(NOT_HANDLED) <= set(CASES)
    assert not set(UNSUPPORTED) & set(SKIPPED)
    assert set(C_SAMPLE) <= set(EXPRESSIBLE) and set(DYNAMIC_SAMPLE) <= set(EXPRESSIBLE)
    assert len(EXPRESSIBLE) >= 190
    for name in NOT_HANDLED:
        assert _skip_reason(CASES[name]) is None and not _ops(CASES[name]) <= HANDLED


def _final_state_graph(two_layers: bool):
    """X [B, T, F] -> Transpose -> RNN (-> Squeeze -> RNN) as the TorchScript
    exporter writes nn.RNN(batch_first=True): the output reads the final
    states Y_h through a Gather of their unit axis (`h_n[-1]`): one layer's,
    or the sum of both layers' (the first layer must then end its stack)."""
    rng = np.random.default_rng(0)
    f, h = 3, 4
    inits, nodes = [], [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2])]
    src, finals = "xt", []
    for k in range(2 if two_layers else 1):
        for name, shape in (("W", (1, h, f if k == 0 else h)), ("R", (1, h, h)), ("B", (1, 2 * h))):
            inits.append(numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), f"{name}{k}"))
        nodes.append(helper.make_node("RNN", [src, f"W{k}", f"R{k}", f"B{k}"], [f"y{k}", f"yh{k}"], hidden_size=h,
                                      name="/rnn/RNN" + (f"_{k}" if k else "")))
        inits.append(numpy_helper.from_array(np.array([1], np.int64), f"one{k}"))
        nodes.append(helper.make_node("Squeeze", [f"y{k}", f"one{k}"], [f"ys{k}"]))
        src = f"ys{k}"
        finals.append(f"yh{k}")
    inits.append(numpy_helper.from_array(np.array(-1, np.int64), "last"))
    for v in finals:
        nodes.append(helper.make_node("Gather", [v, "last"], [f"{v}_last" if two_layers else "out"], axis=0))
    if two_layers:
        nodes.append(helper.make_node("Add", [f"{v}_last" for v in finals], ["out"]))
    g = helper.make_graph(nodes, "final_state", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 5, f])],
                          [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize("two_layers", [False, True])
def test_a_one_way_layers_final_state_is_its_last_step(two_layers, tmp_path):
    from onnx.reference import ReferenceEvaluator
    m = _final_state_graph(two_layers)
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    onnx.save(m, str(tmp_path / "final_state.onnx"))
    text, weights = nnc.from_onnx(tmp_path / "final_state.onnx")
    assert text.count("rnn(4") == (2 if two_layers else 1) and "layers=2" not in text, text
    got = nnc.build(text, batch=2, weights=weights)(x)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-6, err_msg=text)
