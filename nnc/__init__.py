"""nnc: a compiler for neural-network model descriptions.

The public Python API (INTERFACES.md section 3): `nnc.build`, `nnc.CompileError`.
The stages live in the subpackages `nnc.compiler` (parse, IR, shapes, passes,
planner, code generators) and `nnc.runtime` (kernels the generated code calls).
"""

from nnc.compiler.diagnostics import CompileError, Diagnostic, Severity, Span

__all__ = ["CompileError", "Diagnostic", "Severity", "Span"]
__version__ = "0.1.0"


def build(model, target="numpy", batch=1, weights=None, dims=None, stream=False, optimize=True):
    """Compile a model (a `.nn` path, or model text) and return a model object:
    `model(x)`, `model.input_shapes`, `model.output_shapes`, `model.load_weights`,
    `model.state_dict()`, and for streaming plans `step`, `stream`, `reset`.
    See INTERFACES.md section 3."""
    from nnc.compiler.build import build as _build
    return _build(model, target=target, batch=batch, weights=weights, dims=dims, stream=stream,
                  optimize=optimize)


__all__.append("build")
