"""The HDF5 backend's low-level catalog walk (``_records_fast``) against the high-level h5py path it replaces
(``_records_slow``): the same ``Records``, value for value, on files h5py writes with every attribute type,
layout, filter, link kind and storage form, on netCDF-4 files, and on damaged files (where both paths must
give the same rows or raise the same error)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import metaextract_dask.formats.hdf5 as H
from metaextract_dask.formats import get_backend
from metaextract_dask.testing import reference_files

h5py = pytest.importorskip("h5py")

LIMIT = 4096  # small enough that the large attributes below are capped


def _no_row_fallback(full: str, *args: Any) -> Any:
    raise AssertionError(f"the fast row of {full} fell back to the high-level one")


def _records(path: str | Path, fast: bool, limit: int | None = LIMIT) -> Any:
    with h5py.File(path, "r") as f:
        if not fast:
            return H._records_slow(f, limit)
        slow_row, H._dataset_row_slow = H._dataset_row_slow, _no_row_fallback
        try:
            rec = H._records_fast(f, limit)
        finally:
            H._dataset_row_slow = slow_row
        assert rec is not None, "the fast path fell back to the high-level one"
        return rec


def _assert_same(path: str | Path, *, fallback: bool = False) -> Any:
    """Both paths give equal Records (`fallback`: the fast path is expected to hand the file back); returns
    them (as dicts, attribute JSON capped at LIMIT)."""
    first = None
    for limit in (LIMIT, None):
        slow = dataclasses.asdict(_records(path, False, limit))
        if fallback:
            with h5py.File(path, "r") as f:
                assert H._records_fast(f, limit) is None
            fast = dataclasses.asdict(H.HDF5Backend._records(h5py.File(path, "r"), limit))
        else:
            fast = dataclasses.asdict(_records(path, True, limit))
        assert fast == slow
        first = first or slow
    return first


def _read_both(path: str | Path, monkeypatch: pytest.MonkeyPatch, in_read: bool = True) -> tuple[Any, Any]:
    """``HDF5Backend.read`` (as a scan calls it) with the fast path on and off: Records or the exception."""
    out = []
    for fast in (True, False):
        monkeypatch.setattr(H, "_FAST", fast)
        try:
            if in_read:
                with H.netcdf4_check_in_read():
                    got: Any = dataclasses.asdict(get_backend("hdf5").read(str(path)))
            else:
                got = dataclasses.asdict(get_backend("hdf5").read(str(path)))
        except Exception as exc:  # noqa: BLE001 - the exception is the result compared
            got = (type(exc), str(exc))
        out.append(got)
    monkeypatch.setattr(H, "_FAST", True)
    return out[0], out[1]


# --------------------------------------------------------------------------- #
# files
# --------------------------------------------------------------------------- #
def _all_attrs(obj: Any, f: Any, big: bool = True) -> None:
    """Every attribute kind h5py reads differently."""
    a = obj.attrs
    a["int"] = np.int64(7)
    a["float32"] = np.float32(1.5)
    a["nan"] = np.nan
    a["bool"] = np.bool_(True)
    a["bools"] = np.array([True, False])
    a["complex"] = np.complex64(1 + 2j)
    a["big_endian"] = np.array([1, 2, 3], dtype=">i4")
    a["uint8_2d"] = np.arange(6, dtype="u1").reshape(2, 3)
    a["fixed_bytes"] = np.bytes_(b"abc")
    a["fixed_bytes_array"] = np.array([b"a", b"bcd"], dtype="S4")
    a.create("fixed_utf8", "grüße".encode(), dtype=h5py.string_dtype("utf-8", 12))
    a.create("fixed_ascii", b"ascii", dtype=h5py.string_dtype("ascii", 8))
    a["vlen_str"] = "héllo"
    a["vlen_strs"] = ["a", "bc", "dé"]
    a.create("vlen_bytes", b"raw", dtype=h5py.string_dtype("ascii"))
    a.create("vlen_bytes_array", [b"x", b"yz"], dtype=h5py.string_dtype("ascii"))
    a.create("vlen_surrogate", "ok", dtype=h5py.string_dtype("utf-8"))
    a["empty_float"] = h5py.Empty("f4")
    a["empty_str"] = h5py.Empty(h5py.string_dtype())
    a["empty_array"] = np.zeros((0,), dtype="i2")
    compound = np.dtype([("a", "i4"), ("b", "f8"), ("c", "S3")])
    a["compound"] = np.array((1, 2.5, b"xy"), dtype=compound)
    a["compound_array"] = np.array([(1, 2.5, b"xy"), (3, -1.0, b"z")], dtype=compound)
    a.create("nested", np.zeros((), dtype=[("p", [("q", "u2"), ("r", "f4")])]))
    enum = h5py.enum_dtype({"RED": 0, "GREEN": 1, "BLUE": 42}, basetype="i1")
    a.create("enum", 42, dtype=enum)
    a.create("enum_array", [0, 1, 42], dtype=enum)
    a["ref"] = f.ref
    a.create("refs", [f.ref, f.ref], dtype=h5py.ref_dtype)
    a.create("vlen_int", [np.arange(3, dtype="i4"), np.arange(1, dtype="i4")], dtype=h5py.vlen_dtype("i4"))
    a.create("array_typed", np.arange(6, dtype="f4").reshape(2, 3), dtype=np.dtype("(3,)f4"))
    tid = h5py.h5t.array_create(h5py.h5t.NATIVE_INT64, (3,))  # an array type in a scalar dataspace
    attr = h5py.h5a.create(obj.id, b"array_typed_scalar", tid, h5py.h5s.create(h5py.h5s.SCALAR))
    attr.write(np.arange(3, dtype="i8"), mtype=tid)
    a["units"] = "m s-1"
    a["unicode_ключ"] = "значение"
    if big:
        a["large"] = np.arange(5000, dtype="f8")  # past LIMIT as JSON
        a["large_str"] = "x" * 10_000


def _zoo(path: Path, libver: Any = None, track_order: bool = False) -> Path:
    kwargs: dict[str, Any] = {"libver": libver} if libver else {}
    with h5py.File(path, "w", track_order=track_order, **kwargs) as f:
        _all_attrs(f, f)
        g = f.create_group("grp")
        _all_attrs(g, f, big=False)
        d = f.create_dataset("data", data=np.arange(20, dtype="f4").reshape(4, 5), chunks=(2, 5), fillvalue=-1.0,
                             compression="gzip", compression_opts=4, shuffle=True, fletcher32=True)
        _all_attrs(d, f)
        # layouts
        f.create_dataset("contiguous", data=np.arange(10, dtype="i2"))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        f.create_dataset("compact", data=np.arange(4, dtype="u1"), dcpl=dcpl)
        # filters
        f.create_dataset("lzf", data=np.arange(100.0), compression="lzf")
        f.create_dataset("szip", data=np.arange(100, dtype="i4"), compression="szip")
        f.create_dataset("scaleoffset_int", data=np.arange(100, dtype="i4"), scaleoffset=0, chunks=(50,))
        f.create_dataset("scaleoffset_float", data=np.linspace(0, 1, 100), scaleoffset=3, chunks=(50,))
        nbit = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        nbit.set_chunk((10,))
        nbit.set_filter(h5py.h5z.FILTER_NBIT)
        f.create_dataset("nbit", data=np.arange(20, dtype="i4"), dcpl=nbit)
        f.create_dataset("unknown_filter", shape=(10,), dtype="i4", chunks=(5,), compression=32015,
                         allow_unknown_filter=True)
        # fill values
        f.create_dataset("fill_int", shape=(3,), dtype="i4", fillvalue=-99)
        f.create_dataset("fill_default", shape=(3,), dtype="f8")
        f.create_dataset("fill_nan", shape=(3,), dtype="f4", fillvalue=np.nan)
        f.create_dataset("fill_compound", shape=(2,), dtype=[("a", "i4"), ("b", "f4")],
                         fillvalue=np.array((1, 2.0), dtype=[("a", "i4"), ("b", "f4")]))
        f.create_dataset("fill_bytes", shape=(2,), dtype="S4", fillvalue=b"zz")
        f.create_dataset("fill_vlen_str", shape=(2,), dtype=h5py.string_dtype())
        # dtypes and shapes
        f.create_dataset("vlen_str", data=["a", "bcd"], dtype=h5py.string_dtype())
        f.create_dataset("vlen_int", shape=(2,), dtype=h5py.vlen_dtype("i8"))
        f.create_dataset("compound", data=np.zeros(3, dtype=[("x", "f4"), ("y", ">i8"), ("s", "S2")]))
        f.create_dataset("enum", data=np.array([0, 1], dtype="u1"),
                         dtype=h5py.enum_dtype({"A": 0, "B": 1}, basetype="u1"))
        f.create_dataset("bool", data=np.array([True, False]))
        f.create_dataset("big_endian", data=np.arange(6, dtype=">f8").reshape(2, 3))
        f.create_dataset("complex", data=np.arange(3) * 1j)
        f.create_dataset("array_typed", shape=(4,), dtype=np.dtype("(2,3)i4"))
        f.create_dataset("refs", shape=(2,), dtype=h5py.ref_dtype)
        f.create_dataset("zero_size", shape=(0,), dtype="f4")
        f.create_dataset("zero_size_chunked", shape=(0, 5), maxshape=(None, 5), dtype="f4", chunks=(4, 5))
        f.create_dataset("scalar", data=3.25)
        f.create_dataset("scalar_str", data="text", dtype=h5py.string_dtype())
        f.create_dataset("null", data=h5py.Empty("f4"))
        f.create_dataset("null_str", data=h5py.Empty(h5py.string_dtype()))
        f.create_dataset("units", data=[1.0]).attrs["units"] = "K"
        f["committed"] = np.dtype("<f4")  # a named datatype: not catalogued
        f.create_dataset("typed", shape=(2,), dtype=f["committed"])
        # dimension scales, labels
        cube = f.create_dataset("cube", shape=(2, 3, 4), dtype="f4")
        for i, n in enumerate(("t", "y", "x")):
            scale = f.create_dataset(n, data=np.arange(cube.shape[i], dtype="f8"))
            scale.make_scale(n if n != "x" else "")
            cube.dims[i].attach_scale(scale)
        cube.dims[0].label = "time"
        labelled = f.create_dataset("labelled", shape=(2, 2), dtype="i1")
        labelled.dims[1].label = "columns"
        f.create_dataset("lonely_scale", data=np.arange(3)).make_scale("lonely")
        # links
        f["hard_again"] = f["data"]  # the same object twice: visited once
        f["soft"] = h5py.SoftLink("/grp")
        f["dangling_soft"] = h5py.SoftLink("/nowhere")
        other = path.with_name(path.stem + "_other.h5")
        with h5py.File(other, "w") as o:
            o["elsewhere"] = np.arange(3)
        f["external"] = h5py.ExternalLink(other.name, "/elsewhere")
        f["dangling_external"] = h5py.ExternalLink("missing.h5", "/x")
        # many members (dense link storage with libver latest) and many attributes
        many = f.create_group("many", track_order=track_order)
        for i in range(20):
            many.create_dataset(f"m{i:02d}", data=[i])
            many.attrs[f"a{19 - i:02d}"] = i
        many["m00"].attrs.update({f"k{i}": i for i in range(12)})
        deep = f.create_group("ä/ö/ü")
        deep.attrs["δ"] = "deep"
        deep["ü"] = np.arange(2)
    return path


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@pytest.mark.parametrize("libver,track_order", [(None, False), ("latest", False), ("latest", True),
                                                 (None, True)])
def test_every_kind_of_object_and_attribute(zoo_dir: Path, libver: Any, track_order: bool,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = _zoo(zoo_dir / f"zoo_{libver}_{track_order}.h5", libver, track_order)
    rec = _assert_same(path)
    fast, slow = _read_both(path, monkeypatch)  # as a scan reads: the marker check's objects reused
    assert fast == slow
    rows = {r["name"]: r for r in rec["arrays"]}
    # the fixture really holds what it claims (the paths agree on each of these)
    assert "/hard_again" not in rows and "/soft" not in rows and "/committed" not in rows
    assert "<omitted:" in rows["/data"]["attrs"] and "<omitted:" in str(rec["attrs"]["large"])
    assert rows["/cube"]["dims"] == ["time", "y", "x"] and rows["/labelled"]["dims"] == ["", "columns"]
    assert rows["/null"]["shape"] is None and rows["/scalar"]["shape"] == []
    assert rows["/fill_int"]["fill_value"] == "-99" and rows["/fill_default"]["fill_value"] is None
    assert {"gzip", "lzf", "szip"} <= {r["compression"] for r in rows.values()}
    assert rec["attrs"]["vlen_str"] == "héllo" and rec["attrs"]["empty_float"] is not None
    assert rec["groups"]["/ä/ö/ü"]["attrs"] == {"δ": "deep"}
    assert len(rec["groups"]["/many"]["attrs"]) == 20


def test_user_block_and_superblock_versions(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "ub.h5", "w", userblock_size=1024) as f:
        f.attrs["x"] = 1
        f["v"] = np.arange(3)
    with open(tmp_path / "ub.h5", "r+b") as fh:
        fh.write(b"user block text")
    rec = _assert_same(tmp_path / "ub.h5")
    assert rec["attrs"] == {"x": 1}
    for libver in ("earliest", "v108", "v110", "latest"):
        with h5py.File(tmp_path / f"{libver}.h5", "w", libver=libver) as f:
            f.create_group("g").attrs["a"] = [1, 2]
        _assert_same(tmp_path / f"{libver}.h5")


def test_reference_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample generator's HDF5 and netCDF-4 files (the latter read as HDF5: dimension scales, _Netcdf4
    attributes, groups)."""
    paths = reference_files("hdf5", "netcdf4")
    assert any(p.endswith(".nc") for p in paths)
    for path in paths:
        _assert_same(path)
        fast, slow = _read_both(path, monkeypatch, in_read=False)
        assert fast == slow


