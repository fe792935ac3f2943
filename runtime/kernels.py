"""The NumPy kernels that generated modules call: preplanned views in, results
written into `out`, nothing large allocated.

This module is a facade: the kernels live in one module per op family
(`conv.py`, `dense.py`, `pool.py`, `norm.py`, `recurrent.py`, `elementwise.py`,
`shape.py`, `merge.py`, `streaming.py`; shared helpers in `_common.py` and
`_windows.py`) and are re-exported here, because generated modules do
`from nnc.runtime import kernels as K` and call `K.<name>`. A new kernel goes
into its family's module and gets a line below. The conventions every kernel
follows:

In:  float32 C-contiguous arrays, batch first (`[B, C, H, W]`, `[B, C, T]`,
     `[B, T, F]`, `[B, F]`), all views of the model's one arena; parameters
     in PyTorch's layout; and, for kernels that need temporaries, a `scratch`
     dict of arena views named and shaped by the kernel's scratch function.
Out: the result, written into `out` with PyTorch's semantics (the tests pin
     every kernel to `torch.nn.functional`). `out` may also be a channel slice
     of a concat's buffer (contiguous per example, strided across the batch):
     conv, dense, pooling, activations and merges accept that.

Scratch. A kernel that needs temporaries has a pure function of shapes that
names them: `NAME_scratch(...) -> {name: shape}`. Shapes count the batch as
their first axis and scale linearly with it, so a plan made for one example
holds at batch B. The kernel takes `scratch=` with views of exactly those
shapes, whose contents it never reads before writing; `scratch=None`
allocates them instead (for tests and one-off calls, not for planned code).

Tiles. Scratch is bounded by a tile of the work, never by the layer:
convolutions take the im2col columns of a tile of output rows (or of a row's
columns), depthwise convolutions and pooling a block of channels,
attention a block of query rows of a group of heads, recurrent layers a
chunk of time steps, activations with temporaries a piece of the array.
`NAME_tiles(..., budget=N) -> tiles` picks the largest tiles whose scratch
fits N floats per example (the compiler gives each step a budget from the
room in its memory plan); the kernel and its scratch function take them as
`tiles=` (or `budget=`, or neither: a default budget). A plan picks tiles at
the bounds of its named dimensions, so a shorter input takes the same tiles
or smaller ones and never outgrows its planned scratch. The kernels write
`out` directly (matmuls into tiles of it); ufuncs run on contiguous arrays
where they can (NumPy buffers a ufunc over strided operands).

    kernel                                          scratch function
    ----------------------------------------------  ---------------------------------------------
    conv2d(x, w, b, out, *, stride, padding,        conv2d_scratch(in_shape, w_shape, *, stride,
           dilation, groups, act, tiles, scratch)       padding, dilation, groups, act=None, tiles)
                                                    conv2d_tiles(same, budget) -> (rows, cols, channels)
    conv2d(..., pack=conv2d_pack(w, in_shape, *,    conv2d_scratch(..., packed=True); a plan packs when
           stride, padding, dilation))              conv2d_packs(in_shape, w_shape, ..., tiles)
    conv1d(same, 1-D arguments)                     conv1d_scratch, conv1d_tiles(same, 1-D arguments)
    conv_transpose2d(x, w, b, out, *, stride,       conv_transpose2d_scratch(in_shape, w_shape, *,
      padding, output_padding, dilation, groups,        same), conv_transpose2d_tiles(same, budget)
      tiles, scratch), conv_transpose1d(same, 1-D)   conv_transpose1d_scratch, _tiles(1-D arguments)
    dense(x, w, b, out, *, act, scratch)            dense_scratch(in_shape, w_shape, *, act=None, budget)
    maxpool2d(x, out, *, kernel, stride, padding,   maxpool2d_scratch(in_shape, *, kernel, stride,
              tiles, scratch), avgpool2d(same)          padding, tiles), avgpool2d_scratch(same);
                                                        maxpool2d_tiles, avgpool2d_tiles(same, budget)
    maxpool1d, avgpool1d(same, 1-D arguments)       maxpool1d_scratch, avgpool1d_scratch(same,
                                                        1-D arguments)
    global_avgpool(x, out)                          none
    batchnorm(x, mean, var, gamma, beta, eps, out)  none
    layernorm(x, gamma, beta, eps, out, *, scratch) layernorm_scratch(shape)
    prelu(x, w, out, *, scratch)                    prelu_scratch(shape)
    relu, relu6, sigmoid, tanh, hardsigmoid(x, out) none
    silu, selu, softplus, hardswish, gelu           activation_scratch((name, *params), shape, budget)
      (x, out, *, scratch),
      leaky_relu(x, out, slope, *, scratch),
      elu(x, out, alpha, *, scratch)
    neg, abs, exp, log, sqrt, square(x, out),       none
      clamp(x, out, min, max)
    glu(x, axis, out), slice_axis(x, axis, start,   none
      stop, step, out), select_axis(x, axis,
      index, out), reduce_sum/mean/max(x, axes, out)
    softmax(x, axis, out, *, scratch)               softmax_scratch(shape, axis)
    log_softmax(x, axis, out, *, scratch)           log_softmax_scratch(shape, axis)
    add(inputs, out, *, act, scratch)               add_scratch(shape, *, act=None, budget)
    sub(a, b, out), mul(inputs, out)                none
    concat(inputs, axis, out), transpose(x, perm,   none
      out), upsample(x, scale, out), copy(x, out)
    pad(x, out, pads, mode, value)                  none
    global_maxpool(x, out)                          none
    upsample_linear(x, scale, out, *, scratch)      upsample_linear_scratch(in_shape, scale)
    groupnorm(x, gamma, beta, eps, groups, out, *,  groupnorm_scratch(shape, groups)
      scratch) (instancenorm: groups = C)
    adaptive_avgpool2d(x, out, *, size, scratch),   adaptive_avgpool2d_scratch(in_shape, *, size);
      adaptive_avgpool1d(x, out, *, size)               none
    attention(x, w_in, b_in, w_out, b_out, out, *,  attention_scratch(in_shape, heads, *, causal,
      heads, causal, tiles, scratch)                    tiles); attention_tiles(same, budget)
    rnn_forward(x, pack, out, *, tiles, states,     rnn_scratch(kind, in_shape, *, hidden, layers,
      scratch): every GRU, LSTM and RNN layer,          dirs, streaming, tiles); rnn_tiles(kind,
      stacked, two-way or streamed, with weights        in_shape, *, hidden, layers, dirs, budget)
      packed by rnn_pack(kind, weights, *, hidden,
      layers, dirs, nonlinearity) (recurrent_infer.py;
      gru, lstm, rnn_stack and their _chunk kernels
      run on it too, packing per call)

Training kernels (forward and backward side by side in the family modules).
A backward kernel overwrites the gradients it is given (`dx=`, `dw=`, ...;
None: not wanted), sums parameter gradients over the batch, takes its
forward's attribute keywords, and works in the dtype of its arrays (float64
too, for gradient checks; scratch it allocates itself takes that dtype).
Scratch functions as above. `dx` may be `dy` in the elementwise, softmax,
layernorm, dropout and mul backward kernels, not in batchnorm's (where it
may be `x`, the saved input). Backward kernels whose scratch function takes
`chunk=` work chunk by chunk of examples (the scratch's first axis).

    kernel                                          scratch function
    ----------------------------------------------  ---------------------------------------------
    conv2d_backward(x, w, dy, *, stride, padding,   conv2d_backward_scratch(in_shape, w_shape, *,
      dilation, groups, dx, dw, db, scratch)            stride, padding, dilation, groups, need_dx=True,
                                                        chunk=None)
    conv1d_backward(same, 1-D arguments)            conv1d_backward_scratch(same, 1-D arguments)
    conv_transpose2d_backward(x, w, dy, *, stride,  conv_transpose2d_backward_scratch(in_shape,
      padding, output_padding, dilation, groups,        w_shape, *, same, need_dx=True)
      dx, dw, db, scratch), conv_transpose1d_...     conv_transpose1d_backward_scratch(same, 1-D)
    dense_backward(x, w, dy, *, dx, dw, db, rows)   none (rows: dw of those output rows only, for
                                                      a blocked update)
    maxpool2d_train(x, out, argmax, *, kernel,      maxpool2d_train_scratch(in_shape, *, kernel,
      stride, padding, scratch), maxpool1d_train        stride, padding), maxpool1d_train_scratch
    maxpool2d_backward(dy, argmax, *, dx, scratch)  maxpool2d_backward_scratch(out_shape) (= 1d's)
      maxpool1d_backward(same)
    avgpool2d_backward(dy, *, kernel, stride,       none
      padding, dx), avgpool1d_backward(same),
      global_avgpool_backward(dy, *, dx)
    batchnorm_train(x, gamma, beta, running_mean,   none
      running_var, *, eps, momentum, out, mean,
      rstd), batchnorm_backward(x, gamma, dy,
      mean, rstd, *, dx, dgamma, dbeta)
    layernorm_train(x, gamma, beta, *, eps, out,    none
      mean, rstd)
    layernorm_backward(x, gamma, dy, mean, rstd,    layernorm_backward_scratch(shape)
      *, dx, dgamma, dbeta, scratch)
    activation_backward(act, x, y, dy, *, dx,       activation_backward_scratch(act, shape);
      scratch)                                          activation_backward_reads(name) -> "x" | "y"
    activation_mask(act, x, mask),                  activation_backward_masked_scratch(act, shape)
      activation_backward_masked(act, mask, dy,
      *, dx, scratch) (relu, relu6, leaky_relu,
      clamp: one byte per element, not x or y)
    batchnorm_chain_train(x, gamma, beta,           batchnorm_chain_train_scratch(in_shape, *, act,
      running_mean, running_var, *, eps, momentum,      pool, chunk)
      act, pool, out, mean, rstd, argmax, scratch)
    batchnorm_chain_backward(x, gamma, beta, dy,    batchnorm_chain_backward_scratch(in_shape, *, act,
      mean, rstd, *, act, pool, argmax, dx, dgamma,     pool, chunk)
      dbeta, scratch), batchnorm_chain_recompute(   batchnorm_chain_recompute_scratch(in_shape, *,
      x, gamma, beta, mean, rstd, *, act, out,          act, chunk)
      scratch) (a batchnorm with the activation
      and max pool it takes in, as one step)
    prelu_backward(x, w, dy, *, dx, dw, scratch)    prelu_backward_scratch(shape)
    softmax_backward(y, dy, *, axis, dx, scratch)   softmax_backward_scratch(shape, axis)
    log_softmax_backward(same)                      log_softmax_backward_scratch(shape, axis)
    dropout_train(x, *, p, rng, out, mask),         none
      dropout_backward(dy, mask, *, dx)
    transpose_backward(dy, perm, *, dx),            none
      upsample_backward(dy, scale, *, dx),
      pad_backward(dy, pads, mode, value, *, dx,    pad_backward_scratch(out_shape, mode)
        scratch),
    groupnorm_train(x, gamma, beta, *, eps, groups, none
      out, mean, rstd)
    groupnorm_backward(x, gamma, dy, mean, rstd, *, groupnorm_backward_scratch(shape, groups)
      groups, dx, dgamma, dbeta, scratch)
    upsample_linear_backward(dy, scale, *, dx,      upsample_linear_scratch(in_shape, scale)
      scratch)
    global_maxpool_train(x, out, argmax),           none
      global_maxpool_backward(dy, argmax, *, dx)
    adaptive_avgpool2d_backward(dy, *, size, dx,    adaptive_avgpool2d_backward_scratch(out_shape, *,
      scratch), adaptive_avgpool1d_backward(same)       in_hw)
      mul_backward(inputs, dy, index, *, dx)
    rnn_stack(kind, x, weights, out, *, hidden,     rnn_stack_scratch(kind, in_shape, hidden,
      layers, dirs, scratch) and its _chunk,            layers, dirs) (and _chunk, _train,
      _train, _backward (stacked / two-way            _backward's)
      gru and lstm, recurrent_stack.py)
    gru_train(x, w_ih, w_hh, b_ih, b_hh, out, *,    gru_train_scratch(in_shape, hidden)
      scratch)
    gru_backward(x, w_ih, w_hh, b_ih, b_hh, out,    gru_backward_scratch(in_shape, hidden)
      dy, *, dx, dw_ih, dw_hh, db_ih, db_hh,          (both bounded by recurrent._STEPS steps:
      accumulate_dx, scratch)                         the backward recomputes the gates)
    lstm_train(x, w_ih, w_hh, b_ih, b_hh, out,      lstm_train_scratch(in_shape, hidden)
      cells, *, scratch)
    lstm_backward(x, w_ih, w_hh, b_ih, b_hh, out,   lstm_backward_scratch(in_shape, hidden)
      cells, dy, *, dx, dw_ih, dw_hh, db_ih,
      db_hh, accumulate_dx, scratch)

Arguments. `stride` and `dilation` are `(sh, sw)` (an int for 1-D kernels);
`padding` is explicit, `((top, bottom), (left, right))` or `(left, right)`
for 1-D (the compiler resolves `same`, `valid` and `causal`). `act` is a
fused activation, None or `(name, *params)` such as `("leaky_relu", 0.01)`;
`apply_activation` runs it in place. `axis` counts the batch as axis 0,
except in `concat` and `transpose`, whose axes and permutation leave it out.
"""

