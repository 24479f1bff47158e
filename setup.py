"""Builds the Cython kernels in pacsnode/_native during a plain `pip install .`."""
from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = [
    Extension("pacsnode._native.header", ["pacsnode/_native/header.pyx"]),
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
    )
)
