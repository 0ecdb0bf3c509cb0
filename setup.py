"""Builds the optional AVX2 statistics kernel (metaextract_dask/_kernels.c); everything else is in pyproject.toml.

The extension is optional: without a C compiler the install goes on and stats.py uses its numba kernels.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "metaextract_dask._kernels",
            ["metaextract_dask/_kernels.c"],
            extra_compile_args=["-O3", "-ffp-contract=off"],  # bin arithmetic rounds exactly as numpy's does
            optional=True,
        )
    ]
)