def test_netcdf4_files_through_the_hdf5_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netCDF4 = pytest.importorskip("netCDF4")
    path = tmp_path / "nc4.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.setncattr("title", "nc")
        ds.createDimension("time", None)
        ds.createDimension("x", 3)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t[:] = [0, 1]
        v = ds.createVariable("v", "f4", ("time", "x"), zlib=True, fill_value=-9.0)
        v[:] = np.ones((2, 3))
        v.setncattr("flags", np.array([1, 2], "i1"))
        ds.createVariable("nodim", "i4", ())
        g = ds.createGroup("sub")
        g.createDimension("y", 2)
        g.createVariable("w", str, ("y",))[:] = np.array(["a", "b"], dtype=object)
        g.createVariable("x_ref", "i2", ("x", "y"))
    rec = _assert_same(path)
    assert any(r["name"] == "/v" and r["dims"] == ["time", "x"] for r in rec["arrays"])
    fast, slow = _read_both(path, monkeypatch, in_read=False)
    assert fast == slow
    with h5py.File(path, "r") as f:  # the in-read netCDF-4 check, both ways
        assert H._netcdf4_marked_fast(f.id, H._Opened()) is True and H._netcdf4_marked_slow(f) is True


def test_netcdf4_marked_matches(tmp_path: Path, zoo_dir: Path) -> None:
    cases = {"plain": {}, "root": {"_NCProperties": "version=2"}}
    for name, attrs in cases.items():
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f.attrs.update(attrs)
            f["a"] = np.arange(2)
    with h5py.File(tmp_path / "dimid.h5", "w") as f:  # older writers: markers on root objects only
        f["a"] = np.arange(2)
        f["b"] = np.arange(2)
        f["b"].attrs["_Netcdf4Dimid"] = 0
        f["c"] = h5py.SoftLink("/nowhere")
    with h5py.File(tmp_path / "coords.h5", "w") as f:
        f.create_group("g").attrs["_Netcdf4Coordinates"] = [0, 1]
    with h5py.File(tmp_path / "ordered.h5", "w", track_order=True) as f:  # creation order is not name order
        f["z"] = np.arange(2)
        f["a"] = np.arange(2)
        f["a"].attrs["_Netcdf4Dimid"] = 1
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    paths = [*tmp_path.glob("*.h5"), *zoo_dir.glob("zoo_*.h5"), *map(Path, reference_files("hdf5", "netcdf4"))]
    for path in paths:
        with h5py.File(path, "r") as f:
            assert H._netcdf4_marked_fast(f.id, H._Opened()) == H._netcdf4_marked_slow(f), path
            assert H._root_links(h5py.h5o.open(f.id, b"/"), H._Opened()) == list(f.id), path  # GroupIter
    expect = {"plain": False, "root": True, "dimid": True, "coords": True, "ordered": True, "empty": False}
    for name, marked in expect.items():
        with h5py.File(tmp_path / f"{name}.h5", "r") as f:
            assert H.netcdf4_marked(f) is marked


