"""nnc: a compiler for neural-network model descriptions.

The public Python API (INTERFACES.md section 3): `nnc.build`, `nnc.CompileError`.
The stages live in the subpackages `nnc.compiler` (parse, IR, shapes, passes,
planner, code generators) and `nnc.runtime` (kernels the generated code calls).
"""

__all__ = ["CompileError", "Diagnostic", "Severity", "Span"]
__version__ = "0.1.0"


def __getattr__(name):
    """`nnc.CompileError` and the other diagnostic types, and `nnc.compiler`,
    imported on first use: a generated NumPy module imports `nnc.runtime` and
    NumPy only (INTERFACES.md section 7), not the compiler."""
    if name in ("CompileError", "Diagnostic", "Severity", "Span"):
        from nnc.compiler import diagnostics
        return getattr(diagnostics, name)
    if name == "compiler":
        import importlib
        return importlib.import_module("nnc.compiler")
    raise AttributeError(f"module 'nnc' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), "CompileError", "Diagnostic", "Severity", "Span", "compiler"})


def build(model, target="numpy", batch=1, weights=None, dims=None, stream=False, optimize=True, limits=None):
    """Compile a model (a `.nn` path, or model text) and return a model object:
    `model(x)`, `model.input_shapes`, `model.output_shapes`, `model.load_weights`,
    `model.state_dict()`, and for streaming plans `step`, `stream`, `reset`.
    `limits`: the largest tensor, weights and arena planned (docs/diagnostics.md,
    "Limits"). See INTERFACES.md section 3."""
    from nnc.compiler.build import build as _build
    return _build(model, target=target, batch=batch, weights=weights, dims=dims, stream=stream,
                  optimize=optimize, limits=limits)


__all__.append("build")


def train(model, loss="cross_entropy", optimizer=None, batch=32, weights=None, dims=None, target="numpy", seed=0,
          keep_gradients=False, capacity=None):
    """A trainer for a model (a `.nn` path, or model text): `step(x, y)`,
    `predict(x)`, `state_dict()`, `load_weights`, `optimizer_state_dict()`,
    `load_optimizer_state`, `gradients()`. See TRAINING.md section 1."""
    from nnc.compiler.train import train as _train
    return _train(model, loss=loss, optimizer=optimizer, batch=batch, weights=weights, dims=dims, target=target,
                  seed=seed, keep_gradients=keep_gradients, capacity=capacity)


from nnc.runtime.optim import SGD, Adam, AdamW  # noqa: E402  (after build and train, as the API lists them)

__all__ += ["train", "SGD", "Adam", "AdamW"]


def grow(old_model, new_model, weights, optimizer_state=None, init="zero", seed=0):
    """Move trained weights (and optimizer state) from `old_model` to
    `new_model`, a wider edit of it: returns `(weights2, opt2)` (`opt2` is
    None without `optimizer_state`). See TRAINING.md section 2 and
    docs/growth.md."""
    from nnc.compiler.grow import grow as _grow
    return _grow(old_model, new_model, weights, optimizer_state, init=init, seed=seed)


__all__.append("grow")


def from_onnx(path):
    """An ONNX file as `.nn` text and weights in PyTorch's layout:
    `(source_text, weights)`. Needs the `onnx` extra. INTERFACES.md section 10."""
    from nnc.compiler.onnx_import import from_onnx as _from_onnx
    return _from_onnx(path)


def to_onnx(model, weights=None, path="model.onnx", opset=17):
    """Write a model (a `.nn` path or text, or a model `nnc.build` returned)
    and its weights (a path, a dict, or None: the default initialisation, or a
    built model's own) as an ONNX file; returns its path.
    Needs the `onnx` extra. INTERFACES.md section 10."""
    from nnc.compiler.onnx_export import to_onnx as _to_onnx
    return _to_onnx(model, weights, path, opset=opset)


__all__ += ["from_onnx", "to_onnx"]
