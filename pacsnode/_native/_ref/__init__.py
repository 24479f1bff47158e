"""Plain-Python twins of the Cython kernels in pacsnode._native (same names, results, errors)."""
