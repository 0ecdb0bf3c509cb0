"""The FITS backend (images, tile-compressed images, tables) against the conformance kit."""

from __future__ import annotations

import numpy as np
import pytest

from metaextract_dask.testing import FormatBackendTests, reference_files


class TestFITSBackend(FormatBackendTests):
    backend_name = "fits"

    @pytest.fixture(scope="class")
    @classmethod
    def samples(cls, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
        from astropy.io import fits

        path = tmp_path_factory.mktemp("fits") / "mixed.fits"
        primary = fits.PrimaryHDU(np.arange(24, dtype=np.uint8).reshape(4, 6))  # BITPIX 8
        scaled = fits.ImageHDU(np.arange(20, dtype=np.int16).reshape(4, 5), name="SCALED")
        scaled.header["BLANK"] = -1
        tiles = fits.CompImageHDU(np.arange(200, dtype=np.int32).reshape(10, 20), compression_type="RICE_1",
                                  tile_shape=(5, 20), name="TILES")
        table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.arange(3.0))])
        cube = fits.ImageHDU(np.ones((2, 3, 4), dtype=np.float64), name="CUBE")
        fits.HDUList([primary, scaled, tiles, table, cube]).writeto(path)
        return [*reference_files("fits"), str(path)]
