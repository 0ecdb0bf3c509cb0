"""Discovery and size-aware batching."""

from __future__ import annotations

import os

import dask.config
import pytest

from metaextract_dask.discover import Batch, FileEntry, discover, iter_discover, lead_batches, plan_batches


def _entries(sizes: list[int]) -> list[FileEntry]:
    return [FileEntry(f"/f{i}", s, 0) for i, s in enumerate(sizes)]


def test_many_small_files_share_tasks() -> None:
    entries = _entries([1000] * 6000)
    # the default (batch-max-files 800): 2 threads x 4 tasks per thread -> 8 batches of 750; the last round's
    # two go as halves and quarters, so threads end together
    assert [len(b) for b in plan_batches(entries, n_threads=2)] == [750] * 6 + [375, 375, 188, 188, 187, 187]
    with dask.config.set({"metaextract.scan.batch-max-files": 400}):
        batches = plan_batches(entries, n_threads=2)
    # 8 batches of 750 are over batch-max-files (400): 15 needed, and 16 so that both threads get as many
    assert [len(b) for b in batches] == [375] * 14 + [188, 188, 94, 94, 93, 93]
    assert sorted(e.path for b in batches for e in b) == sorted(e.path for e in entries)
    # dealt in runs of neighbours (12 runs of 31-32 files per batch, one per round, turned by one each round),
    # in the order found within each batch
    assert [e.path for e in batches[1][:3]] == ["/f32", "/f33", "/f34"]
    paths = [int(e.path[2:]) for e in batches[1]]
    assert paths == sorted(paths)
    steps = [b - a for a, b in zip(paths, paths[1:])]
    assert sum(1 for d in steps if d > 1) == 11  # 12 runs, each of consecutive files
    assert all(d == 1 or d >= 400 for d in steps)  # the next run is about a round (16 runs, 500 files) further


def test_batches_get_the_same_mix_of_formats() -> None:
    """Long runs of one kind of file (a directory of DICOM, then one of HDF5) are spread over all batches, in
    short runs: each batch gets every kind, within one run (8 runs of ~19 files per batch) of an even share."""
    entries = [FileEntry(f"/{kind}/{i}", 1000, 0) for kind in ("dicom", "hdf5", "nc") for i in range(400)]
    batches = plan_batches(entries, n_threads=2)
    assert [len(b) for b in batches] == [150] * 6 + [75] * 2 + [38, 38, 37, 37]
    for b in batches[:6]:
        kinds = [e.path.split("/")[1] for e in b]
        counts = {k: kinds.count(k) for k in set(kinds)}
        assert set(counts) == {"dicom", "hdf5", "nc"} and max(counts.values()) - min(counts.values()) <= 20
        assert sum(1 for a, c in zip(kinds, kinds[1:]) if a != c) <= 7  # runs, not one file of each in turn


def test_big_files_are_alone_and_bytes_cap_batches() -> None:
    with dask.config.set({"metaextract.scan.big-file-bytes": "100MB", "metaextract.scan.batch-target-bytes": "50MB"}):
        entries = _entries([200_000_000, 1000, 30_000_000, 30_000_000, 1000, 150_000_000])
        batches = plan_batches(entries, n_threads=1)
    singles = [b for b in batches if len(b) == 1 and b[0].size >= 100_000_000]
    assert {b[0].path for b in singles} == {"/f0", "/f5"}
    for b in batches:
        if len(b) > 1:
            assert sum(e.size for e in b) <= 50_000_000
    assert sum(len(b) for b in batches) == 6


def test_few_files_not_split_below_min() -> None:
    batches = plan_batches(_entries([10] * 20), n_threads=8)
    assert [len(b) for b in batches] == [20]
    batches = plan_batches(_entries([10] * 40), n_threads=8)
    assert [len(b) for b in batches] == [20, 20]


def test_discover_zarr_store_is_one_entry(tmp_path) -> None:
    store = tmp_path / "a.zarr"
    (store / "t" / "c").mkdir(parents=True)
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    (store / "t" / "c" / "0").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.bin").write_bytes(b"y" * 7)
    found = {os.path.relpath(e.path, tmp_path): e for e in discover([tmp_path])}
    assert set(found) == {"a.zarr", os.path.join("sub", "f.bin")}
    assert found["a.zarr"].is_dir and found["a.zarr"].size == 100 + len('{"zarr_format": 3, "node_type": "group"}')
    assert found[os.path.join("sub", "f.bin")].size == 7


def test_discover_missing_path_raises(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover([tmp_path / "nope"])


def test_iter_discover_checks_every_input_when_called(tmp_path) -> None:
    (tmp_path / "a.h5").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="missing"):
        iter_discover([tmp_path, tmp_path / "missing"])  # from the call: before a scan opens its catalog
    assert list(iter_discover([tmp_path])) == discover([tmp_path])