from .conv import (conv1d, conv1d_backward, conv1d_backward_scratch, conv1d_scratch, conv1d_tiles, conv2d,
                   conv2d_backward, conv2d_backward_scratch, conv2d_pack, conv2d_packs, conv2d_scratch,
                   conv2d_tiles)
from .conv import (conv_transpose1d, conv_transpose1d_backward, conv_transpose1d_backward_scratch,
                   conv_transpose1d_scratch, conv_transpose1d_tiles, conv_transpose2d, conv_transpose2d_backward,
                   conv_transpose2d_backward_scratch, conv_transpose2d_scratch, conv_transpose2d_tiles)
from .dense import dense, dense_backward, dense_scratch
from .elementwise import (activation_scratch, apply_activation, elu, gelu, hardsigmoid, hardswish, leaky_relu,
                          log_softmax, log_softmax_scratch, prelu, prelu_scratch, relu, relu6, selu, sigmoid,
                          silu, softmax, softmax_scratch, softplus, tanh)
from .elementwise import (activation_backward, activation_backward_reads, activation_backward_scratch,
                          dropout_backward, dropout_train, log_softmax_backward, log_softmax_backward_scratch,
                          prelu_backward, prelu_backward_scratch, softmax_backward, softmax_backward_scratch)
from .elementwise import _ERF_CLAMP, _erf_over_z  # noqa: F401  (the gelu tests reach them through K)
from .elementwise import abs, clamp, exp, log, neg, sqrt, square  # noqa: A004  (section 9's elementwise math)
from .merge import add, add_scratch, concat, mul, mul_backward, sub
from .norm import (batchnorm, batchnorm_backward, batchnorm_train, layernorm, layernorm_backward,
                   layernorm_backward_scratch, layernorm_scratch, layernorm_train)