def test_non_utf8_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names that are not UTF-8: the high-level path decides (the same result, or the same error)."""
    path = tmp_path / "bytes.h5"
    with h5py.File(path, "w") as f:
        f["ok"] = np.arange(2)
        f["ok"].attrs[b"\xff\xfeattr"] = 1
        f.attrs[b"caf\xe9"] = "latin-1 name"
    _assert_same(path)  # bytes attribute names: str(b'...') keys on both paths
    with h5py.File(path, "a") as f:
        f[b"grp\xff"] = np.arange(2)
    fast, slow = _read_both(path, monkeypatch)
    assert fast == slow


def test_truncated_file_same_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _zoo(tmp_path / "whole.h5")
    data = src.read_bytes()
    for keep in (1536, len(data) // 2, len(data) - 100):
        cut = tmp_path / f"cut{keep}.h5"
        cut.write_bytes(data[:keep])
        fast, slow = _read_both(cut, monkeypatch)
        assert fast == slow


def test_dataset_past_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """libhdf5 refuses to open the dataset: the high-level path's error row, identical."""
    path = tmp_path / "cut.h5"
    with h5py.File(path, "w") as f:
        f["small"] = np.arange(10, dtype="i4")
        f["big"] = np.arange(1_000_000, dtype="f8")
    data = bytearray(path.read_bytes())
    del data[len(data) - 4_000_000:]
    data[40:48] = len(data).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    fast, slow = _read_both(path, monkeypatch)
    assert fast == slow
    assert "file corruption" in {r["name"]: r for r in fast["arrays"]}["/big"]["error"]


