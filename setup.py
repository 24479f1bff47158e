"""Builds the Cython kernels in pacsnode/_native during a plain `pip install .`."""
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

# Every kernel pacsnode/_native/<name>.pyx becomes the extension pacsnode._native.<name>.
EXTENSIONS = cythonize(
    [Extension(f"pacsnode._native.{pyx.stem}", [str(pyx)]) for pyx in sorted(Path("pacsnode/_native").glob("*.pyx"))],
    language_level=3,
    compiler_directives={"boundscheck": False, "wraparound": False},
)
# libjpeg_call is C++: on a host without g++ it is skipped and the pixel kernels use
# pylibjpeg's public decoder instead (slower, same results). cythonize drops `optional`.
for extension in EXTENSIONS:
    extension.optional = extension.name == "pacsnode._native.libjpeg_call"

setup(ext_modules=EXTENSIONS)
