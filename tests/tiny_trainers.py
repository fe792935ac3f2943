"""Hand-written training modules for testing `TrainerBase` and `nnc train`
without the training-graph generator: `fc: dense(n_out)` on `[n_in]`,
optionally followed by `bn: batchnorm` (training mode; the dense layer then
has no bias, as PyTorch users write it: a bias before a batchnorm gets a
gradient of pure rounding noise, which Adam turns into steps of about lr),
with hand-written forward and backward, and their PyTorch twins.

`trainer_class(n_in, n_out, loss, bn)` returns a `TrainerBase` subclass;
`torch_twin(...)` the same network in `torch.nn` (keys `fc.*`, `bn.*`).
"""

from __future__ import annotations

import math

import numpy as np

from nnc.runtime.losses import LOSS_FUNCTIONS, scratch_shape
from nnc.runtime.trainer_base import TrainerBase
from nnc.runtime.weights import Spec

EPS = 1e-5
MOMENTUM = 0.1


def trainer_class(n_in: int = 4, n_out: int = 3, loss: str = "cross_entropy", bn: bool = False) -> type:
    bound = 1 / math.sqrt(n_in)
    params = {"fc.weight": Spec((n_out, n_in), ("uniform", bound))}
    if not bn:
        params["fc.bias"] = Spec((n_out,), ("uniform", bound))
    trainable = list(params)
    counters: tuple[str, ...] = ()
    if bn:
        params.update({"bn.weight": Spec((n_out,), ("const", 1.0)), "bn.bias": Spec((n_out,), ("const", 0.0)),
                       "bn.running_mean": Spec((n_out,), ("const", 0.0)),
                       "bn.running_var": Spec((n_out,), ("const", 1.0))})
        trainable += ["bn.weight", "bn.bias"]
        counters = ("bn.num_batches_tracked",)
    loss_fn = LOSS_FUNCTIONS[loss]

    class Tiny(TrainerBase):
        NAME = "tiny"
        INPUTS = {"x": (n_in,)}
        OUTPUTS = {"out": (n_out,)}
        PARAMS = params
        TRAINABLE = tuple(trainable)
        COUNTERS = counters
        LOSS = loss

        def _setup(self):
            self._grad = np.zeros((self.batch, n_out), dtype=np.float32)
            self._loss_scratch = np.zeros(scratch_shape(loss, (self.batch, n_out)), dtype=np.float32)
            self.seen: list[np.ndarray] = []        # the batches stepped on, for the CLI tests

        def _forward(self, x, train):
            s = self._state
            h = x @ s["fc.weight"].T
            if not bn:
                return h + s["fc.bias"], None
            if train:
                mean, var = h.mean(0), h.var(0)
                n = h.shape[0]
                s["bn.running_mean"][...] = (1 - MOMENTUM) * s["bn.running_mean"] + MOMENTUM * mean
                s["bn.running_var"][...] = (1 - MOMENTUM) * s["bn.running_var"] + MOMENTUM * var * n / (n - 1)
                s["bn.num_batches_tracked"] += 1
            else:
                mean, var = s["bn.running_mean"], s["bn.running_var"]
            xhat = (h - mean) / np.sqrt(var + EPS)
            return (s["bn.weight"] * xhat + s["bn.bias"]).astype(np.float32), (xhat, var)

        def _train_step(self, batch, dims, arrays, y):
            x = arrays[0]
            self.seen.append(x.copy())
            out, saved = self._forward(x, True)
            g = self._grad[:batch]
            value = loss_fn(out, y, g, self._loss_scratch)
            if bn:
                xhat, var = saved
                dxhat = g * self._state["bn.weight"]          # before bn.weight is updated
                self._apply_update("bn.weight", (g * xhat).sum(0).astype(np.float32))
                self._apply_update("bn.bias", g.sum(0))
                inv = 1 / np.sqrt(var + EPS)
                dh = inv / batch * (batch * dxhat - dxhat.sum(0) - xhat * (dxhat * xhat).sum(0))
                dh = dh.astype(np.float32)
            else:
                dh = g
            self._apply_update("fc.weight", dh.T @ x)
            if not bn:
                self._apply_update("fc.bias", dh.sum(0))
            return value

        def _predict(self, batch, dims, arrays):
            return self._forward(arrays[0], False)[0]

    return Tiny


def torch_twin(trainer, bn: bool = False):
    import torch

    n_out, n_in = trainer.PARAMS["fc.weight"].shape

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(n_in, n_out, bias=not bn)
            if bn:
                self.bn = torch.nn.BatchNorm1d(n_out, eps=EPS, momentum=MOMENTUM)

        def forward(self, x):
            h = self.fc(x)
            return self.bn(h) if bn else h

    twin = Twin()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in trainer.state_dict().items()}, strict=True)
    return twin


def torch_loss(loss: str):
    import torch.nn.functional as F
    return {"cross_entropy": F.cross_entropy, "mse": F.mse_loss,
            "bce_with_logits": F.binary_cross_entropy_with_logits}[loss]


def torch_optimizer(opt, params):
    import torch
    from nnc.runtime.optim import SGD, AdamW
    if isinstance(opt, SGD):
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, dampening=opt.dampening,
                               weight_decay=opt.weight_decay, nesterov=opt.nesterov, foreach=False)
    cls = torch.optim.AdamW if isinstance(opt, AdamW) else torch.optim.Adam
    return cls(params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay, foreach=False)
