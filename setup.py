"""Builds the Cython kernels in pacsnode/_native during a plain `pip install .`."""
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

# Every kernel pacsnode/_native/<name>.pyx becomes the extension pacsnode._native.<name>.
EXTENSIONS = [
    Extension(f"pacsnode._native.{pyx.stem}", [str(pyx)])
    for pyx in sorted(Path("pacsnode/_native").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
    )
)
