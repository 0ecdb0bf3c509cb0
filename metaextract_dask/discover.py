"""Find the files to scan and pack them into size-aware batches.

Besides regular files and Zarr stores, discovery reports what it does not read, so that a catalog says
what was left out: *special* entries (FIFOs, sockets, devices, symbolic links that are not followed or lead
nowhere) and directories that could not be listed. Both are :class:`FileEntry` objects with a ``kind``; the
scan records them as rows without ever opening them.

File names are kept as the operating system gives them (``str`` with surrogate escapes for bytes that are
not UTF-8, as :func:`os.fsdecode` makes them); :func:`encode_path` turns such a name into the text stored in
the catalog and :func:`decode_path` turns it back.
"""

from __future__ import annotations

import errno
import fnmatch
import math
import operator
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from metaextract_dask import config
from metaextract_dask.formats.zarr import is_zarr_store

__all__ = ["FileEntry", "Batch", "discover", "iter_discover", "plan_batches", "lead_batches", "encode_path",
           "decode_path", "is_utf8_path", "SPECIAL_KINDS", "DIRECTORY_KIND", "IGNORE_FILE", "PathFilter"]

#: ``kind`` of special entries (catalogued as ``format = "special"``, never opened).
SPECIAL_KINDS = ("fifo", "socket", "char-device", "block-device", "symlink", "symlink-dangling", "symlink-loop",
                 "other")
#: ``kind`` of a directory that could not be listed (catalogued as ``format = "directory"``, an error row).
DIRECTORY_KIND = "directory"

#: A directory's ignore file: glob patterns, one a line (``#`` comments), of names in that directory that
#: scans leave out; the file itself is never catalogued. The sample generator writes one for its manifest.
IGNORE_FILE = ".metaextract-ignore"

_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


