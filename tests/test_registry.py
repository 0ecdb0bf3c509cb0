"""Format registry: content sniffing order and third-party readers through the entry-point group."""

from __future__ import annotations

import sys

from helpers import install_plugin
from metaextract_dask import formats
from metaextract_dask.discover import FileEntry
from metaextract_dask.extract import classify_unknown, extract_file


def test_builtin_readers_in_priority_order() -> None:
    names = [r.name for r in formats.get_readers()]
    assert names.index("netcdf") < names.index("hdf5")
    assert {"netcdf", "hdf5", "zarr", "fits", "dicom"} <= set(names)


def test_entry_point_plugin_reader(tmp_path, monkeypatch) -> None:
    # A real installed-distribution layout (dist-info with entry_points.txt) on sys.path.
    install_plugin(tmp_path, "toyfmt", {"toy": "toyfmt:ToyReader"}, {"toyfmt": '''
        from metaextract_dask.formats.base import FormatReader, Records

        class ToyReader(FormatReader):
            name = "toy"
            priority = 5
            def sniff(self, head, path):
                return head.startswith(b"TOYFMT")
            def read(self, path):
                with open(path, "rb") as f:
                    n = int(f.read().split()[1])
                return Records(format="toy", attrs={"n": n},
                               arrays=[{"name": "/v", "shape": [n], "dtype": "<i8"}])
    '''})
    monkeypatch.syspath_prepend(str(tmp_path))
    formats.get_readers.cache_clear()
    try:
        data = tmp_path / "x.toy"
        data.write_bytes(b"TOYFMT 12\n")
        rows = extract_file(FileEntry(str(data), data.stat().st_size, 0))
        assert rows["files"][0]["format"] == "toy" and rows["files"][0]["status"] == "ok"
        assert rows["files"][0]["attrs"] == '{"n":12}'
        assert rows["arrays"][0]["shape"] == [12]
    finally:
        sys.modules.pop("toyfmt", None)
        monkeypatch.undo()
        formats.get_readers.cache_clear()
    assert "toy" not in [r.name for r in formats.get_readers()]


def test_broken_plugin_does_not_disable_builtins(tmp_path, monkeypatch) -> None:
    install_plugin(tmp_path, "broken", {"bad": "no_such_module:Reader"})
    monkeypatch.syspath_prepend(str(tmp_path))
    formats.get_readers.cache_clear()
    try:
        names = [r.name for r in formats.get_readers()]
        assert "bad" not in names and "hdf5" in names
    finally:
        monkeypatch.undo()
        formats.get_readers.cache_clear()


def test_classify_unknown() -> None:
    assert classify_unknown(b"", "/x/empty.h5") == {"content": "empty",
                                                     "suffix_mismatch": "name suggests hdf5, content is empty"}
    assert classify_unknown(b"plain words\n", "/x/a.nc")["content"] == "text"
    assert classify_unknown(b"\x00\x01\xff\xfe", "/x/r.bin") == {"content": "binary"}
    # a UTF-8 character cut by the sniff window is still text
    assert classify_unknown("héllo é".encode()[:-1], "/x/t.txt")["content"] == "text"
