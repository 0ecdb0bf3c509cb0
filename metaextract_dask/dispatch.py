"""The array-library switch of the statistics, as dask switches array libraries: a :class:`dask.utils.Dispatch`
on the block's type, with the cupy implementation registered lazily (on the first cupy block), so the core
never imports cupy or the CUDA code.
"""

from __future__ import annotations

from dask.utils import Dispatch

__all__ = ["summarise"]

#: ``summarise(flat, fill, bins, rng) -> Partial`` of one 1-D block of a numeric dtype. numpy's
#: implementation lives in :mod:`metaextract_dask.stats`, cupy's in :mod:`metaextract_dask._cuda`.
summarise = Dispatch("summarise")


@summarise.register_lazy("cupy")
def _register_cupy() -> None:
    from metaextract_dask import _cuda  # registers its implementation on import

    assert _cuda.summarise_cupy is not None