def _corrupt_header(tmp_path: Path, libver: Any, target: str, offset: int, value: bytes) -> Path:
    path = tmp_path / f"hdr_{libver}_{target.replace('/', '_')}_{offset}.h5"
    kwargs: dict[str, Any] = {"libver": libver} if libver else {}
    with h5py.File(path, "w", **kwargs) as f:
        f["a"] = np.arange(3)
        f.create_group("g").attrs["x"] = 1
        f["g/b"] = np.arange(4.0)
        f["g/b"].attrs["u"] = "m"
        f["z"] = np.arange(2)
        addr = h5py.h5o.get_info(f[target].id).addr
    with open(path, "r+b") as fh:
        fh.seek(addr + offset)
        fh.write(value)
    return path


@pytest.mark.parametrize("libver", [None, "latest"])
@pytest.mark.parametrize("target", ["/a", "/g", "/g/b"])
def test_corrupt_object_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, libver: Any, target: str) -> None:
    """A damaged object header: the same rows (or the same error) on both paths."""
    for offset, value in ((0, b"\x07"), (4, b"\xff"), (12, b"\xff\xff\xff\xff"), (20, b"\x00" * 8)):
        path = _corrupt_header(tmp_path, libver, target, offset, value)
        fast, slow = _read_both(path, monkeypatch)
        assert fast == slow, (offset, fast, slow)