def is_utf8_path(path: str) -> bool:
    """True when `path` (as the OS gives it) is valid UTF-8, i.e. holds no surrogate escapes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encode_path(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    r"""The catalog text of an OS path: bytes that are not UTF-8 written ``\xNN``, a backslash ``\\``.

    The catalog's ``path`` columns are UTF-8 strings, while POSIX file names are arbitrary bytes. Each byte
    that is not part of valid UTF-8 is written as the backslash escape ``\xNN`` (two lower-case hex digits,
    as Python prints bytes) and a backslash itself is doubled; everything else is kept. The text is thus
    the OS path itself for every UTF-8 name without a backslash (such catalog paths open as they are), and
    :func:`decode_path` reverses it exactly, as does any decoder of Python bytes-literal escapes
    (``codecs.escape_decode(text.encode())[0]`` gives the raw bytes).

    Parameters
    ----------
    path : str, bytes or path-like
        A path as the OS gives it (``str`` with surrogate escapes, or ``bytes``).

    Returns
    -------
    str
        Valid UTF-8 text; `path` itself (the same object) when nothing needs escaping.
    """
    text = path if isinstance(path, str) else os.fsdecode(path)
    if "\\" not in text and (text.isascii() or is_utf8_path(text)):
        return text  # the common case: nothing to escape
    # Undecodable bytes are surrogate escapes U+DC80..U+DCFF after fsdecode; going through the bytes also
    # covers a lone surrogate of another origin (written as its three escaped bytes).
    out: list[str] = []
    for ch in os.fsencode(text).decode("utf-8", "surrogateescape"):
        if ch == "\\":
            out.append("\\\\")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def decode_path(text: str) -> str:
    r"""The OS path of a catalog ``path`` value (the inverse of :func:`encode_path`).

    Returns a ``str`` that ``open``, ``os.stat``, h5py and friends accept (bytes that are not UTF-8 as
    surrogate escapes); ``os.fsencode(decode_path(p))`` gives the raw bytes. A backslash followed by
    neither ``\`` nor ``xNN`` is kept as it is.
    """
    if "\\" not in text:
        return text
    raw = bytearray()
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            if text[i + 1] == "\\":
                raw += b"\\"
                i += 2
                continue
            if text[i + 1] == "x" and i + 3 < n and text[i + 2] in _HEXDIGITS and text[i + 3] in _HEXDIGITS:
                raw.append(int(text[i + 2:i + 4], 16))
                i += 4
                continue
        raw += ch.encode("utf-8", "surrogateescape")
        i += 1
    return os.fsdecode(bytes(raw))


class Batch(Sequence[Any]):
    """A batch of items (file entries, path pairs) travelling to a dask task as one opaque argument.

    ``Client.submit`` walks list and tuple arguments element by element looking for futures: for a batch of
    FileEntry named tuples that cost the client ~0.17 ms a file, on the core the workers need. This sequence
    is not a list, so dask passes it as it is.

    A batch of :class:`FileEntry` pickles as columns (one tuple per field), not as named tuples: pickle calls
    back into Python for every named tuple, both ways, and a task's arguments are pickled by the client,
    unpickled and pickled again by the scheduler and unpickled by the worker (measured for 375 entries: pickled
    in 0.66 ms as named tuples, 0.21 ms as columns; unpickled in 0.21 and 0.11 ms). Unpickled, the batch keeps
    its columns until its items are first used, so the scheduler passes them on as they came.
    """

    __slots__ = ("_items", "_columns")

    def __init__(self, items: Iterable[Any]) -> None:
        self._items: list[Any] | None = list(items)
        self._columns: tuple[tuple[Any, ...], ...] | None = None

    @classmethod
    def _from_columns(cls, columns: tuple[tuple[Any, ...], ...]) -> Batch:
        batch = cls.__new__(cls)
        batch._items, batch._columns = None, columns
        return batch

    @property
    def items(self) -> list[Any]:
        """The items (file entries made from the columns on first use)."""
        if self._items is None:
            assert self._columns is not None
            new = tuple.__new__  # a FileEntry from all its fields, without the named tuple's Python-level __new__
            self._items = [new(FileEntry, row) for row in zip(*self._columns)]
            self._columns = None
        return self._items

    def __getitem__(self, index: Any) -> Any:
        return self.items[index]

    def __len__(self) -> int:
        return len(self._columns[0]) if self._columns is not None else len(self.items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __reduce__(self) -> tuple[Any, ...]:
        if self._columns is not None:
            return (Batch._from_columns, (self._columns,))
        items = self.items
        if items and all(type(e) is FileEntry for e in items):
            return (Batch._from_columns, (tuple(zip(*items)),))
        return (Batch, (items,))

    def __repr__(self) -> str:
        return f"Batch({len(self)} items)"


class FileEntry(NamedTuple):
    """A file (or a Zarr directory store) found by :func:`discover`; plain data, cheap to pickle.

    ``path`` is the OS path (read files through it); ``catalog_path`` is its text in the catalog. ``kind``
    is empty for what is read, one of :data:`SPECIAL_KINDS` for special entries, or :data:`DIRECTORY_KIND`
    for a directory that could not be listed; ``detail`` holds a symbolic link's target or the listing
    error (``"PermissionError: [Errno 13] Permission denied"``).
    """

    path: str
    size: int
    mtime_ns: int  # integer nanoseconds: exact, so fingerprints compare equal across runs
    is_dir: bool = False
    kind: str = ""
    detail: str | None = None
    version: str | None = None  # remote files: the ETag (else Last-Modified) the store gave


    @property
    def mtime_us(self) -> int:
        """Modification time in microseconds since the epoch (the catalog's resolution)."""
        return self.mtime_ns // 1000

    @property
    def catalog_path(self) -> str:
        """The path as stored in the catalog (:func:`encode_path`; URLs without credentials)."""
        if "://" in self.path:
            from metaextract_dask.remote import redact

            return encode_path(redact(self.path))
        return encode_path(self.path)

    @property
    def special(self) -> bool:
        """True for entries that are recorded but never opened (special files, unlisted directories)."""
        return bool(self.kind)


def _store_entry(path: str) -> FileEntry:
    # A Zarr store is one catalog entry: its size is the sum of its files, its mtime the newest of them.
    size, mtime = 0, os.stat(path).st_mtime_ns
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):  # a FIFO or device in a store has no size to add
                size += st.st_size
            mtime = max(mtime, st.st_mtime_ns)
    return FileEntry(path, size, mtime, True)


def _mode_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "char-device"
    if stat.S_ISBLK(mode):
        return "block-device"
    return "other"


