"""Deterministic synthetic sample trees of scientific files.

The generators in this module write small (or, for benchmarks, large / many)
HDF5, NetCDF3/4, Zarr v2/v3, FITS and DICOM files together with a *manifest*:
a JSON-friendly description of what was written.  The manifest is built only
from the values handed to the writing libraries (literals and random draws),
never by reading the files back, so it is an independent truth against which
the metadata catalog can be checked.

Everything is derived from ``numpy.random.default_rng`` seeded from ``seed``;
timestamps and UIDs are fixed, so two runs with the same seed produce the same
manifest and the same bytes (the libraries used here are deterministic for the
options chosen; e.g. no FITS dithering, no HDF5 time tracking).

Manifest layout
---------------
``{"seed": int, "preset": str, "files": [entry, ...]}`` with one entry per file
or Zarr store, sorted by ``path``.  Every entry has ``path`` (relative, POSIX),
``format`` (``hdf5 | netcdf4 | netcdf3 | zarr | fits | dicom | binary``),
``status`` (``ok | error``), ``attrs`` and ``arrays``; format specific keys are
``groups`` (HDF5, netCDF, Zarr), ``zarr_format``, ``hdus`` (FITS), ``dicom``
(DICOM) and ``error`` (for files that must fail to open).

Conventions worth knowing when comparing a catalog with the manifest:

* ``dtype`` is ``numpy.dtype.str`` of the on-disk element type.  NetCDF3 and
  FITS are big-endian by definition (``">f4"``) even though netCDF4-python
  reports native order for NetCDF3 variables; tile-compressed FITS images have
  no on-disk byte order and are given as decoded by astropy (native).
* ``fill_value`` is ``None`` unless the generator set one explicitly.
* ``attrs`` of an array are the attributes the generator set (``units`` is
  also repeated under ``units``); attributes added by the libraries themselves
  (``_FillValue``, HDF5 dimension-scale bookkeeping such as ``CLASS`` or
  ``DIMENSION_LIST``, ``_Netcdf4Dimid``...) are not listed.  For Zarr v2 the
  xarray ``_ARRAY_DIMENSIONS`` attribute *is* listed, as it is user-written.
* ``compression`` for netCDF4 variables is ``"zlib"`` (the netCDF name of the
  HDF5 deflate filter, which h5py calls ``"gzip"``).
* ``stats`` (``min``, ``max``, ``mean``, ``count``) describe the raw stored
  values (no unpacking), ignoring elements equal to ``fill_value``; ``None``
  for non-numeric arrays.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaextract_dask.discover import IGNORE_FILE

__all__ = ["PRESETS", "generate", "generate_many", "generate_many_cached"]

#: Names accepted by :func:`generate`.
PRESETS: tuple[str, ...] = ("small", "medium")

# Fixed, clearly fictitious timestamps: no wall-clock time may leak into files.
_HISTORY_TIME = "2024-01-15T00:00:00Z"
_DICOM_SC_DATE = "20240115"

# Magic numbers that random bytes must not imitate (offset, bytes).
_MAGICS: tuple[tuple[int, bytes], ...] = (
    (0, b"\x89HDF"),
    (512, b"\x89HDF"),
    (1024, b"\x89HDF"),
    (2048, b"\x89HDF"),
    (0, b"CDF"),
    (0, b"SIMPLE"),
    (128, b"DICM"),
    (0, b"PK\x03\x04"),
    (0, b"{"),
)


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _rng(seed: int, key: str) -> np.random.Generator:
    """Return an independent generator for one component of the tree.

    Keying the stream by name keeps each file's content independent of which
    other files are written (``medium`` contains exactly the ``small`` files).
    """
    return np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])


def _jsonable(value: Any) -> Any:
    """Convert numpy / bytes values to plain JSON types.

    Deliberately not :func:`metaextract_dask.jsonutil.to_jsonable`: the manifest is the independent truth the
    catalog is tested against, so it shares no conversion code with the extraction path.
    """
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _stats(data: np.ndarray | None, fill_value: Any = None) -> dict[str, Any] | None:
    """Summary statistics of raw stored values, excluding fill elements."""
    if data is None or data.dtype.kind not in "biuf":
        return None
    values = np.asarray(data)
    if fill_value is not None:
        values = values[values != fill_value]
    if values.size == 0:
        return {"min": None, "max": None, "mean": None, "count": 0}
    return {
        "min": _jsonable(values.min()),
        "max": _jsonable(values.max()),
        "mean": float(values.mean(dtype=np.float64)),
        "count": int(values.size),
    }


def _array(
    name: str,
    shape: Sequence[int],
    dtype: Any,
    *,
    dims: Sequence[str] | None = None,
    chunks: Sequence[int] | None = None,
    compression: str | None = None,
    compression_level: int | None = None,
    shuffle: bool = False,
    fill_value: Any = None,
    attrs: dict[str, Any] | None = None,
    data: np.ndarray | None = None,
    stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one manifest array entry.

    ``dtype`` is a numpy dtype (compound dtypes become ``"compound"`` plus
    ``fields``) or the literal ``"vlen-str"``.
    """
    attrs = dict(attrs or {})
    fields = None
    if isinstance(dtype, str) and dtype == "vlen-str":
        dtype_str = "vlen-str"
    else:
        dt = np.dtype(dtype)
        if dt.names:
            dtype_str = "compound"
            fields = [[n, s] for n, s in dt.descr]
        else:
            dtype_str = dt.str
    if stats is None:
        stats = _stats(data, fill_value)
    return {
        "name": name,
        "shape": [int(s) for s in shape],
        "dtype": dtype_str,
        "fields": fields,
        "dims": list(dims) if dims is not None else None,
        "chunks": [int(c) for c in chunks] if chunks is not None else None,
        "compression": compression,
        "compression_level": compression_level,
        "shuffle": bool(shuffle),
        "fill_value": _jsonable(fill_value),
        "units": attrs.get("units"),
        "attrs": _jsonable(attrs),
        "stats": stats,
    }


def _entry(path: str, fmt: str, status: str = "ok", **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": path,
        "format": fmt,
        "status": status,
        "attrs": {},
        "arrays": [],
    }
    entry.update(extra)
    return _jsonable(entry)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], n_waves: int = 3) -> np.ndarray:
    """Sum of a few random plane waves over the last two axes (float64)."""
    ny, nx = shape[-2], shape[-1]
    y = np.linspace(0.0, 1.0, ny)[:, None]
    x = np.linspace(0.0, 1.0, nx)[None, :]
    field = np.zeros((ny, nx))
    for _ in range(n_waves):
        ky, kx = rng.uniform(0.5, 3.0, 2)
        phase = rng.uniform(0, 2 * np.pi)
        field += np.sin(2 * np.pi * (ky * y + kx * x) + phase)
    return np.broadcast_to(field, shape).copy()


def _uid(seed: int, *parts: object) -> str:
    """Deterministic DICOM UID (``2.25.<int>``) derived from the seed.

    ``pydicom.uid.generate_uid(prefix=None, ...)`` ignores ``entropy_srcs``
    (it returns a random UUID4), so a name-based UUID5 is used instead.
    """
    name = "/".join(["metaextract_dask.sample", str(int(seed)), *map(str, parts)])
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, name).int}"


