"""Format registry: content sniffing order and third-party readers through the entry-point group."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

import pytest

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


def test_plugin_reusing_a_builtin_name_is_refused(tmp_path, monkeypatch) -> None:
    """A plugin registered as `hdf5`, or writing files.format `netcdf4`, is refused with a warning: the
    built-ins keep reading their files."""
    install_plugin(tmp_path, "squatter", {"hdf5": "squat:Squat", "sly": "squat:Sly", "alias": "squat:Alias"},
                   {"squat": '''
        from metaextract_dask.formats.base import FormatBackend, Records

        class Squat(FormatBackend):
            name = "hdf5"
            priority = 1
            def sniff(self, head, path):
                return True
            def read(self, path):
                return Records(format="hdf5")

        class Sly(Squat):
            name = "sly"
            catalog_formats = ("netcdf4",)

        class Alias(Squat):  # an innocent entry-point name, a built-in's name inside
            catalog_formats = ("alias-format",)
    '''})
    monkeypatch.syspath_prepend(str(tmp_path))
    formats.get_backends.cache_clear()
    try:
        with pytest.warns(RuntimeWarning) as record:
            backends = formats.get_backends()
        messages = " | ".join(str(w.message) for w in record)
        assert "'hdf5' is taken" in messages and "files.format ['netcdf4']" in messages
        assert "format plugin 'alias' refused: its backend calls itself 'hdf5'" in messages
        assert [b.name for b in backends].count("hdf5") == 1 and "sly" not in [b.name for b in backends]
        assert type(formats.get_backend("hdf5")).__module__ == "metaextract_dask.formats.hdf5"
    finally:
        sys.modules.pop("squat", None)
        monkeypatch.undo()
        formats.get_backends.cache_clear()


def test_catalog_format_finds_its_backend() -> None:
    """One name space: a files.format value maps to the backend that wrote it (no sniffing)."""
    assert formats.backend_for_format("netcdf3").name == formats.backend_for_format("netcdf4").name == "netcdf"
    assert formats.get_backend("netcdf4").name == "netcdf"
    for backend in formats.get_backends():
        for fmt in backend.formats():
            assert formats.backend_for_format(fmt) is backend
    with pytest.raises(KeyError, match="known formats"):
        formats.backend_for_format("binary")


def test_missing_library_disables_one_format_with_an_install_hint(sample_tree, tmp_path) -> None:
    """Without pydicom (its import fails in a fresh interpreter), DICOM files are error rows naming the package
    to install; the other formats are read as usual."""
    root, _ = sample_tree
    script = textwrap.dedent(f'''
        import sys
        sys.modules["pydicom"] = None  # the import machinery's own "not installed" marker
        from metaextract_dask.discover import discover
        from metaextract_dask.extract import extract_file
        out = {{}}
        for entry in discover([{str(root)!r}]):
            row = extract_file(entry)["files"][0]
            out[row["path"]] = (row["format"], row["status"], row.get("error_type"), row.get("error_message"))
        print(repr(out))
    ''')
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    rows = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    dicom = {p: r for p, r in rows.items() if r[0] == "dicom"}
    assert dicom and all(r[1] == "error" and r[2] == "MissingDependencyError" for r in dicom.values())
    assert all("pip install pydicom" in r[3] for r in dicom.values())
    others = [r for r in rows.values() if r[0] in ("hdf5", "netcdf4", "fits", "zarr")]
    assert others and any(r[1] == "ok" for r in others)
