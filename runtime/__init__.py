"""Kernels that the generated NumPy modules call (kernels.py) and the C kernels header (c/)."""