def test_unreadable_attribute_same_marker(tmp_path: Path) -> None:
    """An attribute h5py cannot read: the same ``<unreadable: ...>`` marker (no fallback needed)."""
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", data=np.arange(3))
        # a 128-bit integer: h5py has no numpy type for it
        tid = h5py.h5t.STD_I32LE.copy()
        tid.set_size(16)
        tid.set_precision(128)
        space = h5py.h5s.create(h5py.h5s.SCALAR)
        h5py.h5a.create(d.id, b"i128", tid, space).close()
        d.attrs["ok"] = 5
    rec = _assert_same(path)
    assert "<unreadable:" in rec["arrays"][0]["attrs"]


def test_fast_path_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain file never touches the high-level walk, attributes or netCDF-4 check."""
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "plain"
        g = f.create_group("data")
        g.attrs["run"] = 3
        g.create_dataset("values", data=np.ones((4, 8), "f4"), chunks=(2, 8), compression="gzip")
        g["ids"] = np.arange(4)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("high-level path used")

    expected = dataclasses.asdict(_records(path, False))
    for name in ("_records_slow", "_netcdf4_marked_slow", "_raw_attrs", "_walk", "dataset_row"):
        monkeypatch.setattr(H, name, boom)
    with H.netcdf4_check_in_read():
        rec = get_backend("hdf5").read(str(path))
    got = dataclasses.asdict(rec)
    assert got == expected and [r["name"] for r in rec.arrays] == ["/data/ids", "/data/values"]


def test_switch_off_uses_high_level_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["v"] = np.arange(2)
    monkeypatch.setattr(H, "_FAST", False)
    monkeypatch.setattr(H, "_records_fast", lambda *a: pytest.fail("fast path used"))
    assert get_backend("hdf5").read(str(path)).arrays[0]["name"] == "/v"


def test_memory_types_keep_h5py_metadata_apart() -> None:
    """numpy's dtype equality ignores h5py's metadata: the cached memory types must not."""
    utf8 = h5py.string_dtype("utf-8", 4)
    ascii_ = h5py.string_dtype("ascii", 4)
    assert utf8 == ascii_
    assert H._mtype(utf8).get_cset() != H._mtype(ascii_).get_cset()
    dtypes = [utf8, ascii_, h5py.string_dtype(), h5py.string_dtype("ascii"), h5py.vlen_dtype("i4"),
              h5py.ref_dtype, np.dtype(bool), np.dtype(">f8"), np.dtype("<f8"), np.dtype("c16"),
              h5py.enum_dtype({"A": 0}, basetype="i1")]  # the enum's metadata is unhashable: not cached
    for dt in dtypes * 2:  # the second round from the cache
        assert H._mtype(dt).equal(h5py.h5t.py_create(dt)), dt
    keys = {k for k in H._MTYPES if k[0].kind == "O"}  # vlen str, vlen bytes, vlen int, reference: apart
    assert len(keys) >= 4


def test_bench_like_files_equal(tmp_path: Path) -> None:
    """The many-files benchmark's kind of file (a few attributes, a group, a chunked gzip dataset)."""
    rng = np.random.default_rng(0)
    for i in range(5):
        path = tmp_path / f"hdf5_{i:06d}.h5"
        with h5py.File(path, "w") as f:
            f.attrs.update(index=i, temperature=float(rng.normal(300, 10)), title=f"benchmark file {i}")
            g = f.create_group("data")
            g.attrs["run"] = int(rng.integers(0, 10**6))
            g.create_dataset("values", data=rng.random((16, 32), dtype="f4"), chunks=(8, 16), compression="gzip")
            g["ids"] = np.arange(32, dtype="i4")
        _assert_same(path)
    assert os.path.exists(tmp_path / "hdf5_000000.h5")