# --------------------------------------------------------------------------- #
# HDF5
# --------------------------------------------------------------------------- #
def _write_hdf5(root: Path, rel: str, seed: int) -> dict[str, Any]:
    import h5py

    rng = _rng(seed, rel)
    arrays: list[dict[str, Any]] = []
    root_attrs: dict[str, Any] = {
        "title": "Synthetic diffraction scan (fictitious test data)",
        "facility": "Example Light Source",
        "scan_number": int(rng.integers(1000, 10000)),
        "sample_temperature_K": round(float(rng.uniform(290.0, 300.0)), 3),
        "wavelengths_nm": np.round(rng.uniform(400.0, 700.0, 4), 2),
        # Fixed-length ASCII (|S10); plain ``bytes`` become vlen ASCII strings.
        "signature": np.bytes_(b"SYNTH-HDF5"),
    }
    groups: dict[str, dict[str, Any]] = {
        "/instrument": {"attrs": {"name": "SYNTH-DIFF", "serial": int(rng.integers(1, 10**6))}},
        "/instrument/detector": {
            "attrs": {
                "model": "PixelCam 64",
                "pixel_size_um": 75.0,
                "gain_modes": np.array([1.0, 4.0, 16.0]),
                "firmware": b"v1.2.3",
            }
        },
        "/events": {"attrs": {}},
        "/log": {"attrs": {"level": "INFO"}},
        "/calibration": {"attrs": {"date": "2024-01-10"}},
        "/timeseries": {"attrs": {"sampling_rate_hz": 10.0}},
    }

    # Chunked + gzip + shuffle cube; the last frame is left unwritten so that
    # readers see the fill value there (and one chunk row is unallocated).
    n_frames, ny, nx = 10, 64, 64
    counts = np.full((n_frames, ny, nx), -1.0, dtype=np.float32)
    yy, xx = np.mgrid[0:ny, 0:nx]
    for k in range(n_frames - 1):
        cy, cx = rng.uniform(16, 48, 2)
        peak = 1000.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 6.0**2))
        counts[k] = (rng.poisson(peak + 20.0)).astype(np.float32)
    counts_attrs = {"units": "counts", "long_name": "detector counts", "exposure_s": 0.5}

    dark = (100.0 + rng.normal(0.0, 2.0, (ny, nx))).astype(np.float64)
    dark_attrs = {"units": "counts", "long_name": "dark current frame"}

    event_dtype = np.dtype([("time", "<f8"), ("id", "<i4"), ("flag", "u1")])
    events = np.zeros(200, dtype=event_dtype)
    events["time"] = np.sort(rng.uniform(0.0, 60.0, events.size))
    events["id"] = np.arange(events.size, dtype=np.int32) + 1
    events["flag"] = rng.integers(0, 4, events.size, dtype=np.uint8)
    events_attrs = {"description": "trigger events"}

    messages = [
        "scan started",
        "shutter open",
        "temperature stable ✓",  # non-ASCII on purpose (UTF-8 vlen strings)
        f"frames acquired: {n_frames - 1}",
        "scan finished",
    ]
    gain = round(float(rng.uniform(0.9, 1.1)), 6)

    n_t, n_ch = 50, 16
    time = np.arange(n_t, dtype=np.float64) * 0.1
    channel = np.arange(n_ch, dtype=np.int32)
    signal = (np.sin(time * 2.0) + rng.normal(0, 0.05, n_t)).astype(np.float32)
    spectrum = (_smooth_field(rng, (n_t, n_ch)) + rng.normal(0, 0.1, (n_t, n_ch))).astype(np.float32)

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs.update(root_attrs)
        for gname, ginfo in groups.items():
            g = f.require_group(gname)
            g.attrs.update(ginfo["attrs"])

        ds = f.create_dataset(
            "/instrument/detector/counts",
            shape=counts.shape,
            dtype=np.float32,
            chunks=(2, 32, 32),
            compression="gzip",
            compression_opts=4,
            shuffle=True,
            fillvalue=np.float32(-1.0),
        )
        ds[: n_frames - 1] = counts[: n_frames - 1]
        ds.attrs.update(counts_attrs)
        arrays.append(
            _array(
                "/instrument/detector/counts", counts.shape, counts.dtype, chunks=(2, 32, 32),
                compression="gzip", compression_level=4, shuffle=True, fill_value=-1.0,
                attrs=counts_attrs, data=counts,
            )
        )

        ds = f.create_dataset("/instrument/detector/dark_current", data=dark)  # contiguous
        ds.attrs.update(dark_attrs)
        arrays.append(_array("/instrument/detector/dark_current", dark.shape, dark.dtype, attrs=dark_attrs, data=dark))

        ds = f.create_dataset("/events/triggers", data=events)
        ds.attrs.update(events_attrs)
        arrays.append(_array("/events/triggers", events.shape, event_dtype, attrs=events_attrs))

        ds = f.create_dataset("/log/messages", data=messages, dtype=h5py.string_dtype())
        arrays.append(_array("/log/messages", (len(messages),), "vlen-str"))

        ds = f.create_dataset("/calibration/gain", data=np.float64(gain))  # scalar
        ds.attrs["units"] = "e-/ADU"
        arrays.append(_array("/calibration/gain", (), np.float64, attrs={"units": "e-/ADU"}, data=np.array(gain)))

        t_ds = f.create_dataset("/timeseries/time", data=time)
        t_ds.attrs["units"] = "s"
        t_ds.make_scale("time")
        c_ds = f.create_dataset("/timeseries/channel", data=channel)
        c_ds.make_scale("channel")
        s_ds = f.create_dataset("/timeseries/signal", data=signal)
        s_ds.attrs["units"] = "V"
        s_ds.dims[0].attach_scale(t_ds)
        sp_ds = f.create_dataset(
            "/timeseries/spectrum", data=spectrum, chunks=(10, n_ch), compression="gzip", compression_opts=4
        )
        sp_ds.attrs["units"] = "arb"
        sp_ds.dims[0].attach_scale(t_ds)
        sp_ds.dims[1].attach_scale(c_ds)
        # A dimension scale is reported as its own dimension.
        arrays += [
            _array("/timeseries/time", time.shape, time.dtype, dims=["time"], attrs={"units": "s"}, data=time),
            _array("/timeseries/channel", channel.shape, channel.dtype, dims=["channel"], data=channel),
            _array("/timeseries/signal", signal.shape, signal.dtype, dims=["time"], attrs={"units": "V"}, data=signal),
            _array(
                "/timeseries/spectrum", spectrum.shape, spectrum.dtype, dims=["time", "channel"],
                chunks=(10, n_ch), compression="gzip", compression_level=4, attrs={"units": "arb"}, data=spectrum,
            ),
        ]

    groups = {"/": {"attrs": root_attrs}, **groups}
    return _entry(rel, "hdf5", attrs=root_attrs, arrays=arrays, groups=groups)


def _write_hdf5_big(root: Path, rel: str, seed: int, scale: float) -> dict[str, Any]:
    """~400 MB float32 cube written chunk-slab by chunk-slab (8 MB chunks)."""
    import h5py

    rng = _rng(seed, rel)
    nt = max(1, int(round(100 * scale)))
    shape = (nt, 1000, 1000)
    chunks = (min(2, nt), 1000, 1000)
    attrs = {"units": "K", "long_name": "synthetic smooth temperature cube"}
    base = _smooth_field(rng, shape[1:]).astype(np.float32)
    vmin, vmax, total = np.inf, -np.inf, 0.0

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "Large synthetic cube (benchmark data)"
        ds = f.create_dataset("/cube", shape=shape, dtype=np.float32, chunks=chunks, fillvalue=np.float32(0.0))
        ds.attrs.update(attrs)
        for start in range(0, nt, chunks[0]):
            stop = min(start + chunks[0], nt)
            t = np.arange(start, stop, dtype=np.float32)[:, None, None]
            block = 280.0 + 5.0 * base[None] * np.cos(0.05 * t) + rng.standard_normal(
                (stop - start, *shape[1:]), dtype=np.float32
            ) * np.float32(0.1)
            block = block.astype(np.float32, copy=False)
            ds[start:stop] = block
            vmin, vmax = min(vmin, float(block.min())), max(vmax, float(block.max()))
            total += float(block.sum(dtype=np.float64))
    count = int(np.prod(shape))
    stats = {"min": vmin, "max": vmax, "mean": total / count, "count": count}
    arrays = [
        _array("/cube", shape, np.float32, chunks=chunks, fill_value=0.0, attrs=attrs, stats=stats)
    ]
    return _entry(rel, "hdf5", attrs={"title": "Large synthetic cube (benchmark data)"}, arrays=arrays,
                  groups={"/": {"attrs": {"title": "Large synthetic cube (benchmark data)"}}})


