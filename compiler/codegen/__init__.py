"""Code generators: the NumPy module and the C99 file."""