from .norm import (batchnorm_chain_backward, batchnorm_chain_backward_scratch, batchnorm_chain_recompute,
                   batchnorm_chain_recompute_scratch, batchnorm_chain_train, batchnorm_chain_train_scratch)
from .elementwise import activation_backward_masked, activation_backward_masked_scratch, activation_mask
from .pool import (avgpool1d, avgpool1d_scratch, avgpool1d_tiles, avgpool2d, avgpool2d_scratch, avgpool2d_tiles,
                   global_avgpool, maxpool1d, maxpool1d_scratch, maxpool1d_tiles, maxpool2d, maxpool2d_scratch,
                   maxpool2d_tiles)
from .pool import (avgpool1d_backward, avgpool2d_backward, global_avgpool_backward, maxpool1d_backward,
                   maxpool1d_backward_scratch, maxpool1d_train, maxpool1d_train_scratch, maxpool2d_backward,
                   maxpool2d_backward_scratch, maxpool2d_train, maxpool2d_train_scratch)
from .recurrent import (gru, gru_chunk, gru_chunk_scratch, gru_scratch, lstm, lstm_chunk, lstm_chunk_scratch,
                        lstm_scratch)
from .recurrent import (gru_backward, gru_backward_scratch, gru_train, gru_train_scratch, lstm_backward,
                        lstm_backward_scratch, lstm_train, lstm_train_scratch)