def test_lead_batches_cut_neighbours_within_the_limits() -> None:
    entries = [FileEntry(f"/d/{i:03d}{'.h5' if i % 3 else '.dcm'}", 1000, 0) for i in range(130)]
    batches = lead_batches(entries, 2)
    assert [len(b) for b in batches] == [65, 65]
    assert {e.path for e in batches[0]} == {e.path for e in entries[:65]}  # neighbours, in two runs
    suffixes = [os.path.splitext(e.path)[1] for e in batches[0]]
    assert suffixes == sorted(suffixes) and suffixes[0] == ".dcm"  # grouped by suffix
    with dask.config.set({"metaextract.scan.batch-max-files": 50}):
        assert [len(b) for b in lead_batches(entries, 2)] == [50, 50, 30]
    with dask.config.set({"metaextract.scan.big-file-bytes": 5000, "metaextract.scan.batch-target-bytes": 3000}):
        mixed = entries[:10] + [FileEntry("/d/big.h5", 10_000, 0)]
        batches = lead_batches(mixed, 2)
        assert [e.path for e in batches[0]] == ["/d/big.h5"]  # alone
        assert [len(b) for b in batches[1:]] == [3, 3, 3, 1]  # within the bytes target
    assert sorted(e.path for b in lead_batches(entries, 3) for e in b) == sorted(e.path for e in entries)


def test_batches_of_file_entries_pickle_as_columns() -> None:
    import pickle

    entries = [FileEntry(f"/d/f{i}", i, 10**18 + i, i % 2 == 0, "", None if i % 3 else "x", "v") for i in range(50)]
    blob = pickle.dumps(Batch(entries), protocol=5)
    assert b"_from_columns" in blob and b"FileEntry" not in blob  # columns, not one named tuple per entry
    batch = pickle.loads(blob)
    assert len(batch) == 50 and repr(batch) == "Batch(50 items)"
    assert pickle.dumps(batch, protocol=5) == blob  # passed on unchanged (the scheduler), columns kept
    assert list(batch) == entries and all(type(e) is FileEntry for e in batch) and batch[3] == entries[3]
    pairs = Batch([("a", "b"), ("c", "d")])  # other items pickle as they are
    assert list(pickle.loads(pickle.dumps(pairs))) == [("a", "b"), ("c", "d")]
    assert list(pickle.loads(pickle.dumps(Batch([])))) == []


def test_discover_dedups_overlapping_inputs(tmp_path) -> None:
    (tmp_path / "x.bin").write_bytes(b"1")
    assert len(discover([tmp_path, tmp_path / "x.bin"])) == 1


def test_symlinks_not_followed_by_default_and_cycles_terminate(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.bin").write_bytes(b"1")
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # a -> .. -> a -> ...
    os.symlink(tmp_path / "a" / "f.bin", tmp_path / "link.bin")
    # not followed: the links are special entries (catalogued, never opened), the file is read
    found = [(os.path.relpath(e.path, tmp_path), e.kind, e.detail) for e in discover([tmp_path])]
    assert found == [(os.path.join("a", "f.bin"), "", None), (os.path.join("a", "loop"), "symlink", str(tmp_path)),
                     ("link.bin", "symlink", str(tmp_path / "a" / "f.bin"))]
    with dask.config.set({"metaextract.scan.follow-symlinks": True}):
        found = sorted((os.path.relpath(e.path, tmp_path), e.kind) for e in discover([tmp_path]))
    assert found == [(os.path.join("a", "f.bin"), ""), ("link.bin", "")]  # the cycle is walked once


def test_adaptive_chunks_keep_whole_disk_chunks() -> None:
    from metaextract_dask.chunking import adaptive_chunks

    # target below one stored chunk: one stored chunk per task rather than a split
    with dask.config.set({"metaextract.chunk-target": "8KiB"}):
        assert adaptive_chunks((8, 18, 36), "f4", (4, 18, 36)) == ((4, 4), (18,), (36,))
    # ... unless a stored chunk is over the memory cap (10% of 100 KiB here)
    chunks = adaptive_chunks((64, 256, 256), "f4", (64, 256, 256), memory_limit=100 * 2**10)
    assert max(chunks[0]) * max(chunks[1]) * max(chunks[2]) * 4 <= 10 * 2**10
    # large arrays: multiples of the stored chunks, about the target size
    chunks = adaptive_chunks((100, 1000, 1000), "f4", (2, 1000, 1000))
    assert all(c % 2 == 0 for c in chunks[0][:-1]) and max(chunks[0]) * 4e6 <= 128 * 2**20
    assert adaptive_chunks((10, 10), "f8", (5, 5)) == ((10,), (10,))  # small: one chunk


def test_each_batch_reads_its_files_grouped_by_suffix() -> None:
    """A directory of mixed files: every batch gets every kind, and reads them one suffix after another (one
    library at a time), in the order found within a suffix."""
    kinds = (".dcm", ".h5", ".fits", ".nc", "")
    entries = [FileEntry(f"/d{d:02d}/f{i:03d}{kinds[i % 5]}", 1000, 0) for d in range(10) for i in range(100)]
    batches = plan_batches(entries, n_threads=2)
    assert sorted(e.path for b in batches for e in b) == sorted(e.path for e in entries)
    order = {e.path: i for i, e in enumerate(entries)}
    for b in batches:
        suffixes = [os.path.splitext(e.path)[1] for e in b]
        runs = [s for i, s in enumerate(suffixes) if i == 0 or s != suffixes[i - 1]]
        assert sorted(runs) == sorted(set(kinds))  # each suffix once, as one run
        for s in set(suffixes):
            found = [order[e.path] for e in b if os.path.splitext(e.path)[1] == s]
            assert found == sorted(found)