# --------------------------------------------------------------------------- #
# netCDF
# --------------------------------------------------------------------------- #
def _write_netcdf4(root: Path, rel: str, seed: int) -> dict[str, Any]:
    import netCDF4

    rng = _rng(seed, rel)
    nt, nlat, nlon, nstep = 12, 18, 36, 8
    time = np.arange(nt, dtype=np.float64) * 30.0 + 15.0
    lat = np.linspace(-85.0, 85.0, nlat).astype(np.float32)
    lon = np.arange(nlon, dtype=np.float32) * 10.0

    tas_fill = np.float32(1.0e20)
    tas = (
        273.15
        + 30.0 * np.cos(np.deg2rad(lat))[None, :, None]
        + 3.0 * _smooth_field(rng, (nt, nlat, nlon))
        + rng.normal(0.0, 0.5, (nt, nlat, nlon))
    ).astype(np.float32)
    # A few missing cells so that readers must honour _FillValue.
    missing = rng.choice(tas.size, size=7, replace=False)
    tas.reshape(-1)[missing] = tas_fill

    psl_scale, psl_offset, psl_fill = 0.01, 1000.0, np.int16(-32767)
    psl_phys = 1013.0 + 15.0 * _smooth_field(rng, (nt, nlat, nlon)) + rng.normal(0.0, 1.0, (nt, nlat, nlon))
    psl_raw = np.round((psl_phys - psl_offset) / psl_scale).astype(np.int16)

    step = (np.arange(nstep, dtype=np.int32) + 1) * 6
    t2m = (280.0 + 5.0 * _smooth_field(rng, (nstep, nlat, nlon))).astype(np.float32)

    global_attrs: dict[str, Any] = {
        "Conventions": "CF-1.8",
        "title": "Synthetic monthly near-surface climate (fictitious test data)",
        "institution": "Example Climate Institute (fictitious)",
        "source": "metaextract_dask.sample",
        "history": f"{_HISTORY_TIME} created by metaextract_dask.sample.generate(seed={seed})",
        "realization": int(rng.integers(1, 100)),
        "frequency": "mon",
    }
    time_attrs = {"units": "days since 2000-01-01", "calendar": "standard", "standard_name": "time", "axis": "T"}
    lat_attrs = {"units": "degrees_north", "standard_name": "latitude", "axis": "Y"}
    lon_attrs = {"units": "degrees_east", "standard_name": "longitude", "axis": "X"}
    tas_attrs = {
        "units": "K",
        "standard_name": "air_temperature",
        "long_name": "Near-surface air temperature",
        "cell_methods": "time: mean",
        "valid_range": np.array([150.0, 350.0], dtype=np.float32),
    }
    psl_attrs = {
        "units": "hPa",
        "standard_name": "air_pressure_at_mean_sea_level",
        "scale_factor": psl_scale,
        "add_offset": psl_offset,
    }
    fc_attrs = {"model": "SYNTH-GCM v0", "run_date": "2024-01-15", "ensemble_member": int(rng.integers(0, 50))}
    step_attrs = {"units": "hours", "long_name": "forecast lead time"}
    t2m_attrs = {"units": "K", "standard_name": "air_temperature", "long_name": "2 m temperature forecast"}

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.setncatts(global_attrs)
        nc.createDimension("time", None)
        nc.createDimension("lat", nlat)
        nc.createDimension("lon", nlon)
        # Unlimited-dimension variables are always chunked: pass chunksizes
        # explicitly so the manifest does not depend on netCDF-C defaults.
        v = nc.createVariable("time", "f8", ("time",), chunksizes=(6,))
        v.setncatts(time_attrs)
        v[:] = time
        v = nc.createVariable("lat", "f4", ("lat",), contiguous=True)
        v.setncatts(lat_attrs)
        v[:] = lat
        v = nc.createVariable("lon", "f4", ("lon",), contiguous=True)
        v.setncatts(lon_attrs)
        v[:] = lon
        v = nc.createVariable(
            "tas", "f4", ("time", "lat", "lon"), compression="zlib", complevel=4, shuffle=True,
            chunksizes=(6, 9, 18), fill_value=tas_fill,
        )
        v.setncatts(tas_attrs)
        v.set_auto_maskandscale(False)
        v[:] = tas
        v = nc.createVariable("psl", "i2", ("time", "lat", "lon"), chunksizes=(nt, nlat, nlon), fill_value=psl_fill)
        v.setncatts(psl_attrs)
        v.set_auto_maskandscale(False)  # write the packed integers verbatim
        v[:] = psl_raw

        g = nc.createGroup("forecast")
        g.setncatts(fc_attrs)
        g.createDimension("step", nstep)
        v = g.createVariable("step", "i4", ("step",), contiguous=True)
        v.setncatts(step_attrs)
        v[:] = step
        # Uses the parent group's lat/lon dimensions (netCDF4 scoping).
        v = g.createVariable(
            "t2m", "f4", ("step", "lat", "lon"), compression="zlib", complevel=2, shuffle=False,
            chunksizes=(4, nlat, nlon),
        )
        v.setncatts(t2m_attrs)
        v[:] = t2m

    arrays = [
        _array("/time", time.shape, time.dtype, dims=["time"], chunks=(6,), attrs=time_attrs, data=time),
        _array("/lat", lat.shape, lat.dtype, dims=["lat"], attrs=lat_attrs, data=lat),
        _array("/lon", lon.shape, lon.dtype, dims=["lon"], attrs=lon_attrs, data=lon),
        _array(
            "/tas", tas.shape, tas.dtype, dims=["time", "lat", "lon"], chunks=(6, 9, 18), compression="zlib",
            compression_level=4, shuffle=True, fill_value=tas_fill, attrs=tas_attrs, data=tas,
        ),
        _array(
            "/psl", psl_raw.shape, psl_raw.dtype, dims=["time", "lat", "lon"], chunks=(nt, nlat, nlon),
            fill_value=psl_fill, attrs=psl_attrs, data=psl_raw,
        ),
        _array("/forecast/step", step.shape, step.dtype, dims=["step"], attrs=step_attrs, data=step),
        _array(
            "/forecast/t2m", t2m.shape, t2m.dtype, dims=["step", "lat", "lon"], chunks=(4, nlat, nlon),
            compression="zlib", compression_level=2, attrs=t2m_attrs, data=t2m,
        ),
    ]
    groups = {
        "/": {"attrs": global_attrs, "dimensions": {"time": nt, "lat": nlat, "lon": nlon}, "unlimited": ["time"]},
        "/forecast": {"attrs": fc_attrs, "dimensions": {"step": nstep}, "unlimited": []},
    }
    return _entry(rel, "netcdf4", attrs=global_attrs, arrays=arrays, groups=groups)


