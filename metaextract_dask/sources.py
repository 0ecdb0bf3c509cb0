"""What a reader reads: a local path for every input, whether local, remote (fsspec URL) or compressed.

The format backends read local paths. This module turns every other input into one before a reader runs:

* a **remote file** (:func:`prepare_remote`) becomes the local sparse copy of :class:`~metaextract_dask.remote.
  RemoteFile` holding the bytes its reader needs: the whole file when it is small
  (``metaextract.remote.whole-file-bytes``), else the head block plus the blocks a metadata walk asks for
  (HDF5/netCDF-4: every object header and attribute, walked by h5py *offline*: a read of a block not yet held
  fails, the block is fetched outside the HDF5 lock and the walk runs again; FITS: each header, found by the
  header chain; DICOM: everything before the pixel data). Network waits never happen under a library lock.
  Many files of a batch are prepared at once by a thread pool (``metaextract.remote.concurrency``), so a scan
  task has many requests in flight while it reads the files already fetched.
* a **compressed file** (gzip, bz2, xz, zstd; by content) is decompressed into a temporary file (scans) or into
  the cache (arrays and profiles, :func:`local_path`), and the reader reads that.
* a **remote Zarr store** becomes a local mirror of its metadata files.

:func:`discover_url` lists URLs (directories where the server lists them, globs) into
:class:`~metaextract_dask.discover.FileEntry` objects carrying each file's size, mtime and version (ETag).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from metaextract_dask import config, remote
from metaextract_dask.compression import decompress_to, max_decompressed_bytes, sniff_compression
from metaextract_dask.discover import FileEntry, PathFilter, IGNORE_FILE
from metaextract_dask.formats.zarr import ZARR_MARKERS
from metaextract_dask.watchdog import FileAbort

__all__ = ["Source", "open_source", "read_head", "prepare_remote", "prefetching", "discover_url", "local_path",
           "remote_stamp", "Prepared", "prime_infos", "UNSIZED"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_FITS_BLOCK = 2880


@dataclass
class Source:
    """A file as its reader sees it: a local `path`, its first bytes, and how it was reached."""

    path: str
    head: bytes
    compression: str | None = None
    uncompressed_bytes: int | None = None
    version: str | None = None
    remote_file: remote.RemoteFile | None = None  # the sparse copy, when it may lack bytes a reader wants
    info: remote.RemoteInfo | None = None  # size, mtime and version of an entry listed unsized
    _cleanup: list[Any] = field(default_factory=list)

    def read(self, backend: Any) -> Any:
        """``backend.read(path)``; a failure on a partial copy of a remote file is tried again once on the
        whole file (what the metadata walk fetched was not all the library wanted)."""
        try:
            return backend.read(self.path)
        except Exception:
            rf = self.remote_file
            if rf is None or rf.complete or rf.size > config.parse_bytes(
                    config.get("remote.whole-file-fallback-bytes", "1GiB")):
                raise
        rf.fetch_all()
        return backend.read(self.path)


@dataclass
class Prepared:
    """A remote file made local by :func:`prepare_remote`."""

    path: str
    remote_file: remote.RemoteFile | None
    version: str | None
    info: remote.RemoteInfo | None = None  # what the store said, when it was asked here


def _deadline() -> float | None:
    timeout = config.get("scan.file-timeout", None)
    return None if not timeout else time.monotonic() + config.parse_seconds(timeout)


def _check(deadline: float | None, url: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise FileAbort("timeout", f"fetching took longer than scan.file-timeout: {remote.redact(url)}")


# --------------------------------------------------------------------------- #
# metadata walks (what readers will read, fetched before they run)
# --------------------------------------------------------------------------- #
def _touch_hdf5(f: Any) -> None:
    """Read everything the HDF5 and netCDF backends (and netCDF-C's open) read: every object header, every
    attribute value, links and attributes in creation order, dataset creation properties, dimension scales."""
    import h5py

    def touch_attrs(obj: Any) -> None:
        for key in list(obj.attrs):
            try:
                obj.attrs[key]
            except Exception:
                pass
        with contextlib.suppress(Exception):
            h5py.h5a.iterate(obj.id, lambda *a: None, index_type=h5py.h5.INDEX_CRT_ORDER)

    def touch_links(group: Any) -> None:
        with contextlib.suppress(Exception):
            group.id.links.iterate(lambda *a: None, idx_type=h5py.h5.INDEX_CRT_ORDER)

    touch_attrs(f)
    touch_links(f)
    names: list[str] = []
    f.visit(names.append)
    for name in names:
        try:
            obj = f[name]
        except Exception:
            continue
        touch_attrs(obj)
        if isinstance(obj, h5py.Group):
            touch_links(obj)
            continue
        if not isinstance(obj, h5py.Dataset):
            continue
        with contextlib.suppress(Exception):
            obj.dtype, obj.shape, obj.chunks  # noqa: B018
            dcpl = obj.id.get_create_plist()
            for i in range(dcpl.get_nfilters()):
                dcpl.get_filter(i)
            if dcpl.fill_value_defined() == h5py.h5d.FILL_VALUE_USER_DEFINED:
                obj.fillvalue  # noqa: B018
            obj.id.get_offset()
        with contextlib.suppress(Exception):
            if obj.ndim == 1:
                h5py.h5ds.is_scale(obj.id)
            for dim in obj.dims:
                dim.label  # noqa: B018
                if len(dim):
                    dim[0].name  # noqa: B018


def _prefetch_hdf5(rf: remote.RemoteFile, deadline: float | None) -> None:
    """Offline h5py walks over the local copy, fetching (outside the lock) the blocks each walk missed."""
    import h5py

    from metaextract_dask.formats.handles import HDF5_LOCK

    for _ in range(256):
        _check(deadline, rf.url)
        reader = rf.reader(online=False)
        try:
            with HDF5_LOCK, h5py.File(reader, "r") as f:
                _touch_hdf5(f)
            return
        except Exception:
            if not reader.misses:
                return  # not a missing block: the reader will report the problem from the local copy
        finally:
            reader.close()
        # the block asked for plus the next one: metadata written together tends to sit together
        more = {b + 1 for b in reader.misses}
        rf.fetch_blocks(reader.misses | more, deadline)


def _card_value(card: bytes) -> str:
    return card[10:80].split(b"/", 1)[0].strip().decode("ascii", "replace").strip("'").strip()


def _prefetch_fits(rf: remote.RemoteFile, deadline: float | None) -> None:
    """Every header of the FITS file, found by walking the HDU chain (each data unit is skipped by its size)."""
    offset = 0
    while offset + _FITS_BLOCK <= rf.size:
        cards: dict[str, str] = {}
        end = False
        while not end and offset + _FITS_BLOCK <= rf.size:
            _check(deadline, rf.url)
            block = rf.pread(offset, _FITS_BLOCK, deadline)
            offset += _FITS_BLOCK
            for i in range(0, _FITS_BLOCK, 80):
                card = block[i:i + 80]
                key = card[:8].strip().decode("ascii", "replace")
                if key == "END":
                    end = True
                    break
                if card[8:10] == b"= " and key not in cards:
                    cards[key] = _card_value(card)
        if not end:
            return
        try:
            bitpix = abs(int(cards.get("BITPIX", "8")))
            naxis = int(cards.get("NAXIS", "0"))
            dims = [int(cards.get(f"NAXIS{i}", "0")) for i in range(1, naxis + 1)]
            groups = cards.get("GROUPS", "F").upper().startswith("T")
            if groups and dims and dims[0] == 0:
                dims = dims[1:]
            size = 1
            for d in dims:
                size *= d
            if not dims:
                size = 0
            size = bitpix // 8 * int(cards.get("GCOUNT", "1")) * (int(cards.get("PCOUNT", "0")) + size)
        except ValueError:
            return  # a header astropy will complain about: what was fetched is all it gets to see
        offset += -(-size // _FITS_BLOCK) * _FITS_BLOCK


def _prefetch_dicom(rf: remote.RemoteFile, deadline: float | None) -> None:
    """Everything pydicom reads before the pixel data (read through the block cache, fetching as it goes)."""
    import pydicom

    with rf.reader(online=True, deadline=deadline) as reader, contextlib.suppress(Exception):
        pydicom.dcmread(reader, stop_before_pixels=True, force=True)


def prepare_remote(entry: FileEntry, sniff_bytes: int = 1024) -> Prepared:
    """Make the remote file (or Zarr store) of `entry` local, fetching only what its reader needs.

    Raises
    ------
    FileNotFoundError
        404.
    metaextract_dask.remote.RemoteFetchError
        Still failing after the retries.
    """
    deadline = _deadline()
    if entry.is_dir:
        return Prepared(_mirror_zarr(entry, deadline), None, entry.version)
    whole = config.parse_bytes(config.get("remote.whole-file-bytes", "4MiB"))
    first: bytes | None = None
    if entry.detail is not None or entry.size < 0:
        # not asked about when listed (or the store did not answer then): ask now, over HTTP with the same
        # request that fetches the file's first bytes (all of a small file), unless the cache has had a copy
        # (then only the version is asked: an unchanged file is not fetched again). Raises if it still fails.
        if remote.RemoteFile.seen(entry.path):
            info = remote.remote_info(entry.path, max_age=0)
        else:
            info, first = remote.head_and_info(entry.path, whole, deadline)
    else:
        info = remote.RemoteInfo(entry.size, entry.mtime_ns, entry.version)
    rf = remote.RemoteFile(entry.path, info)
    if first is not None:
        rf.put(0, first)
    if rf.size <= whole:
        rf.fetch_all(deadline)
    elif not rf.complete:
        rf.ensure(0, max(sniff_bytes, 1), deadline)  # the head block: sniffing and most headers
        head = rf.pread(0, sniff_bytes, deadline)
        if sniff_compression(head):
            rf.fetch_all(deadline)  # a compressed stream is read from its start to its end
        elif any(head[o:o + 8] == _HDF5_MAGIC for o in (0, 512, 1024, 2048, 4096)):
            _prefetch_hdf5(rf, deadline)
        elif head.startswith(b"SIMPLE  ="):
            _prefetch_fits(rf, deadline)
        elif head[128:132] == b"DICM":
            _prefetch_dicom(rf, deadline)
        # netCDF-3: the header is at the start (the head block); anything else: the head is all a reader needs
    return Prepared(rf.path, rf, info.version, info)


def _mirror_zarr(entry: FileEntry, deadline: float | None) -> str:
    """A local copy of a remote Zarr store's metadata files (its chunks are never fetched by a scan)."""
    url = entry.path.rstrip("/")
    key = hashlib.sha256(f"{remote.redact(url)}\0{entry.size}\0{entry.mtime_ns}".encode()).hexdigest()[:40]
    dest = os.path.join(remote.cache_dir(), "zarr", key)
    done = dest + ".complete"
    if os.path.exists(done):
        return dest
    tmp = tempfile.mkdtemp(dir=os.path.dirname(dest) if os.path.isdir(os.path.dirname(dest)) else
                           _mkdir(os.path.dirname(dest)), prefix=".tmp-")
    fs = remote.get_fs(url)
    todo = [(url, "")]
    while todo:
        here, rel = todo.pop()
        _check(deadline, url)
        entries = remote.list_remote(here + "/")
        names = {u.rsplit("/", 1)[-1]: (u, d) for u, d in entries}
        os.makedirs(os.path.join(tmp, rel), exist_ok=True)
        kind = None
        for marker in (*ZARR_MARKERS, ".zattrs"):
            if marker in names and not names[marker][1]:
                data = remote.fetch_retrying(lambda u=names[marker][0]: fs.cat_file(u), names[marker][0], deadline)
                with open(os.path.join(tmp, rel, marker), "wb") as f:
                    f.write(data)
                if marker == ".zarray":
                    kind = "array"
                elif marker == "zarr.json":
                    try:
                        kind = json.loads(data).get("node_type")
                    except (ValueError, AttributeError):
                        kind = "broken"
        if kind in ("array", "broken"):
            continue  # arrays hold chunks, not nodes
        todo.extend((u, f"{rel}/{n}" if rel else n) for n, (u, d) in names.items() if d)
    if os.path.exists(dest):
        shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    open(done, "w").close()
    return dest


def _mkdir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


# --------------------------------------------------------------------------- #
# per-batch prefetching: many files in flight per scan task
# --------------------------------------------------------------------------- #
_PREPARED: dict[str, Future[Prepared]] = {}
_PREPARED_LOCK = threading.Lock()


@contextlib.contextmanager
def prefetching(entries: Sequence[FileEntry], sniff_bytes: int = 1024) -> Iterator[None]:
    """Prepare the remote entries of a batch in a thread pool while the batch is read (in order).

    :func:`open_source` takes each file's prepared copy (waiting for it if need be). Network waits overlap
    with each other and with the reading of files already fetched; the thread pool never holds a library
    lock while it waits.
    """
    todo = [e for e in entries if remote.is_url(e.path) and not e.special]
    if not todo:
        yield
        return
    pool = ThreadPoolExecutor(max_workers=max(1, int(config.get("remote.concurrency", 16))),
                              thread_name_prefix="metaextract-fetch")
    # (the pool's threads read dask.config, where the task has put its settings; pinned values are per thread)
    with _PREPARED_LOCK:
        for e in todo:
            _PREPARED[e.path] = pool.submit(prepare_remote, e, sniff_bytes)
    try:
        yield
    finally:
        with _PREPARED_LOCK:
            for e in todo:
                fut = _PREPARED.pop(e.path, None)
                if fut is not None:
                    fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _prepared(entry: FileEntry, sniff_bytes: int) -> Prepared:
    with _PREPARED_LOCK:
        fut = _PREPARED.pop(entry.path, None)  # a retry of the same file prepares it afresh
    if fut is None:
        return prepare_remote(entry, sniff_bytes)
    return fut.result()


def read_head(path: str, nbytes: int) -> bytes:
    """The first `nbytes` bytes of a file (fewer if it is shorter), unbuffered: a Python file object costs
    more than the read on a small file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    try:
        head = os.read(fd, nbytes)
        while 0 < len(head) < nbytes:  # a short read (a network file system): ask for the rest
            more = os.read(fd, nbytes - len(head))
            if not more:
                break
            head += more
        return head
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_source(entry: FileEntry, sniff_bytes: int = 1024) -> Iterator[Source]:
    """The :class:`Source` a reader reads for `entry`: the file itself, its local copy, or its content
    decompressed into a temporary file (deleted on exit)."""
    rf: remote.RemoteFile | None = None
    version = entry.version
    path = entry.path
    info: remote.RemoteInfo | None = None
    if remote.is_url(entry.path):
        prepared = _prepared(entry, sniff_bytes)
        path, rf, version = prepared.path, prepared.remote_file, prepared.version
        info = prepared.info if entry.size < 0 else None
    if entry.is_dir:
        yield Source(path, b"", version=version)
        return
    head = read_head(path, sniff_bytes)
    kind = sniff_compression(head)
    if kind is None:
        try:
            yield Source(path, head, version=version, remote_file=None if rf is None or rf.complete else rf,
                         info=info)
        finally:
            if rf is not None:
                rf.close()
        return
    if rf is not None and not rf.complete:
        rf.fetch_all(_deadline())
    tmpdir = _mkdir(os.path.join(remote.cache_dir(), "tmp"))
    fd, tmp = tempfile.mkstemp(dir=tmpdir, prefix="decompressed-")
    os.close(fd)
    inner_head: list[bytes] = []
    try:
        try:
            total = decompress_to(path, kind, tmp, max_decompressed_bytes(), on_head=inner_head.append)
        except (Exception, FileAbort) as exc:
            exc.inner_head = inner_head[0][:sniff_bytes] if inner_head else b""  # type: ignore[attr-defined]
            exc.compression = kind  # type: ignore[attr-defined]
            raise
        with open(tmp, "rb") as f:
            inner = f.read(sniff_bytes)
        yield Source(tmp, inner, compression=kind, uncompressed_bytes=total, version=version, info=info)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if rf is not None:
            rf.close()


# --------------------------------------------------------------------------- #
# discovery of URLs
# --------------------------------------------------------------------------- #
def _entry(url: str, info: remote.RemoteInfo, is_dir: bool = False) -> FileEntry:
    return FileEntry(url, int(info.size), int(info.mtime_ns), is_dir, version=info.version)


def _zarr_store_entry(url: str) -> FileEntry:
    """A remote Zarr store: size the sum of its files, mtime the newest (one ``info`` per file)."""
    urls = remote.find_remote(url)
    size = mtime = 0
    for info in remote.infos(urls):
        if isinstance(info, BaseException):
            continue
        size += info.size
        mtime = max(mtime, info.mtime_ns)
    return FileEntry(url.rstrip("/"), size, mtime, True)


class _Store(str):
    """The URL of a Zarr store found by a walk (sized later, many at once)."""


def _walk_url(url: str, patterns: PathFilter, rel: str = "",
              listing: list[tuple[str, bool]] | None = None) -> Iterator[FileEntry | str]:
    """Entries below a remote directory: files as URLs and Zarr stores as :class:`_Store` (both sized later,
    many at once), unlisted directories as entries. Each directory is listed once (`listing`: its entries,
    when the caller has them)."""
    import fnmatch

    from metaextract_dask.discover import DIRECTORY_KIND

    if listing is None:
        try:
            listing = remote.list_remote(url.rstrip("/") + "/")
        except Exception as exc:
            yield FileEntry(url.rstrip("/"), 0, 0, True, DIRECTORY_KIND,
                            f"{type(exc).__name__}: {remote.redact_text(str(exc))}")
            return
    names = {u.rsplit("/", 1)[-1] for u, _ in listing}
    ignored: list[str] = []
    if IGNORE_FILE in names:
        try:
            fs = remote.get_fs(url)
            text = remote.fetch_retrying(lambda: fs.cat_file(url.rstrip("/") + "/" + IGNORE_FILE), url)
            ignored = [ln.strip() for ln in text.decode("utf-8", "replace").splitlines()
                       if ln.strip() and not ln.strip().startswith("#")]
        except Exception:
            ignored = []
        ignored.append(IGNORE_FILE)
    for child, is_dir in listing:
        name = child.rsplit("/", 1)[-1]
        if any(fnmatch.fnmatchcase(name, p) for p in ignored):
            continue
        sub = f"{rel}/{name}" if rel else name
        if is_dir:
            try:
                inner = remote.list_remote(child + "/")
            except Exception as exc:
                yield FileEntry(child, 0, 0, True, DIRECTORY_KIND,
                                f"{type(exc).__name__}: {remote.redact_text(str(exc))}")
                continue
            if {u.rsplit("/", 1)[-1] for u, d in inner if not d} & set(ZARR_MARKERS):
                if not patterns or patterns.keep_file(sub):
                    yield _Store(child)
            elif not patterns or patterns.keep_dir(sub):
                yield from _walk_url(child, patterns, sub, inner)
        elif not patterns or patterns.keep_file(sub):
            yield child


def prime_infos(paths: Sequence[str]) -> None:
    """Ask the stores about many plain file URLs at once (concurrently), so that :func:`discover_url` of each
    finds the answer cached. Failures are left for :func:`discover_url` to meet (and report) itself."""
    by_protocol: dict[str, list[str]] = {}
    for p in paths:
        if remote.is_url(p) and not remote.has_glob(p) and not p.endswith("/"):
            by_protocol.setdefault(p.split("://", 1)[0].lower(), []).append(p)
    for urls in by_protocol.values():
        if len(urls) > 1:
            with contextlib.suppress(Exception):
                remote.infos(urls)


#: ``FileEntry.size`` of a listed remote file not asked about yet (``discover(..., remote_sizes=False)``): the
#: scan task that reads it asks the store (in parallel with its other files), and its row gets what it says.
UNSIZED = -1


def discover_url(url: str, patterns: PathFilter | None = None, sized: bool = True) -> list[FileEntry]:
    """The files of a URL: a file, a directory the server lists (walked, Zarr stores as one entry each), or a
    glob. A listed file the server will not describe (404, a server error after the retries) is still an
    entry (size 0): its read fails and it becomes an error row, so nothing found is lost.

    With `sized` false, the files a listing or glob finds are not asked about here: their size is
    :data:`UNSIZED` (scans ask in their tasks, many at once, instead of one client asking about every file).

    Raises
    ------
    FileNotFoundError
        If the URL itself does not exist (a user error, as for a local path).
    """
    patterns = patterns if patterns is not None else PathFilter()
    found: list[FileEntry | str] = []
    if remote.has_glob(url):
        found = list(remote.glob_remote(url))
    elif remote.is_remote_dir(url):
        try:
            listing = remote.list_remote(url.rstrip("/") + "/")
        except FileNotFoundError:
            raise FileNotFoundError(f"input URL does not exist: {remote.redact(url)}") from None
        except (OSError, ValueError) as exc:
            if isinstance(exc, remote.MissingFilesystemError):
                raise
            from metaextract_dask.discover import DIRECTORY_KIND

            # as for a local directory that cannot be listed: an error row, and the rows below it are kept
            return [FileEntry(url.rstrip("/"), 0, 0, True, DIRECTORY_KIND,
                              f"{type(exc).__name__}: {remote.redact_text(str(exc))}")]
        names = {u.rsplit("/", 1)[-1] for u, d in listing if not d}
        if names & set(ZARR_MARKERS):
            return [_zarr_store_entry(url)]
        found = list(_walk_url(url, patterns, "", listing))
    else:
        try:
            info = remote.remote_info(url, max_age=2.0)  # fresh: a re-scan must see a changed file
        except FileNotFoundError:
            raise FileNotFoundError(f"input URL does not exist: {remote.redact(url)}") from None
        except (OSError, ValueError) as exc:
            if isinstance(exc, remote.MissingFilesystemError):
                raise
            # unreachable, or failing after the retries: an error row (its read says why), not a crash
            return [FileEntry(url, 0, 0, detail=f"{type(exc).__name__}: {remote.redact_text(str(exc))}")]
        return [_entry(url, info)]
    urls = [f for f in found if isinstance(f, str) and not isinstance(f, _Store)]
    if not sized:
        infos: dict[str, Any] = {u: None for u in urls}
    else:
        infos = dict(zip(urls, remote.infos(urls)))
    stores = [f for f in found if isinstance(f, _Store)]
    if stores:  # each store is a listing walk and many HEADs: several stores at once
        with ThreadPoolExecutor(max_workers=min(16, len(stores))) as pool:
            sized = dict(zip(stores, pool.map(_zarr_store_entry, stores)))
    out: list[FileEntry] = []
    for f in found:
        if isinstance(f, _Store):
            out.append(sized[f])
            continue
        if not isinstance(f, str):
            out.append(f)
            continue
        info = infos[f]
        if info is None:
            out.append(FileEntry(f, UNSIZED, 0))
        elif isinstance(info, BaseException):
            # listed but not answerable: an entry all the same (its read asks again, and says why if it
            # still fails), never dropped
            out.append(FileEntry(f, 0, 0, detail=f"{type(info).__name__}: {remote.redact_text(str(info))}"))
        else:
            out.append(_entry(f, info))
    return out


# --------------------------------------------------------------------------- #
# arrays and profiles: a whole local file
# --------------------------------------------------------------------------- #
_LOCAL: dict[tuple[str, Any], str] = {}
_LOCAL_LOCK = threading.Lock()


def remote_stamp(url: str) -> tuple[int, int]:
    """The handle-cache stamp of a URL: (hash of its version and mtime, size), from ``info``."""
    info = remote.remote_info(url)
    return hash((info.version, info.mtime_ns)) & 0x7FFFFFFFFFFFFFFF, info.size


def local_path(path: str) -> str:
    """A local path holding the whole content of `path`: the path itself for a plain local file or directory,
    the cached copy of a remote file (fetched whole, once per version), the cached decompressed content of a
    compressed file (once per version). Used where libraries read arrays (handle caches, ``open_array``)."""
    path = remote.local_from_url(path)
    url = remote.is_url(path)
    if url:
        info = remote.remote_info(path)
        key: Any = ("url", info)
    else:
        try:
            st = os.stat(path)
        except OSError:
            return path  # the reader says what is wrong
        if not os.path.isfile(path):
            return path
        key = ("file", st.st_mtime_ns, st.st_size)
    with _LOCAL_LOCK:
        hit = _LOCAL.get((path, key))
    if hit is not None and os.path.exists(hit):
        return hit
    source = path
    if url:
        rf = remote.RemoteFile(path, info, persist=True)
        rf.fetch_all(None)
        source = rf.path
    with open(source, "rb") as f:
        kind = sniff_compression(f.read(16))
    out = source
    if kind is not None:
        digest = hashlib.sha256(f"{remote.redact(path)}\0{key}".encode()).hexdigest()[:40]
        out = os.path.join(_mkdir(os.path.join(remote.cache_dir(), "decompressed")), digest)
        if not os.path.exists(out):
            tmp = f"{out}.{os.getpid()}.{threading.get_ident()}.tmp"
            decompress_to(source, kind, tmp, max_decompressed_bytes())
            os.replace(tmp, out)
    with _LOCAL_LOCK:
        _LOCAL[(path, key)] = out
    return out


def needs_local(path: Any) -> bool:
    """True when `path` may not be a plain local file (a URL; compression is found by :func:`local_path`)."""
    return isinstance(path, str) and "://" in path
