"""Optimizers: `torch.optim`'s SGD, Adam and AdamW update rules, one parameter at a time.

In:  the hyperparameters (validated as `torch.optim` does, with its wording);
     then, per parameter and step, the parameter, its gradient (PyTorch's
     `p.grad`), the parameter's state arrays, the 1-based step number and a
     scratch array of the parameter's shape.
Out: the parameter and its state updated in place. `update` allocates
     nothing: every intermediate goes into the scratch array or into the
     state through ufunc `out=`.

The formulas are the single-tensor (non-`foreach`) ones of
`torch/optim/{sgd,adam}.py` (`_single_tensor_sgd`, `_single_tensor_adam`;
AdamW is Adam with `decoupled_weight_decay=True`):

    SGD:   g = grad + wd * param                       (weight_decay != 0)
           buf = g (first step) | buf * momentum + (1 - dampening) * g
           g = g + momentum * buf (nesterov) | buf     (momentum != 0)
           param -= lr * g
    Adam:  param *= 1 - lr * wd                        (AdamW)
           g = grad + wd * param                       (Adam, weight_decay != 0)
           exp_avg.lerp_(g, 1 - beta1)
           exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * g * g
           denom = sqrt(exp_avg_sq) / sqrt(1 - beta2**step) + eps
           param -= lr / (1 - beta1**step) * exp_avg / denom

Arithmetic is float32 as PyTorch's on float32 tensors: each hyperparameter
term is computed in double (as torch.optim does in Python) and enters the
array operations as a float32 scalar (NumPy 2 treats a Python float as a
weak scalar). PyTorch's CPU kernels fuse some multiply-adds (one rounding
where NumPy rounds twice) and the order of a few products differs, so
results agree to a few units in the last place per step, not bit for bit.

Every rule is elementwise (the step count enters as a scalar), so
`update_rows` applies it to a block of a parameter's rows with their
gradient, the same rows of its state and a scratch array of the block's
shape: blocks that cover the parameter once give the same numbers as one
whole update (a training plan forms a large dense weight's gradient that
way, a block at a time). The step number stays the parameter's: every block
of one update gets the same one.

State: `state_names` lists the arrays a parameter carries (each of the
parameter's shape); `state_bytes(param_bytes)` their size. The step count is
the trainer's (Adam's bias correction; SGD's first step sets the momentum
buffer to the gradient, as PyTorch's `clone`, instead of decaying it).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np

from .errors import UserError


class OptimizerError(UserError, ValueError):
    """A hyperparameter that torch.optim would refuse too (same wording)."""


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _at_least_zero(value: float, message: str) -> None:
    # `not 0.0 <= value` also refuses NaN
    if not 0.0 <= value or math.isinf(value):
        raise OptimizerError(message)


@dataclass(frozen=True, slots=True)
class SGD:
    """`torch.optim.SGD(params, lr, momentum, dampening, weight_decay, nesterov)`;
    `lr` is required."""

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False

    name: ClassVar[str] = "sgd"
    counts_steps: ClassVar[bool] = False   # no "step" entry in the optimizer state dict

    def __post_init__(self) -> None:
        for field in ("lr", "momentum", "dampening", "weight_decay"):
            object.__setattr__(self, field, _number(field, getattr(self, field)))
        if not isinstance(self.nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be True or False, got {self.nesterov!r}")
        object.__setattr__(self, "nesterov", bool(self.nesterov))
        _at_least_zero(self.lr, f"Invalid learning rate: {self.lr}")
        _at_least_zero(self.momentum, f"Invalid momentum value: {self.momentum}")
        _at_least_zero(self.weight_decay, f"Invalid weight_decay value: {self.weight_decay}")
        if not math.isfinite(self.dampening):
            raise OptimizerError(f"Invalid dampening value: {self.dampening}")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise OptimizerError("Nesterov momentum requires a momentum and zero dampening")

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def state_bytes(self, param_bytes: int) -> int:
        return len(self.state_names) * param_bytes

    def update(self, param: np.ndarray, grad: np.ndarray, state: Mapping[str, np.ndarray],
               step: int, scratch: np.ndarray) -> None:
        """One `_single_tensor_sgd` step for one parameter, in place. `step`
        is 1 on the parameter's first update (the momentum buffer starts as
        the gradient)."""
        g = grad
        if self.weight_decay != 0:
            np.multiply(param, self.weight_decay, out=scratch)     # grad.add(param, alpha=wd)
            scratch += grad
            g = scratch
        if self.momentum != 0:
            buf = state["momentum_buffer"]
            if step <= 1:
                np.copyto(buf, g)                                   # buf = clone(g)
            else:
                buf *= self.momentum                                # buf.mul_(m).add_(g, alpha=1 - d)
                if self.dampening == 0:
                    buf += g
                elif g is scratch:
                    scratch *= 1 - self.dampening                   # g is not needed after: no Nesterov
                    buf += scratch
                else:
                    np.multiply(grad, 1 - self.dampening, out=scratch)
                    buf += scratch
            if not self.nesterov:
                g = buf
            elif g is grad:
                np.multiply(buf, self.momentum, out=scratch)        # g.add(buf, alpha=m)
                scratch += grad
                g = scratch
            else:
                # weight decay and Nesterov: g + m * buf needs a second
                # buffer; apply the two terms one after the other instead
                scratch *= -self.lr
                param += scratch
                np.multiply(buf, self.momentum, out=scratch)
                g = scratch
        if g is not scratch:
            np.multiply(g, -self.lr, out=scratch)                   # param.add_(g, alpha=-lr)
        else:
            scratch *= -self.lr
        param += scratch


@dataclass(frozen=True, slots=True)
class Adam:
    """`torch.optim.Adam(params, lr, betas, eps, weight_decay)` (no amsgrad):
    L2 weight decay, added to the gradient."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    name: ClassVar[str] = "adam"
    counts_steps: ClassVar[bool] = True
    decoupled: ClassVar[bool] = False

    def __post_init__(self) -> None:
        for field in ("lr", "eps", "weight_decay"):
            object.__setattr__(self, field, _number(field, getattr(self, field)))
        try:
            b1, b2 = self.betas
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair of numbers, got {self.betas!r}") from None
        object.__setattr__(self, "betas", (_number("betas[0]", b1), _number("betas[1]", b2)))
        _at_least_zero(self.lr, f"Invalid learning rate: {self.lr}")
        _at_least_zero(self.eps, f"Invalid epsilon value: {self.eps}")
        for i, b in enumerate(self.betas):
            if not 0.0 <= b < 1.0:
                raise OptimizerError(f"Invalid beta parameter at index {i}: {b}")
        _at_least_zero(self.weight_decay, f"Invalid weight_decay value: {self.weight_decay}")

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def state_bytes(self, param_bytes: int) -> int:
        return len(self.state_names) * param_bytes

    def update(self, param: np.ndarray, grad: np.ndarray, state: Mapping[str, np.ndarray],
               step: int, scratch: np.ndarray) -> None:
        """One `_single_tensor_adam` step for one parameter, in place; `step`
        is the 1-based number of this update (bias correction)."""
        exp_avg = state["exp_avg"]
        exp_avg_sq = state["exp_avg_sq"]
        beta1, beta2 = self.betas
        g = grad
        if self.weight_decay != 0:
            if self.decoupled:
                param *= 1 - self.lr * self.weight_decay            # param.mul_(1 - lr * wd)
            else:
                np.multiply(param, self.weight_decay, out=scratch)  # grad.add(param, alpha=wd)
                scratch += grad
                g = scratch
        # exp_avg.lerp_(g, 1 - beta1), in float32 as torch's kernel
        weight = np.float32(1 - beta1)
        if g is grad:
            np.subtract(grad, exp_avg, out=scratch)                 # self + w * (end - self)
            scratch *= weight
            exp_avg += scratch
        else:
            exp_avg -= g                                            # end - (end - self) * (1 - w)
            exp_avg *= np.float32(1) - weight
            exp_avg += g
        # exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        exp_avg_sq *= beta2
        if g is grad:
            np.multiply(grad, 1 - beta2, out=scratch)
            scratch *= grad
        else:
            scratch *= scratch
            scratch *= 1 - beta2
        exp_avg_sq += scratch
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = self.lr / bias_correction1
        # denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        np.sqrt(exp_avg_sq, out=scratch)
        scratch /= bias_correction2 ** 0.5
        scratch += self.eps
        # param.addcdiv_(exp_avg, denom, value=-step_size)
        np.divide(exp_avg, scratch, out=scratch)
        scratch *= -step_size
        param += scratch


@dataclass(frozen=True, slots=True)
class AdamW(Adam):
    """`torch.optim.AdamW(params, lr, betas, eps, weight_decay=1e-2)`:
    decoupled weight decay, `param *= 1 - lr * weight_decay` first."""

    weight_decay: float = 1e-2

    name: ClassVar[str] = "adamw"
    decoupled: ClassVar[bool] = True


Optimizer = SGD | Adam | AdamW


def update_rows(optimizer: Optimizer, param: np.ndarray, grad: np.ndarray, state: Mapping[str, np.ndarray],
                step: int, scratch: np.ndarray, rows: slice) -> None:
    """`optimizer.update` of rows `rows` of `param` (and of each state
    array) with their gradient `grad` and a `scratch` of `grad`'s shape, in
    place; `step` is the parameter's update number, the same for every block."""
    optimizer.update(param[rows], grad, {k: a[rows] for k, a in state.items()}, step, scratch)
OPTIMIZERS: dict[str, type] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