def _write_netcdf3(root: Path, rel: str, seed: int) -> dict[str, Any]:
    import netCDF4

    rng = _rng(seed, rel)
    nt, ns = 24, 5
    time = np.arange(nt, dtype=np.float64)
    station = np.arange(ns, dtype=np.int32) + 101
    lat = np.round(rng.uniform(40.0, 50.0, ns), 3).astype(np.float32)
    lon = np.round(rng.uniform(5.0, 15.0, ns), 3).astype(np.float32)
    temp_fill = np.float32(-999.0)
    temp = (10.0 + 5.0 * np.sin(2 * np.pi * time / 24.0)[:, None] + rng.normal(0, 1, (nt, ns))).astype(np.float32)
    temp[3, 2] = temp_fill
    rh = rng.integers(20, 100, (nt, ns)).astype(np.int16)

    global_attrs: dict[str, Any] = {
        "Conventions": "CF-1.6",
        "title": "Synthetic hourly station observations (fictitious test data)",
        "featureType": "timeSeries",
        "station_network": "EXAMPLE-NET",
        "version": np.int32(3),
        "history": f"{_HISTORY_TIME} created by metaextract_dask.sample.generate(seed={seed})",
    }
    time_attrs = {"units": "hours since 2020-01-01 00:00:00", "calendar": "standard", "standard_name": "time"}
    station_attrs = {"long_name": "station identifier", "cf_role": "timeseries_id"}
    lat_attrs = {"units": "degrees_north", "standard_name": "latitude"}
    lon_attrs = {"units": "degrees_east", "standard_name": "longitude"}
    temp_attrs = {"units": "degC", "standard_name": "air_temperature", "coordinates": "lat lon"}
    rh_attrs = {"units": "percent", "standard_name": "relative_humidity", "valid_min": np.int16(0),
                "valid_max": np.int16(100)}

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as nc:
        nc.setncatts(global_attrs)
        nc.createDimension("time", None)
        nc.createDimension("station", ns)
        specs = [
            ("time", time, ("time",), time_attrs, None),
            ("station", station, ("station",), station_attrs, None),
            ("lat", lat, ("station",), lat_attrs, None),
            ("lon", lon, ("station",), lon_attrs, None),
            ("temperature", temp, ("time", "station"), temp_attrs, temp_fill),
            ("relative_humidity", rh, ("time", "station"), rh_attrs, None),
        ]
        for name, data, dims, attrs, fill in specs:
            v = nc.createVariable(name, data.dtype, dims, fill_value=fill)
            v.setncatts(attrs)
            v.set_auto_maskandscale(False)
            v[:] = data

    # NetCDF3 is big-endian on disk by definition.
    arrays = [
        _array(f"/{name}", data.shape, data.dtype.newbyteorder(">") if data.dtype.itemsize > 1 else data.dtype,
               dims=list(dims), fill_value=fill, attrs=attrs, data=data)
        for name, data, dims, attrs, fill in specs
    ]
    groups = {"/": {"attrs": global_attrs, "dimensions": {"time": nt, "station": ns}, "unlimited": ["time"]}}
    return _entry(rel, "netcdf3", attrs=global_attrs, arrays=arrays, groups=groups)


# --------------------------------------------------------------------------- #
# Zarr
# --------------------------------------------------------------------------- #
def _write_zarr_v2(root: Path, rel: str, seed: int) -> dict[str, Any]:
    import numcodecs
    import zarr

    rng = _rng(seed, rel)
    nt, nlat, nlon = 6, 40, 60
    lat = np.linspace(-60.0, 60.0, nlat)
    lon = np.linspace(-180.0, 180.0, nlon, endpoint=False)
    temp = (15.0 + 8.0 * _smooth_field(rng, (nt, nlat, nlon)) + rng.normal(0, 0.2, (nt, nlat, nlon))).astype(
        np.float32
    )
    temp[:, :3, :5] = -999.0  # land mask -> fill value
    sal = 35.0 + _smooth_field(rng, (nlat, nlon)) + rng.normal(0, 0.05, (nlat, nlon))

    group_attrs = {
        "title": "Synthetic ocean state, Zarr v2 (fictitious test data)",
        "institution": "Example Ocean Lab (fictitious)",
        "Conventions": "CF-1.8",
        "history": f"{_HISTORY_TIME} created by metaextract_dask.sample",
        "cycle": int(rng.integers(1, 1000)),
    }
    specs = [
        # name, data, chunks, compressor, (manifest name, level, shuffle), fill, attrs
        ("lat", lat, (nlat,), None, (None, None, False), None,
         {"units": "degrees_north", "_ARRAY_DIMENSIONS": ["lat"]}),
        ("lon", lon, (nlon,), None, (None, None, False), None,
         {"units": "degrees_east", "_ARRAY_DIMENSIONS": ["lon"]}),
        ("temperature", temp, (3, 20, 30),
         numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE), ("blosc", 5, True), -999.0,
         {"units": "degC", "long_name": "sea water temperature", "_ARRAY_DIMENSIONS": ["time", "lat", "lon"]}),
        ("salinity", sal, (20, 20), numcodecs.Zlib(level=3), ("zlib", 3, False), 0.0,
         {"units": "psu", "long_name": "sea water salinity", "_ARRAY_DIMENSIONS": ["lat", "lon"]}),
    ]

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    g = zarr.open_group(str(path), mode="w", zarr_format=2, attributes=group_attrs)
    arrays = []
    for name, data, chunks, comp, (cname, level, shuffle), fill, attrs in specs:
        a = g.create_array(
            name, shape=data.shape, chunks=chunks, dtype=data.dtype, compressors=comp,
            fill_value=fill, attributes=attrs,
        )
        a[...] = data
        arrays.append(
            _array(f"/{name}", data.shape, data.dtype, dims=attrs["_ARRAY_DIMENSIONS"], chunks=chunks,
                   compression=cname, compression_level=level, shuffle=shuffle,
                   fill_value=fill, attrs=attrs, data=data)
        )
    return _entry(rel, "zarr", attrs=group_attrs, arrays=arrays, zarr_format=2,
                  groups={"/": {"attrs": group_attrs}})


def _write_zarr_v3(root: Path, rel: str, seed: int) -> dict[str, Any]:
    import zarr
    from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

    rng = _rng(seed, rel)
    nt, nlat, nlon = 6, 40, 60
    temp = (15.0 + 8.0 * _smooth_field(rng, (nt, nlat, nlon)) + rng.normal(0, 0.2, (nt, nlat, nlon))).astype(
        np.float32
    )
    velocity = (0.5 * _smooth_field(rng, (nlat, nlon))).astype(np.float64)
    anomaly = np.round(100.0 * _smooth_field(rng, (nlat, nlon)) + rng.normal(0, 5, (nlat, nlon))).astype(np.int16)

    group_attrs = {
        "title": "Synthetic ocean state, Zarr v3 (fictitious test data)",
        "institution": "Example Ocean Lab (fictitious)",
        "history": f"{_HISTORY_TIME} created by metaextract_dask.sample",
        "cycle": int(rng.integers(1, 1000)),
        "bbox": [-180.0, -60.0, 180.0, 60.0],
    }
    sub_attrs = {"description": "derived products", "reference_period": "1991-2020"}
    specs = [
        ("/temperature", temp, (2, 20, 30), BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle),
         ("blosc", 3, True), -999.0, ("time", "lat", "lon"), {"units": "degC", "long_name": "sea water temperature"}),
        ("/velocity", velocity, (40, 30), ZstdCodec(level=3), ("zstd", 3, False), 0.0, ("lat", "lon"),
         {"units": "m s-1"}),
        # 16x32 chunks do not divide 40x60: partial edge chunks on purpose.
        ("/analysis/anomaly", anomaly, (16, 32), ZstdCodec(level=5), ("zstd", 5, False), -32768, ("lat", "lon"),
         {"units": "cK", "long_name": "temperature anomaly"}),
    ]

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    g = zarr.open_group(str(path), mode="w", zarr_format=3, attributes=group_attrs)
    g.create_group("analysis", attributes=sub_attrs)
    arrays = []
    for name, data, chunks, comp, (cname, level, shuffle), fill, dims, attrs in specs:
        a = g.create_array(
            name.lstrip("/"), shape=data.shape, chunks=chunks, dtype=data.dtype, compressors=comp,
            fill_value=fill, dimension_names=dims, attributes=attrs,
        )
        a[...] = data
        arrays.append(
            _array(name, data.shape, data.dtype, dims=dims, chunks=chunks, compression=cname,
                   compression_level=level, shuffle=shuffle, fill_value=fill, attrs=attrs, data=data)
        )
    groups = {"/": {"attrs": group_attrs}, "/analysis": {"attrs": sub_attrs}}
    return _entry(rel, "zarr", attrs=group_attrs, arrays=arrays, zarr_format=3, groups=groups)


