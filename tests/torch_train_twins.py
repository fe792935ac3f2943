"""Models for the training tests, each as `.nn` text and as a PyTorch twin.

In:  nothing (the sample twins come from `torch_twins.py`).
Out: `CONV_BN`, `SEQ`, `FANOUT` (model texts) and their twins `ConvBN`,
     `Seq`, `FanOut`, whose `state_dict()` keys and shapes equal the text's
     parameter names; `run_torch(...)`, PyTorch's side of a whole run.
"""

from __future__ import annotations

import numpy as np

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
    _Module = nn.Module
except ImportError:  # the tests skip without torch
    torch = nn = F = None
    _Module = object


CONV_BN = """
model convbn(x: [3, 12, 12]) {
    c1: conv2d(8, 3, padding=1, bias=false) -> bn1: batchnorm -> relu
    maxpool2d(2)                                     # [8, 6, 6]
    c2: conv2d(12, 3, stride=2, padding=1, bias=false) -> bn2: batchnorm -> relu6
    global_avgpool                                   # [12]
    fc: dense(5)
}
"""


class ConvBN(_Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.c1(x))), 2)
        x = F.relu6(self.bn2(self.c2(x)))
        return self.fc(x.mean((2, 3)))


SEQ = """
model seq(x: [T, 4]) {
    transpose((1, 0))                                # [4, T]
    conv: conv1d(8, 3, padding=causal) -> tanh
    transpose((1, 0))                                # [T, 8]
    rnn: lstm(16)
    head: dense(5)                                   # [T, 5]: logits per time step
}
"""


class Seq(_Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 3)
        self.rnn = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        h = torch.tanh(self.conv(F.pad(x.transpose(1, 2), (2, 0))))
        h, _ = self.rnn(h.transpose(1, 2))
        return self.head(h)


FANOUT = """
model fanout(x: [6]) {
    a = x -> l1: dense(8) -> tanh
    b = a -> l2: dense(8) -> sigmoid
    c = a -> l3: dense(8)
    m = mul(b, c)
    d = sub(m, a)
    e = add(d, a, b)
    cat = concat(e, a, axis=0)                       # [16]
    h = cat -> reshape((4, 4)) -> transpose((1, 0)) -> flatten -> l4: dense(3)
    return h
}
"""


class FanOut(_Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(6, 8)
        self.l2 = nn.Linear(8, 8)
        self.l3 = nn.Linear(8, 8)
        self.l4 = nn.Linear(16, 3)

    def forward(self, x):
        a = torch.tanh(self.l1(x))
        b = torch.sigmoid(self.l2(a))
        c = self.l3(a)
        d = b * c - a
        e = d + a + b
        cat = torch.cat([e, a], dim=1)
        h = cat.reshape(-1, 4, 4).transpose(1, 2).flatten(1)
        return self.l4(h)


def load_state(module, state: dict[str, np.ndarray]) -> None:
    """`state` (nnc's state_dict) into `module`, strict."""
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)


def torch_optimizer(opt, params):
    from nnc.runtime.optim import SGD, AdamW
    if isinstance(opt, SGD):
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, dampening=opt.dampening,
                               weight_decay=opt.weight_decay, nesterov=opt.nesterov, foreach=False)
    cls = torch.optim.AdamW if isinstance(opt, AdamW) else torch.optim.Adam
    return cls(params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay, foreach=False)


def torch_loss(loss: str, out, y):
    if loss == "cross_entropy":
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    if loss == "mse":
        return F.mse_loss(out, y)
    return F.binary_cross_entropy_with_logits(out, y)


def run_torch(module, opt, loss: str, batches) -> list[float]:
    """Train `module` (already holding the initial state) on `batches` of
    (x, y) arrays; returns the losses before each update."""
    module.train()
    optimizer = torch_optimizer(opt, module.parameters())
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        target = torch.from_numpy(y.astype(np.int64) if y.dtype.kind in "iu" else y)
        value = torch_loss(loss, module(torch.from_numpy(x)), target)
        value.backward()
        optimizer.step()
        losses.append(value.item())
    return losses