def _special_entry(entry: os.DirEntry[str], follow_symlinks: bool) -> FileEntry:
    """An entry that is neither a regular file nor a directory (once symlinks are followed, if they are)."""
    lst = entry.stat(follow_symlinks=False)
    if entry.is_symlink():
        try:
            target: str | None = os.readlink(entry.path)
        except OSError:
            target = None
        if not follow_symlinks:
            return FileEntry(entry.path, lst.st_size, lst.st_mtime_ns, False, "symlink", target)
        try:
            st = entry.stat(follow_symlinks=True)
        except FileNotFoundError:
            return FileEntry(entry.path, lst.st_size, lst.st_mtime_ns, False, "symlink-dangling", target)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return FileEntry(entry.path, lst.st_size, lst.st_mtime_ns, False, "symlink-loop", target)
            raise
        return FileEntry(entry.path, st.st_size, st.st_mtime_ns, False, _mode_kind(st.st_mode), target)
    return FileEntry(entry.path, lst.st_size, lst.st_mtime_ns, False, _mode_kind(lst.st_mode))


class PathFilter:
    """Include / exclude glob patterns for the files a directory walk finds.

    A pattern without ``/`` is matched against an entry's name, one with ``/`` against its path relative
    to the scanned directory (``/``-separated; ``*`` matches across ``/`` too, as in :mod:`fnmatch`).
    With `include` patterns only files (and Zarr stores) matching one of them are kept; an entry matching
    an `exclude` pattern is left out, and a directory matching one is not walked at all.

    Parameters
    ----------
    include, exclude : sequence of str
        Glob patterns (default ``metaextract.scan.include`` / ``metaextract.scan.exclude``).
    """

    def __init__(self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> None:
        include = config.get("scan.include", None) if include is None else include
        exclude = config.get("scan.exclude", None) if exclude is None else exclude
        include, exclude = ([p] if isinstance(p, str) else p for p in (include, exclude))
        for p in [*(include or ()), *(exclude or ())]:
            if not isinstance(p, str) or not p:
                raise ValueError(f"include/exclude patterns must be non-empty strings, not {p!r}")
        self.include = tuple(include or ())
        self.exclude = tuple(exclude or ())

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    @staticmethod
    def _match(patterns: tuple[str, ...], rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(rel if "/" in p else name, p.strip("/") if "/" in p else p)
                   for p in patterns)

    def keep_dir(self, rel: str) -> bool:
        """Walk the directory at `rel` (relative to the scanned directory)?"""
        return not self._match(self.exclude, rel)

    def keep_file(self, rel: str) -> bool:
        """Catalogue the file (or store, or special entry) at `rel`?"""
        if self.include and not self._match(self.include, rel):
            return False
        return not self._match(self.exclude, rel)


def _ignored_names(top: str, names: list[str]) -> list[str]:
    """The patterns of `top`'s ignore file (none if it has none or it cannot be read)."""
    if IGNORE_FILE not in names:
        return []
    try:
        with open(os.path.join(top, IGNORE_FILE), encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f]
    except OSError:
        return []
    return [line for line in lines if line and not line.startswith("#")] + [IGNORE_FILE]


_name = operator.attrgetter("name")


class _Walker:
    def __init__(self, follow_symlinks: bool, exclude: set[tuple[int, int]],
                 patterns: PathFilter | None = None) -> None:
        self.follow = follow_symlinks
        self.exclude = exclude
        self.patterns = patterns if patterns else None
        self.exclude_inodes = {ino for _dev, ino in exclude}
        self.seen_dirs: set[tuple[int, int]] = set()

    def walk(self, top: str, rel: str = "") -> Iterator[FileEntry]:
        if self.follow:  # a symlink cycle must not walk forever: visit each directory once
            st = os.stat(top)
            key = (st.st_dev, st.st_ino)
            if key in self.seen_dirs or key in self.exclude:
                return
            self.seen_dirs.add(key)
        try:
            with os.scandir(top) as it:
                entries = sorted(it, key=_name)
        except (FileNotFoundError, NotADirectoryError):
            return  # vanished since it was listed: its files are gone too
        except OSError as exc:
            # Unlistable (permissions, I/O error): an error row, and the scan keeps the rows it has of the
            # files below, rather than taking them for deleted.
            try:
                mtime = os.lstat(top).st_mtime_ns
            except OSError:
                mtime = 0
            yield FileEntry(top, 0, mtime, True, DIRECTORY_KIND,
                            f"{type(exc).__name__}: {exc.strerror or exc}")
            return
        follow = self.follow
        ignored = _ignored_names(top, [e.name for e in entries])
        patterns = self.patterns
        exclude_inodes = self.exclude_inodes
        sub = ""
        for entry in entries:
            if ignored and any(fnmatch.fnmatchcase(entry.name, p) for p in ignored):
                continue
            if patterns is not None:
                sub = f"{rel}/{entry.name}" if rel else entry.name
            try:
                try:
                    is_dir = entry.is_dir(follow_symlinks=follow)
                    is_file = not is_dir and entry.is_file(follow_symlinks=follow)
                except OSError:  # a symlink that loops (ELOOP) when followed: a special entry below
                    is_dir = is_file = False
                if is_dir:
                    # The catalog being written is not scanned: inode from the listing, device checked on a
                    # match only (no extra syscall per directory). With symlinks followed, walk() checks.
                    if entry.inode() in self.exclude_inodes and not follow:
                        st = entry.stat(follow_symlinks=False)
                        if (st.st_dev, st.st_ino) in self.exclude:
                            continue
                    if is_zarr_store(entry.path):
                        if patterns is None or patterns.keep_file(sub):
                            yield _store_entry(entry.path)
                    elif patterns is None or patterns.keep_dir(sub):
                        yield from self.walk(entry.path, sub)
                elif patterns is not None and not patterns.keep_file(sub):
                    continue
                elif is_file:
                    st = entry.stat(follow_symlinks=follow)
                    # an SQLite catalog (and its WAL) being written
                    if st.st_ino in exclude_inodes and (st.st_dev, st.st_ino) in self.exclude:
                        continue
                    yield FileEntry(entry.path, st.st_size, st.st_mtime_ns)
                else:
                    yield _special_entry(entry, follow)
            except OSError:
                continue  # vanished directory entry; a file that vanishes later is an error row


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _inside(path: str, dirs: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == d or real.startswith(d.rstrip(os.sep) + os.sep) for d in dirs)


def discover(paths: Iterable[str | os.PathLike[str]], *, follow_symlinks: bool | None = None,
             exclude: Iterable[str | os.PathLike[str]] = (), patterns: PathFilter | None = None,
             remote_sizes: bool = True) -> list[FileEntry]:
    """List the files under `paths` (files, directories, Zarr stores), depth first in name order.

    The list of :func:`iter_discover` (same parameters).

    Special entries (FIFOs, sockets, devices; symbolic links when `follow_symlinks` is off, dangling or
    looping ones when it is on) and directories that cannot be listed are returned too, with their
    ``kind`` set (see :class:`FileEntry`). Paths given explicitly are always followed.

    Parameters
    ----------
    paths : iterable of path
        Files, directories and Zarr stores; fsspec URLs (``https://host/dir/``, ``s3://bucket/prefix/``,
        globs such as ``https://host/files/*.nc``) too, ``file://`` URLs as local paths.
    follow_symlinks : bool, optional
        Default ``metaextract.scan.follow-symlinks``.
    exclude : iterable of path
        Directories and files left out wherever they appear, however they are reached (symlink, relative
        path): the catalog a scan writes (a directory, or an SQLite database and its WAL files).
    patterns : PathFilter, optional
        Include / exclude glob patterns for what the walk of a directory finds (default: the
        ``metaextract.scan.include`` / ``exclude`` settings). Paths given explicitly are always kept. Names
        listed in a directory's :data:`IGNORE_FILE` are left out in any case.
    remote_sizes : bool, default True
        Ask the store about every remote file a listing or glob finds (size, mtime, version). False leaves
        them unsized (``size == -1``, :data:`metaextract_dask.sources.UNSIZED`): scans ask in their tasks.

    Raises
    ------
    FileNotFoundError
        If one of `paths` does not exist (a user error, unlike a file that fails to read).
    """
    return list(iter_discover(paths, follow_symlinks=follow_symlinks, exclude=exclude, patterns=patterns,
                              remote_sizes=remote_sizes))


def iter_discover(paths: Iterable[str | os.PathLike[str]], *, follow_symlinks: bool | None = None,
                  exclude: Iterable[str | os.PathLike[str]] = (), patterns: PathFilter | None = None,
                  remote_sizes: bool = True) -> Iterator[FileEntry]:
    """The entries of :func:`discover` one at a time, as the walk finds them.

    Every local input path is checked here, before the walk begins: a missing one raises ``FileNotFoundError``
    from this call, not from the iteration. A scan reads the first files while a long walk goes on (see
    :func:`metaextract_dask.scan.scan`).
    """
    from metaextract_dask.remote import is_url, local_from_url

    paths = [os.fspath(p) for p in paths]
    for raw in paths:  # a user error, raised before anything is walked or written
        text = local_from_url(raw)
        if not is_url(text) and not os.path.exists(os.path.abspath(text)):
            raise FileNotFoundError(f"input path does not exist: {raw}")
    if follow_symlinks is None:
        follow_symlinks = bool(config.get("scan.follow-symlinks", False))
    return _walk_inputs(paths, follow_symlinks, [os.fspath(p) for p in exclude], patterns, remote_sizes)


def _walk_inputs(paths: list[str], follow_symlinks: bool, excluded: list[str], patterns: PathFilter | None,
                 remote_sizes: bool) -> Iterator[FileEntry]:
    from metaextract_dask.remote import is_url, local_from_url

    identities = {i for i in map(_identity, excluded) if i is not None}
    excluded_real = [os.path.realpath(p) for p in excluded if os.path.isdir(p)]
    walker = _Walker(follow_symlinks, identities, PathFilter() if patterns is None else patterns)
    seen: set[str] = set()
    if any("://" in p for p in paths):  # many file URLs: their HEADs at once, not one after another
        from metaextract_dask.sources import prime_infos

        prime_infos(paths)
    for raw in paths:
        text = local_from_url(raw)
        if is_url(text):  # fsspec URLs: listed by the store (metaextract_dask.sources)
            from metaextract_dask.sources import discover_url

            for entry in discover_url(text, walker.patterns or PathFilter([], []), sized=remote_sizes):
                if entry.path not in seen:
                    seen.add(entry.path)
                    yield entry
            continue
        path = os.path.abspath(text)
        if excluded_real and _inside(path, excluded_real):
            continue
        found: Iterable[FileEntry]
        if os.path.isdir(path):
            found = [_store_entry(path)] if is_zarr_store(path) else walker.walk(path)
        else:
            st = os.stat(path)
            kind = "" if stat.S_ISREG(st.st_mode) else _mode_kind(st.st_mode)
            found = [FileEntry(path, st.st_size, st.st_mtime_ns, False, kind)]
        for entry in found:
            if entry.path not in seen:  # overlapping inputs are scanned once
                seen.add(entry.path)
                yield entry


#: plan_batches deals small files in runs of neighbours: at least this many runs per batch (a batch's mix of
#: formats is then near the whole scan's, so batches take about equal times) ...
RUNS_PER_BATCH = 8
#: ... and runs of at most this many files.
RUN_FILES = 32
#: Each batch reads its files grouped by name suffix: one library after another, not in turns (the same
#: batches cost ~8 % less CPU so in one process, ~2 % in scans; BENCHMARKS.md).
GROUP_BY_SUFFIX = True


def plan_batches(entries: list[FileEntry], n_threads: int = 1) -> list[list[FileEntry]]:
    """Pack entries into batches: many small files per task, each big file alone.

    Small files are dealt into batches of equal length: as many as it takes to keep each within
    ``scan.batch-max-files`` files and ``scan.batch-target-bytes`` bytes, at least ``scan.tasks-per-thread``
    per worker thread while that leaves ``scan.batch-min-files`` files in each (per-task overhead would
    dominate below it), and a multiple of the thread count where that allows.

    Dealt in short runs of neighbours (at least :data:`RUNS_PER_BATCH` runs per batch, of at most
    :data:`RUN_FILES` files), not cut in long runs and not one file at a time. A long run of one directory holds
    one kind of file (all the DICOM, then all the HDF5) and per-file costs differ fourfold between formats, so
    batches cut in long runs took unequal times and left threads idle in the last round. Dealt one file at a
    time, neighbours in a batch were files far apart in the walk, and the workers spent ~13 % more CPU on the
    same files (measured: scans of 6,000 mixed small files in 20 batches, BENCHMARKS.md). The last round's
    batches are split further (a half and two quarters), so that threads finish together. Each batch reads its
    files grouped by name suffix (``.dcm``, ``.h5``, none, ...), in the order found within a suffix: switching
    libraries from one file to the next costs too (:data:`GROUP_BY_SUFFIX`).
    """
    big, target_bytes, max_files = _batch_limits()
    min_files = int(config.get("scan.batch-min-files", 16))
    per_thread = int(config.get("scan.tasks-per-thread", 4))
    threads = max(1, n_threads)

    small = [e for e in entries if e.size < big]  # (remote files listed unsized count as small)
    batches: list[list[FileEntry]] = [[e] for e in entries if e.size >= big]
    if not small:
        return batches
    n = len(small)
    total = sum(max(e.size, 0) for e in small)
    count = max(1, math.ceil(n / max_files), math.ceil(total / max(1, target_bytes)),
                min(threads * per_thread, n // max(1, min_files)))
    rounded = math.ceil(count / threads) * threads
    if n // rounded >= min_files:
        count = rounded
    dealt: list[list[FileEntry]] = [[] for _ in range(count)]
    per_batch = n / count
    runs = count * max(1, min(int(per_batch), max(RUNS_PER_BATCH, math.ceil(per_batch / RUN_FILES))))
    # Run j holds files i with j <= i*runs/n < j+1 and goes to batch (j + j // count) % count: one run per batch
    # in each round of `count`, turned by one each round (runs of unequal length spread over the batches).
    if total <= target_bytes:  # no batch can outgrow its bytes: whole runs at once
        for j in range(runs):
            dealt[(j + j // count) % count] += small[-(-j * n // runs):-(-(j + 1) * n // runs)]
    else:
        filled = [0] * count
        for i, entry in enumerate(small):
            j = i * runs // n
            k = (j + j // count) % count
            size = max(entry.size, 0)
            if dealt[k] and filled[k] + size > target_bytes:  # uneven sizes: this one's bytes are spent
                batches.append(dealt[k])
                dealt[k], filled[k] = [], 0
            dealt[k].append(entry)
            filled[k] += size
    dealt = [b for b in dealt if b]
    # The last round ends unevenly by up to a batch: its batches go as a half and two quarters (dealt again,
    # the same mix), run last, so the threads finish within a quarter batch of each other (eighths as well:
    # 2 more tasks, no faster, BENCHMARKS.md).
    if len(dealt) >= 2 * threads and len(dealt[-1]) >= 4 * max(1, min_files):
        tail = dealt[-threads:]
        dealt = dealt[:-threads] + [b[0::2] for b in tail] + [b[1::4] for b in tail] + [b[3::4] for b in tail]
    if GROUP_BY_SUFFIX:  # a stable sort: the order found stays within a suffix
        dealt = [sorted(b, key=_suffix) for b in dealt]
    batches.extend(dealt)
    return batches


def lead_batches(entries: list[FileEntry], n: int) -> list[list[FileEntry]]:
    """Cut files in the order found into `n` batches of neighbours, for threads to start on at once.

    A scan's first tasks are cut this way from what the walk has found so far, so that the workers read
    while the walk goes on (:func:`plan_batches` needs every file to balance the batches). Big files go
    alone; a batch stays within ``scan.batch-max-files`` and ``scan.batch-target-bytes`` (so there may be more
    than `n`).
    """
    big, target_bytes, max_files = _batch_limits()
    batches: list[list[FileEntry]] = [[e] for e in entries if e.size >= big]
    small = [e for e in entries if e.size < big]
    if small:
        per = min(max_files, max(1, math.ceil(len(small) / max(1, n - len(batches)))))
        current: list[FileEntry] = []
        filled = 0
        for e in small:
            size = max(e.size, 0)
            if current and (len(current) >= per or filled + size > target_bytes):
                batches.append(current)
                current, filled = [], 0
            current.append(e)
            filled += size
        batches.append(current)
    return [sorted(b, key=_suffix) for b in batches] if GROUP_BY_SUFFIX else batches


def _batch_limits() -> tuple[int, int, int]:
    """``(scan.big-file-bytes, scan.batch-target-bytes, scan.batch-max-files)``."""
    return (config.parse_bytes(config.get("scan.big-file-bytes", "512MiB")),
            config.parse_bytes(config.get("scan.batch-target-bytes", "256MiB")),
            int(config.get("scan.batch-max-files", 800)))


def _suffix(entry: FileEntry) -> str:
    """``os.path.splitext(path)[1].lower()`` of the path without trailing slashes, in a few string calls (a
    scan's planning sorts every batch by it)."""
    path = entry.path
    if path.endswith("/"):
        path = path.rstrip("/")
    dot = path.rfind(".")
    start = path.rfind("/") + 1
    if dot <= start or not path[start:dot].strip("."):  # no dot in the name, or only leading dots
        return ""
    return path[dot:].lower()