def _write_zarr_big(root: Path, rel: str, seed: int, scale: float) -> dict[str, Any]:
    """~300 MB float32 Zarr v3 array, written one chunk-slab at a time."""
    import zarr
    from zarr.codecs import BloscCodec, BloscShuffle

    rng = _rng(seed, rel)
    nt = max(1, int(round(75 * scale)))
    shape = (nt, 1000, 1000)
    chunks = (5, 500, 500)
    attrs = {"units": "m", "long_name": "synthetic smooth sea surface height"}
    group_attrs = {"title": "Large synthetic Zarr v3 array (benchmark data)"}
    base = _smooth_field(rng, shape[1:]).astype(np.float32)
    vmin, vmax, total = np.inf, -np.inf, 0.0

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    g = zarr.open_group(str(path), mode="w", zarr_format=3, attributes=group_attrs)
    a = g.create_array(
        "ssh", shape=shape, chunks=chunks, dtype=np.float32,
        compressors=BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle),
        fill_value=0.0, dimension_names=("time", "y", "x"), attributes=attrs,
    )
    for start in range(0, nt, chunks[0]):
        stop = min(start + chunks[0], nt)
        t = np.arange(start, stop, dtype=np.float32)[:, None, None]
        block = base[None] * np.sin(np.float32(0.08) * t + np.float32(0.3)) + rng.standard_normal(
            (stop - start, *shape[1:]), dtype=np.float32
        ) * np.float32(0.01)
        block = block.astype(np.float32, copy=False)
        a[start:stop] = block
        vmin, vmax = min(vmin, float(block.min())), max(vmax, float(block.max()))
        total += float(block.sum(dtype=np.float64))
    count = int(np.prod(shape))
    stats = {"min": vmin, "max": vmax, "mean": total / count, "count": count}
    arrays = [
        _array("/ssh", shape, np.float32, dims=("time", "y", "x"), chunks=chunks, compression="blosc",
               compression_level=5, shuffle=True, fill_value=0.0, attrs=attrs, stats=stats)
    ]
    return _entry(rel, "zarr", attrs=group_attrs, arrays=arrays, zarr_format=3, groups={"/": {"attrs": group_attrs}})


# --------------------------------------------------------------------------- #
# FITS
# --------------------------------------------------------------------------- #
def _write_fits(root: Path, rel: str, seed: int) -> dict[str, Any]:
    from astropy.io import fits
    from astropy.wcs import WCS

    rng = _rng(seed, rel)
    ny, nx = 96, 128
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [64.5, 48.5]
    wcs.wcs.cdelt = [-0.0002, 0.0002]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    # Expected footprint from *our* WCS object, not from the written file.
    footprint = wcs.calc_footprint(axes=(nx, ny)).tolist()

    n_src = 40
    src_x = rng.uniform(5, nx - 5, n_src)
    src_y = rng.uniform(5, ny - 5, n_src)
    flux = rng.uniform(200.0, 5000.0, n_src)
    yy, xx = np.mgrid[0:ny, 0:nx]
    image = 100.0 + rng.normal(0.0, 3.0, (ny, nx))
    for x0, y0, f0 in zip(src_x, src_y, flux):
        image += f0 / (2 * np.pi * 1.5**2) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 1.5**2))
    image = image.astype(np.float32)
    ra, dec = wcs.all_pix2world(src_x, src_y, 0)
    mag = (25.0 - 2.5 * np.log10(flux)).astype(np.float32)
    names = np.array([f"SRC-{i:04d}" for i in range(n_src)])

    raw = rng.poisson(500.0, (64, 96)).astype(np.int16)  # integers: RICE_1 is lossless, no dither

    primary_kw: dict[str, Any] = {
        "OBJECT": "SYNTH-FIELD-01",
        "TELESCOP": "SYNTH 1.0m (fictitious)",
        "INSTRUME": "SYNTHCAM",
        "OBSERVER": "A. Nonymous",
        "DATE-OBS": "2023-03-14T02:30:00.000",
        "EXPTIME": 300.0,
        "FILTER": "r",
        "BUNIT": "adu",
        "ESO DET CHIP NAME": "SYNTH-CCD-A",
        "ESO TEL AIRM START": round(float(rng.uniform(1.0, 2.0)), 3),
    }
    wcs_kw = {
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.1, "CRVAL2": 2.2,
        "CRPIX1": 64.5, "CRPIX2": 48.5, "CDELT1": -0.0002, "CDELT2": 0.0002,
        "CUNIT1": "deg", "CUNIT2": "deg", "RADESYS": "ICRS",
    }
    table_kw = {"EXTNAME": "CATALOG", "ORIGIN": "metaextract_dask.sample"}
    comp_kw = {"EXTNAME": "SCI_RICE", "BUNIT": "adu", "FRAMEID": int(rng.integers(1, 10**6))}
    columns = [
        ("RA", "D", "deg", ra.astype(np.float64)),
        ("DEC", "D", "deg", dec.astype(np.float64)),
        ("MAG", "E", "mag", mag),
        ("SRC_ID", "J", None, np.arange(n_src, dtype=np.int32) + 1),
        ("NAME", "12A", None, names),
    ]

    header = fits.Header()
    header.update(wcs.to_header())
    for key, value in primary_kw.items():
        header["HIERARCH " + key if " " in key else key] = value
    primary = fits.PrimaryHDU(data=image, header=header)
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name=n, format=f, unit=u, array=a) for n, f, u, a in columns], name="CATALOG"
    )
    table.header["ORIGIN"] = table_kw["ORIGIN"]
    comp = fits.CompImageHDU(data=raw, compression_type="RICE_1", tile_shape=(16, 96), name="SCI_RICE")
    comp.header["BUNIT"] = comp_kw["BUNIT"]
    comp.header["FRAMEID"] = comp_kw["FRAMEID"]

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([primary, table, comp]).writeto(path, overwrite=True)

    table_dtype = np.dtype([("RA", ">f8"), ("DEC", ">f8"), ("MAG", ">f4"), ("SRC_ID", ">i4"), ("NAME", "S12")])
    arrays = [
        _array("HDU0", image.shape, np.dtype(">f4"), attrs={"units": "adu"}, data=image),
        _array("HDU1", (n_src,), table_dtype),
        # Tile-compressed data have no on-disk byte order: decoded (native) dtype.
        _array("HDU2", raw.shape, raw.dtype, chunks=(16, 96), compression="rice_1",
               attrs={"units": "adu"}, data=raw),
    ]
    hdus = [
        {"index": 0, "extname": None, "xtension": None, "compressed": False,
         "keywords": {**primary_kw, **wcs_kw}, "wcs_footprint": footprint},
        {"index": 1, "extname": "CATALOG", "xtension": "BINTABLE", "compressed": False, "keywords": table_kw,
         "wcs_footprint": None,
         "columns": [{"name": n, "format": f, "unit": u} for n, f, u, _ in columns]},
        # astropy presents the decompressed header (XTENSION='IMAGE'); on disk
        # this HDU is a BINTABLE with ZIMAGE=T.
        {"index": 2, "extname": "SCI_RICE", "xtension": "IMAGE", "compressed": True, "keywords": comp_kw,
         "wcs_footprint": None},
    ]
    return _entry(rel, "fits", attrs={**primary_kw, **wcs_kw}, arrays=arrays, hdus=hdus)