def test_damaged_dataset_header_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One byte of a version-1 dataset header overwritten at offsets that (with h5py 3.16 / HDF5 2.0) give:
    an unopenable object (error row via the high-level walk), a dataset whose fast row fails (the high-level
    row for that dataset alone), an unreadable attribute (its marker from the fast reader). Same either way."""
    calls: list[str] = []
    slow_row = H._dataset_row_slow
    monkeypatch.setattr(H, "_dataset_row_slow", lambda *a: calls.append(a[0]) or slow_row(*a))
    outcomes = set()
    for offset in (24, 75, 138, 165, 186, 195):
        path = _corrupt_header(tmp_path, None, "/g/b", offset, b"\xa5")
        fast, slow = _read_both(path, monkeypatch)
        assert fast == slow, offset
        outcomes.add(str(fast))
    assert len(outcomes) > 1


def _dtype_string_before(dt: Any) -> str:
    """dtype_string as it was before its shortcut for plain dtypes."""
    if h5py.check_string_dtype(dt) is not None and dt.kind == "O":
        return "vlen-str"
    base = h5py.check_vlen_dtype(dt)
    if base is not None:
        return f"vlen-{_dtype_string_before(base)}"
    if dt.names and dt.fields is not None:
        return H.dumps([[name, _dtype_string_before(dt.fields[name][0])] for name in dt.names])
    if dt.kind == "O" or dt.subdtype is not None:
        return str(dt)
    return dt.str


def test_dtype_string_shortcut_changes_nothing() -> None:
    dtypes = [np.dtype(x) for x in ["<f4", ">f8", "i1", "u8", "c8", "?", "S5", "U3", "V8", "M8[s]", "m8",
                                    "(2,3)i4", "O", "f2"]]
    dtypes += [h5py.string_dtype(), h5py.string_dtype("ascii", 4), h5py.vlen_dtype(np.dtype("i4")),
               h5py.enum_dtype({"a": 1}, "i1"), h5py.ref_dtype, h5py.regionref_dtype,
               np.dtype([("a", "i4"), ("b", h5py.string_dtype())])]
    for dt in dtypes:
        assert H.dtype_string(dt) == _dtype_string_before(dt), dt