from .shape import copy, transpose, transpose_backward, upsample, upsample_backward
from .shape import pad, pad_backward, pad_backward_scratch, upsample_linear, upsample_linear_backward
from .shape import upsample_linear_scratch
from .norm import (groupnorm, groupnorm_backward, groupnorm_backward_scratch, groupnorm_scratch,
                   groupnorm_train)
from .pool import (adaptive_avgpool1d, adaptive_avgpool1d_backward, adaptive_avgpool2d, adaptive_avgpool2d_backward,
                   adaptive_avgpool2d_backward_scratch, adaptive_avgpool2d_scratch, global_maxpool,
                   global_maxpool_backward, global_maxpool_train)
from .reduce import (glu, glu_backward, glu_backward_scratch, reduce_max, reduce_max_backward, reduce_mean,
                     reduce_mean_backward, reduce_sum, reduce_sum_backward, select_axis, select_axis_backward,
                     slice_axis, slice_axis_backward)
from .recurrent_infer import RnnPack, rnn_forward, rnn_pack, rnn_scratch, rnn_tiles  # noqa: F401
from .recurrent_stack import (rnn_stack, rnn_stack_backward, rnn_stack_backward_scratch, rnn_stack_chunk,
                              rnn_stack_chunk_scratch, rnn_stack_scratch, rnn_stack_train, rnn_stack_train_scratch)
# Last: streaming.py calls back through this module (`K.conv1d`).
from .streaming import conv1d_stream, conv1d_stream_scratch
from .attention import (attention, attention_backward, attention_scratch, attention_stream,  # noqa: F401
                        attention_stream_scratch, attention_tiles, div, div_backward, embedding, embedding_backward,
                        matmul, matmul_backward, positional, positional_backward, positional_stream)