# --------------------------------------------------------------------------- #
# DICOM
# --------------------------------------------------------------------------- #
_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_MF_SC_WORD_STORAGE = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word SC
_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


def _dicom_write(
    path: Path,
    *,
    sop_class: str,
    sop_instance: str,
    tags: dict[str, Any],
    pixels: np.ndarray,
    phi: bool = False,
) -> None:
    """Write a Part-10 file (preamble, file meta, explicit VR little endian). With `phi`, fictitious
    identifiers also sit in nested sequences and a private block (what a de-identifier must find)."""
    from pydicom.dataset import Dataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = _EXPLICIT_VR_LE
    # Fixed implementation UID/name: pydicom's default embeds its version.
    meta.ImplementationClassUID = _uid(0, "implementation")
    meta.ImplementationVersionName = "METAEXTRACT_S1"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    for key, value in tags.items():
        setattr(ds, key, value)
    if phi:
        _add_phi(ds, Dataset)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelData = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder("<"))).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _add_phi(ds: Any, Dataset: Any) -> None:
    """Fictitious PHI in places a careless de-identifier misses: nested sequences and private tags."""
    pid, name = str(ds.PatientID), str(ds.PatientName)
    other = Dataset()
    other.PatientID = f"{pid}-OTHER"
    other.IssuerOfPatientID = "FICTITIOUS ISSUER"
    ds.OtherPatientIDsSequence = [other]
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired)
    ref.ReferencedSOPInstanceUID = str(ds.StudyInstanceUID)
    request = Dataset()
    request.RequestedProcedureID = f"RP-{pid}"
    request.ScheduledProcedureStepID = f"SPS-{pid}"
    request.RequestedProcedureDescription = f"requested for {name} (fictitious)"
    request.ReferencedStudySequence = [ref]
    ds.RequestAttributesSequence = [request]
    block = ds.private_block(0x0009, "METAEXTRACT FICTITIOUS PHI", create=True)
    block.add_new(0x10, "LO", f"{name} private copy")
    block.add_new(0x11, "LO", pid)
    block.add_new(0x12, "OB", f"blob {name} {pid} ".encode() + b"\x00")


def _dicom_entry(rel: str, sop_class: str, sop_instance: str, tags: dict[str, Any], pixels: np.ndarray,
                 attr_keys: Iterable[str]) -> dict[str, Any]:
    frames = int(tags.get("NumberOfFrames", 1))
    info = {
        "SOPInstanceUID": sop_instance,
        "SOPClassUID": sop_class,
        "StudyInstanceUID": tags["StudyInstanceUID"],
        "SeriesInstanceUID": tags["SeriesInstanceUID"],
        "PatientID": tags["PatientID"],
        "PatientName": str(tags["PatientName"]),
        "Modality": tags["Modality"],
        "StudyDate": tags["StudyDate"],
        "Rows": int(tags["Rows"]),
        "Columns": int(tags["Columns"]),
        "NumberOfFrames": frames,
        "PixelSpacing": [float(v) for v in tags["PixelSpacing"]] if "PixelSpacing" in tags else [],
        "SliceThickness": float(tags["SliceThickness"]) if "SliceThickness" in tags else None,
        "ImagePositionPatient": (
            [float(v) for v in tags["ImagePositionPatient"]] if "ImagePositionPatient" in tags else None
        ),
        "InstanceNumber": int(tags["InstanceNumber"]),
        "TransferSyntaxUID": _EXPLICIT_VR_LE,
    }
    attrs = {k: tags[k] for k in attr_keys if k in tags}
    arrays = [_array("PixelData", pixels.shape, pixels.dtype.newbyteorder("<"), data=pixels)]
    return _entry(rel, "dicom", attrs=attrs, arrays=arrays, dicom=info)


_DICOM_ATTR_KEYS = (
    "PatientBirthDate", "PatientSex", "StudyTime", "AccessionNumber", "InstitutionName",
    "ReferringPhysicianName", "StudyDescription", "SeriesDescription", "SeriesNumber", "BodyPartExamined",
)


def _write_dicom(root: Path, seed: int) -> list[dict[str, Any]]:
    rng = _rng(seed, "dicom")
    entries = []

    # --- CT series: 5 slices, files named in an order unrelated to InstanceNumber.
    n_slices, size, spacing, thickness = 5, 64, 0.7, 2.5
    ct_common = {
        "PatientName": "Doe^Jane",
        "PatientID": "FAKE-0001",
        "PatientBirthDate": "19700101",
        "PatientSex": "F",
        "PatientIdentityRemoved": "YES",
        "StudyInstanceUID": _uid(seed, "ct", "study"),
        "SeriesInstanceUID": _uid(seed, "ct", "series"),
        "FrameOfReferenceUID": _uid(seed, "ct", "for"),
        "StudyDate": "20240115",
        "StudyTime": "093000",
        "SeriesDate": "20240115",
        "SeriesTime": "093500",
        "AccessionNumber": "ACC-FAKE-0001",
        "InstitutionName": "Synthetic General Hospital (fictitious)",
        "ReferringPhysicianName": "Example^Referrer^^Dr",
        "StudyDescription": "SYNTHETIC CT CHEST (TEST DATA)",
        "SeriesDescription": "AXIAL 2.5mm (synthetic)",
        "StudyID": "1",
        "SeriesNumber": 2,
        "Modality": "CT",
        "Manufacturer": "SyntheticScanners Inc. (fictitious)",
        "BodyPartExamined": "CHEST",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        "PixelSpacing": [spacing, spacing],
        "SliceThickness": thickness,
        "KVP": 120.0,
        "RescaleIntercept": -1024.0,
        "RescaleSlope": 1.0,
        "RescaleType": "HU",
        "Rows": size,
        "Columns": size,
    }
    order = rng.permutation(n_slices)
    if np.all(order == np.sort(order)):
        order = order[::-1]
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    for file_idx, slice_idx in enumerate(order):
        inst = int(slice_idx) + 1
        z = -100.0 + thickness * slice_idx
        body = (yy**2 / 26**2 + xx**2 / 30**2) <= 1.0
        bone = ((yy - 10) ** 2 + xx**2) <= (4 + slice_idx) ** 2
        hu = np.where(body, 40.0, -1000.0) + np.where(bone, 700.0, 0.0) + rng.normal(0.0, 10.0, (size, size))
        pixels = np.round(hu + 1024.0).astype(np.int16)  # stored = HU - intercept
        tags = dict(ct_common, InstanceNumber=inst,
                    ImagePositionPatient=[-22.4, -22.4, z], SliceLocation=z)
        sop = _uid(seed, "ct", "instance", inst)
        rel = f"dicom/ct_series/CT_{file_idx:03d}.dcm"
        _dicom_write(root / rel, sop_class=_CT_STORAGE, sop_instance=sop, tags=tags, pixels=pixels, phi=True)
        entries.append(_dicom_entry(rel, _CT_STORAGE, sop, tags, pixels, _DICOM_ATTR_KEYS))

    # --- MR single image, different patient / study, uint16 pixels.
    size = 64
    mr_tags = {
        "PatientName": "Roe^Richard",
        "PatientID": "FAKE-0002",
        "PatientBirthDate": "19821231",
        "PatientSex": "M",
        "PatientIdentityRemoved": "YES",
        "StudyInstanceUID": _uid(seed, "mr", "study"),
        "SeriesInstanceUID": _uid(seed, "mr", "series"),
        "FrameOfReferenceUID": _uid(seed, "mr", "for"),
        "StudyDate": "20230704",
        "StudyTime": "141500",
        "AccessionNumber": "ACC-FAKE-0002",
        "InstitutionName": "Example Imaging Center (fictitious)",
        "ReferringPhysicianName": "Sample^Referrer^^Dr",
        "StudyDescription": "SYNTHETIC MR BRAIN (TEST DATA)",
        "SeriesDescription": "T1 AX (synthetic)",
        "StudyID": "7",
        "SeriesNumber": 3,
        "InstanceNumber": 1,
        "Modality": "MR",
        "Manufacturer": "SyntheticScanners Inc. (fictitious)",
        "BodyPartExamined": "HEAD",
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
        "ScanningSequence": "SE",
        "SequenceVariant": "NONE",
        "MagneticFieldStrength": 1.5,
        "RepetitionTime": 500.0,
        "EchoTime": 15.0,
        "ImagePositionPatient": [-120.0, -120.0, 12.5],
        "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        "PixelSpacing": [3.75, 3.75],
        "SliceThickness": 5.0,
        "Rows": size,
        "Columns": size,
    }
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    head = (yy**2 / 28**2 + xx**2 / 24**2) <= 1.0
    mr = np.clip(np.where(head, 800.0, 0.0) + 200.0 * _smooth_field(rng, (size, size)) * head
                 + rng.normal(0, 20, (size, size)), 0, 4095).astype(np.uint16)
    sop = _uid(seed, "mr", "instance", 1)
    rel = "dicom/mr_brain.dcm"
    _dicom_write(root / rel, sop_class=_MR_STORAGE, sop_instance=sop, tags=mr_tags, pixels=mr, phi=True)
    entries.append(_dicom_entry(rel, _MR_STORAGE, sop, mr_tags, mr, _DICOM_ATTR_KEYS))

    # --- Multi-frame grayscale word secondary capture, 4 frames of 32x48.
    frames, rows, cols = 4, 32, 48
    mf_tags = {
        "PatientName": "Doe^Jane",
        "PatientID": "FAKE-0001",
        "PatientBirthDate": "19700101",
        "PatientSex": "F",
        "PatientIdentityRemoved": "YES",
        "StudyInstanceUID": _uid(seed, "sc", "study"),
        "SeriesInstanceUID": _uid(seed, "sc", "series"),
        "StudyDate": _DICOM_SC_DATE,
        "StudyTime": "120000",
        "AccessionNumber": "ACC-FAKE-0003",
        "InstitutionName": "Synthetic General Hospital (fictitious)",
        "ReferringPhysicianName": "",
        "StudyDescription": "SYNTHETIC SECONDARY CAPTURE (TEST DATA)",
        "SeriesDescription": "multi-frame capture (synthetic)",
        "StudyID": "9",
        "SeriesNumber": 1,
        "InstanceNumber": 1,
        "Modality": "OT",
        "ConversionType": "WSD",
        "ImageType": ["DERIVED", "SECONDARY"],
        "NumberOfFrames": frames,
        "FrameIncrementPointer": 0x00182002,  # Frame Label Vector
        "FrameLabelVector": [f"F{i + 1}" for i in range(frames)],
        "PixelSpacing": [0.5, 0.5],
        "Rows": rows,
        "Columns": cols,
    }
    mf = (1000.0 + 500.0 * _smooth_field(rng, (frames, rows, cols))
          * np.arange(1, frames + 1)[:, None, None] / frames).astype(np.uint16)
    sop = _uid(seed, "sc", "instance", 1)
    rel = "dicom/multiframe_sc.dcm"
    _dicom_write(root / rel, sop_class=_MF_SC_WORD_STORAGE, sop_instance=sop, tags=mf_tags, pixels=mf, phi=True)
    entries.append(_dicom_entry(rel, _MF_SC_WORD_STORAGE, sop, mf_tags, mf, _DICOM_ATTR_KEYS))
    return entries


