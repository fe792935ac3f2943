"""nnc: a compiler for neural-network model descriptions.

The public Python API (INTERFACES.md section 3): `nnc.build`, `nnc.CompileError`.
The stages live in the subpackages `nnc.compiler` (parse, IR, shapes, passes,
planner, code generators) and `nnc.runtime` (kernels the generated code calls).
"""

from nnc.compiler.diagnostics import CompileError, Diagnostic, Severity, Span

__all__ = ["CompileError", "Diagnostic", "Severity", "Span"]
__version__ = "0.1.0"