# --------------------------------------------------------------------------- #
# misfits
# --------------------------------------------------------------------------- #
def _safe_random_bytes(rng: np.random.Generator, n: int) -> bytes:
    """Random bytes that do not start like (or carry the magic of) any format."""
    while True:
        data = rng.bytes(n)
        if not any(data[off:off + len(m)] == m for off, m in _MAGICS):
            return data


def _truncated_hdf5_bytes(rng: np.random.Generator, keep: int = 1536) -> bytes:
    """First ``keep`` bytes of a valid, larger HDF5 file (built in memory)."""
    import io

    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["title"] = "about to be truncated"
        f.create_dataset("/data/values", data=rng.normal(size=(64, 64)))
        f.create_dataset("/data/index", data=np.arange(512, dtype=np.int64))
    raw = buf.getvalue()
    assert len(raw) > 2 * keep  # the cut must remove real content
    return raw[:keep]


def _write_misfits(root: Path, seed: int) -> list[dict[str, Any]]:
    rng = _rng(seed, "misfits")
    d = root / "misfits"
    d.mkdir(parents=True, exist_ok=True)
    (d / "empty.h5").write_bytes(b"")
    (d / "truncated.h5").write_bytes(_truncated_hdf5_bytes(rng))
    (d / "notes.nc").write_text(
        "These are plain-text notes, not a netCDF file.\n"
        "Readers must not trust the .nc extension.\n",
        encoding="utf-8",
    )
    (d / "random.bin").write_bytes(_safe_random_bytes(rng, 4096))
    return [
        _entry("misfits/empty.h5", "binary"),
        _entry("misfits/truncated.h5", "hdf5", "error", error="truncated HDF5 file (first 1536 bytes only)"),
        _entry("misfits/notes.nc", "binary"),
        _entry("misfits/random.bin", "binary"),
    ]


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #
def generate(
    directory: str | Path,
    preset: str = "small",
    seed: int = 0,
    *,
    _medium_scale: float = 1.0,
) -> dict[str, Any]:
    """Write the sample tree into ``directory`` and return its manifest.

    Parameters
    ----------
    directory : str or Path
        Target directory, created if missing.  Existing files of the same
        names are overwritten; other files are left alone.
    preset : {"small", "medium"}
        ``small`` is a few hundred kB covering every format and feature;
        ``medium`` is the same tree plus a ~400 MB chunked HDF5 cube
        (``hdf5/large_cube.h5``) and a ~300 MB Zarr v3 array
        (``zarr/large_v3.zarr``), both written chunk by chunk.
    seed : int
        Seed for every random draw (and the DICOM UIDs).
    _medium_scale : float
        Private: scales the leading axis of the ``medium`` arrays (e.g. 0.02
        for a quick check of that code path).

    Returns
    -------
    dict
        ``{"seed", "preset", "files"}`` as described in the module docstring;
        the same content is written to ``directory/manifest.json``, which scans leave out (the
        directory's ``.metaextract-ignore`` names it).

    Raises
    ------
    ValueError
        If ``preset`` is unknown.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)

    files: list[dict[str, Any]] = [
        _write_hdf5(root, "hdf5/experiment.h5", seed),
        _write_netcdf4(root, "netcdf/climate_cf.nc", seed),
        _write_netcdf3(root, "netcdf/stations_classic.nc", seed),
        _write_zarr_v2(root, "zarr/ocean_v2.zarr", seed),
        _write_zarr_v3(root, "zarr/ocean_v3.zarr", seed),
        _write_fits(root, "fits/field_image.fits", seed),
        *_write_dicom(root, seed),
        *_write_misfits(root, seed),
    ]
    if preset == "medium":
        files.append(_write_hdf5_big(root, "hdf5/large_cube.h5", seed, _medium_scale))
        files.append(_write_zarr_big(root, "zarr/large_v3.zarr", seed, _medium_scale))

    manifest = {"seed": int(seed), "preset": preset, "files": sorted(files, key=lambda e: e["path"])}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    # the manifest describes the data and is not data: scans leave it out (discover.IGNORE_FILE)
    (root / IGNORE_FILE).write_text("# written by metaextract-dask sample-data\nmanifest.json\n", encoding="utf-8")
    return manifest


# --------------------------------------------------------------------------- #
# many small files (benchmarks)
# --------------------------------------------------------------------------- #
_MANY_KINDS = ("hdf5", "netcdf4", "netcdf3", "fits", "dicom")
_MANY_EXT = {"hdf5": "h5", "netcdf4": "nc", "netcdf3": "nc", "fits": "fits", "dicom": "dcm", "zarr": "zarr"}


def _many_hdf5(path: Path, i: int, rng: np.random.Generator) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["index"] = i
        f.attrs["title"] = f"benchmark file {i}"
        f.attrs["temperature"] = float(rng.uniform(250, 320))
        g = f.create_group("data")
        g.attrs["run"] = int(rng.integers(0, 10**6))
        g.create_dataset("values", data=rng.standard_normal((16, 32), dtype=np.float32), chunks=(8, 16),
                         compression="gzip", compression_opts=1, shuffle=True)
        g.create_dataset("ids", data=rng.integers(0, 1000, 32, dtype=np.int32))


def _many_netcdf(path: Path, i: int, rng: np.random.Generator, fmt: str) -> None:
    import netCDF4

    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        nc.setncatts({"Conventions": "CF-1.8", "title": f"benchmark file {i}", "index": np.int32(i),
                      "history": f"{_HISTORY_TIME} metaextract_dask.sample.generate_many"})
        nc.createDimension("y", 16)
        nc.createDimension("x", 32)
        kw: dict[str, Any] = {}
        if fmt == "NETCDF4":
            kw = {"compression": "zlib", "complevel": 1, "chunksizes": (8, 16)}
        v = nc.createVariable("tas", "f4", ("y", "x"), fill_value=np.float32(1.0e20), **kw)
        v.units = "K"
        v.set_auto_maskandscale(False)
        v[:] = (280.0 + rng.standard_normal((16, 32))).astype(np.float32)


def _many_fits(path: Path, i: int, rng: np.random.Generator) -> None:
    from astropy.io import fits

    hdu = fits.PrimaryHDU(rng.standard_normal((32, 32), dtype=np.float32))
    hdu.header["OBJECT"] = f"BENCH-{i:06d}"
    hdu.header["EXPTIME"] = float(rng.uniform(1, 600))
    hdu.header["DATE-OBS"] = "2023-03-14T02:30:00.000"
    hdu.writeto(path, overwrite=True)


def _many_dicom(path: Path, i: int, rng: np.random.Generator, seed: int) -> None:
    tags = {
        "PatientName": f"Bench^Patient{i % 97}",
        "PatientID": f"FAKE-B{i % 97:04d}",
        "StudyInstanceUID": _uid(seed, "many", "study", i // 50),
        "SeriesInstanceUID": _uid(seed, "many", "series", i // 10),
        "StudyDate": "20240115",
        "Modality": "CT",
        "InstanceNumber": i % 10 + 1,
        "PixelSpacing": [0.7, 0.7],
        "SliceThickness": 2.5,
        "ImagePositionPatient": [0.0, 0.0, float(i % 10) * 2.5],
        "Rows": 32,
        "Columns": 32,
    }
    pixels = rng.integers(0, 2000, (32, 32), dtype=np.int16)
    _dicom_write(path, sop_class=_CT_STORAGE, sop_instance=_uid(seed, "many", "instance", i),
                 tags=tags, pixels=pixels)


def _many_zarr(path: Path, i: int, rng: np.random.Generator) -> None:
    import zarr

    fmt = 2 if i % 2 else 3
    g = zarr.open_group(str(path), mode="w", zarr_format=fmt, attributes={"index": i, "title": f"bench {i}"})
    a = g.create_array("values", shape=(16, 32), chunks=(8, 16), dtype="f4", fill_value=0.0)
    a[...] = rng.standard_normal((16, 32), dtype=np.float32)


def _many_misfit(path: Path, i: int, rng: np.random.Generator, template: bytes) -> None:
    kind = i % 4
    if kind == 0:
        path.write_bytes(b"")
    elif kind == 1:
        path.write_bytes(template)
    elif kind == 2:
        path.write_text(f"plain text #{i}, not netCDF\n", encoding="utf-8")
    else:
        path.write_bytes(_safe_random_bytes(rng, 4096))


def generate_many(
    directory: str | Path,
    n_files: int = 6000,
    seed: int = 0,
    *,
    files_per_dir: int = 500,
) -> list[str]:
    """Write ``n_files`` small mixed files for benchmarks.

    About 2 % are Zarr stores (alternating v2/v3), 1 % misfits (empty,
    truncated HDF5, text ``.nc``, random bytes) and the rest split equally
    between HDF5, NetCDF4, NetCDF3, FITS and DICOM, in a seed-determined
    shuffled order.  Files go to ``part_000/``, ``part_001/``... with
    ``files_per_dir`` entries each and are named ``<kind>_<index>.<ext>``
    (kinds ``hdf5 nc4 nc3 fits dicom zarr misfit``), a few kB to a few tens
    of kB each, every one with its own attribute values and data.

    Parameters
    ----------
    directory : str or Path
        Target directory, created if missing.
    n_files : int
        Number of files (a Zarr store counts as one).
    seed : int
        Seed for every random draw.
    files_per_dir : int
        Entries per subdirectory.

    Returns
    -------
    list of str
        Relative POSIX paths in index order (Zarr stores: the store directory).
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_zarr = int(round(0.02 * n_files))
    n_misfit = int(round(0.01 * n_files))
    n_rest = max(0, n_files - n_zarr - n_misfit)
    kinds: list[str] = []
    for k, kind in enumerate(_MANY_KINDS):
        kinds += [kind] * (n_rest // len(_MANY_KINDS) + (1 if k < n_rest % len(_MANY_KINDS) else 0))
    kinds += ["zarr"] * n_zarr + ["misfit"] * n_misfit
    kinds = [kinds[j] for j in rng.permutation(len(kinds))]

    truncated = _truncated_hdf5_bytes(np.random.default_rng([seed, 1]))
    short = {"netcdf4": "nc4", "netcdf3": "nc3"}
    misfit_ext = ("h5", "h5", "nc", "bin")
    paths: list[str] = []
    made: set[Path] = set()
    for i, kind in enumerate(kinds):
        sub = root / f"part_{i // files_per_dir:03d}"
        if sub not in made:
            sub.mkdir(parents=True, exist_ok=True)
            made.add(sub)
        if kind == "misfit":
            name = f"misfit_{i:06d}.{misfit_ext[i % 4]}"
        else:
            name = f"{short.get(kind, kind)}_{i:06d}.{_MANY_EXT[kind]}"
        path = sub / name
        if kind == "hdf5":
            _many_hdf5(path, i, rng)
        elif kind == "netcdf4":
            _many_netcdf(path, i, rng, "NETCDF4")
        elif kind == "netcdf3":
            _many_netcdf(path, i, rng, "NETCDF3_CLASSIC")
        elif kind == "fits":
            _many_fits(path, i, rng)
        elif kind == "dicom":
            _many_dicom(path, i, rng, seed)
        elif kind == "zarr":
            _many_zarr(path, i, rng)
        else:
            _many_misfit(path, i, rng, truncated)
        paths.append(path.relative_to(root).as_posix())
    return paths


def generate_many_cached(path: str | os.PathLike[str], n_files: int, seed: int = 0) -> bool:
    """:func:`generate_many` unless a marker beside `path` says this tree is complete already (benchmarks
    reuse their data between runs); True when it was generated now."""
    marker = f"{os.fspath(path).rstrip(os.sep)}.complete-{n_files}"  # beside the tree, not scanned with it
    if os.path.exists(marker):
        return False
    shutil.rmtree(path, ignore_errors=True)
    generate_many(path, n_files=n_files, seed=seed)
    open(marker, "w").close()
    return True
