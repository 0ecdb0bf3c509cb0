"""Remote sources: fsspec URLs, credential-free catalog paths, retries, and a persistent block cache.

Any fsspec URL (``http(s)://``, ``s3://``, ``gs://``, ``memory://``, ...) is accepted where a path is; a
``file://`` URL is a local path. What a scan reads of a remote file goes through :class:`RemoteFile`: a
local *sparse* copy of the file in the cache directory (``metaextract.remote.cache-dir``) plus the list of
blocks (``metaextract.remote.block-size``) it holds. Readers never touch the network: the bytes they need
are fetched first (the whole file when it is small, else the blocks a metadata walk asks for, see
:mod:`metaextract_dask.sources`), then the format library reads the local copy. So the HDF5 lock is never
held during a network wait, and a second scan or profile of an unchanged file (same ETag / Last-Modified /
size) fetches nothing.

Requests are retried with exponential backoff (and jitter) on 429, 5xx, connection resets and timeouts;
404 and other client errors are not retried. URLs written to the catalog, to error messages and to logs
have no userinfo (``user:password@``) and none of the signed-query secrets listed in
:data:`SECRET_PARAMS`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import errno
import hashlib
import json
import os
import random
import re
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from metaextract_dask import config

__all__ = ["is_url", "local_from_url", "redact", "redact_text", "get_fs", "settings", "RemoteFile", "RemoteInfo",
           "remote_info", "fetch_retrying", "SECRET_PARAMS", "RemoteFetchError", "cache_dir", "list_remote",
           "transient_http", "MissingFilesystemError", "find_remote", "glob_remote", "infos", "head_and_info"]

#: Query parameters that carry secrets (pre-signed S3/GCS/Azure URLs, tokens); compared case-insensitively.
SECRET_PARAMS = frozenset(p.lower() for p in (
    "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "Signature", "AWSAccessKeyId", "sig", "token",
    "access_token", "X-Goog-Signature", "X-Goog-Credential", "GoogleAccessId", "api_key", "apikey", "key",
    "password", "secret", "client_secret", "code", "se", "sp", "sv", "skoid", "sktid", "skt", "ske", "sks", "skv"))

_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_GLOB_CHARS = re.compile(r"[*?\[]")


def is_url(path: Any) -> bool:
    """True for a URL with a protocol other than ``file`` (``file://`` URLs are local paths)."""
    if not isinstance(path, str) or "://" not in path:
        return False
    scheme = path.split("://", 1)[0]
    return bool(scheme) and scheme.lower() not in ("file", "local") and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*",
                                                                                      scheme) is not None


def local_from_url(path: str) -> str:
    """The local path of a ``file://`` URL (the input when it is not one)."""
    if isinstance(path, str) and path.lower().startswith(("file://", "local://")):
        from urllib.parse import unquote

        return unquote(urlsplit(path).path)
    return path


def redact(url: str) -> str:
    """`url` without userinfo and without secret query parameters (the text stored in catalogs and logs)."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _URL_RE.sub("<url>", url)
    netloc = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
    query = parts.query
    if query:
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() not in SECRET_PARAMS]
        query = urlencode(kept, safe="/:")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL in `text` (an error message) redacted."""
    if "://" not in text:
        return text
    return _URL_RE.sub(lambda m: redact(m.group(0)), text)


def settings() -> dict[str, Any]:
    """``metaextract.remote`` as plain data (what scan tasks carry to workers that lack the client's config)."""
    return {k.replace("_", "-"): v for k, v in (config.get("remote", {}) or {}).items()}


def _setting(key: str, default: Any) -> Any:
    return config.get(f"remote.{key}", default)


def cache_dir() -> str:
    """The directory of remote bytes and decompressed files (``metaextract.remote.cache-dir``)."""
    path = _setting("cache-dir", None)
    if not path:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "metaextract-dask")
    path = os.path.expanduser(os.fspath(path))
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


# --------------------------------------------------------------------------- #
# filesystems
# --------------------------------------------------------------------------- #
_FS: dict[tuple[str, str], Any] = {}
_FS_LOCK = threading.Lock()


def _storage_options(protocol: str) -> dict[str, Any]:
    # Credentials and other storage options come from fsspec's own configuration (FSSPEC_S3_ANON=true,
    # ~/.config/fsspec/*.json) or the store's usual environment (AWS_*): never from a catalog or our config.
    opts: dict[str, Any] = {}
    if protocol in ("http", "https"):
        import aiohttp

        timeout = config.parse_seconds(_setting("request-timeout", 30))
        client = dict(opts.pop("client_kwargs", {}) or {})
        client.setdefault("timeout", aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout))
        opts["client_kwargs"] = client
        opts.setdefault("skip_instance_cache", True)
    return opts


def get_fs(url: str) -> Any:
    """The fsspec filesystem of `url` (one per protocol and process).

    Raises
    ------
    MissingFilesystemError
        When the protocol's fsspec package is not installed; the message names it (``pip install s3fs``).
    ValueError
        For a protocol fsspec does not know.
    """
    import fsspec
    from fsspec.registry import known_implementations

    protocol = url.split("://", 1)[0].lower()
    key = (protocol, str(os.getpid()))
    with _FS_LOCK:
        fs = _FS.get(key)
        if fs is not None:
            return fs
    if protocol not in known_implementations and protocol not in fsspec.available_protocols():
        raise ValueError(f"unknown URL protocol {protocol!r} in {redact(url)} (fsspec knows: "
                         f"{', '.join(sorted(fsspec.available_protocols())[:40])}, ...)")
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        hint = known_implementations.get(protocol, {}).get("err") or str(exc)
        package = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
                   "abfss": "adlfs", "http": "aiohttp", "https": "aiohttp", "sftp": "paramiko",
                   "ssh": "paramiko"}.get(protocol)
        need = f"the {package!r} package (pip install {package})" if package else "its fsspec package"
        raise MissingFilesystemError(f"{protocol}:// URLs need {need}: {hint}") from None
    del cls
    fs = fsspec.filesystem(protocol, **_storage_options(protocol))
    with _FS_LOCK:
        return _FS.setdefault(key, fs)


# --------------------------------------------------------------------------- #
# retries
# --------------------------------------------------------------------------- #
class MissingFilesystemError(ImportError, ValueError):
    """A URL whose protocol needs an fsspec package that is not installed (the message names it). A
    ValueError too, so the command line reports it as a usage error (exit status 2) with one line."""


class RemoteFetchError(OSError):
    """A request that still failed after its retries (the message says how often it was tried)."""


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    return status if isinstance(status, int) else None


def transient_http(exc: BaseException) -> bool:
    """429 / 5xx answers, connection resets and timeouts: worth another try. 404 and other 4xx are not."""
    if isinstance(exc, FileNotFoundError) and exc.__cause__ is not None and exc.__cause__ is not exc:
        # fsspec's HTTP info turns any failure of its HEAD-then-GET into FileNotFoundError: judge the cause
        return transient_http(exc.__cause__)
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return False
    status = _status(exc)
    if status is not None:
        return status == 429 or status >= 500
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | ConnectionError):
        return True
    try:
        import aiohttp

        if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError
                      | aiohttp.ClientConnectionError | aiohttp.ClientOSError):
            return True
    except ImportError:  # pragma: no cover - aiohttp is a dependency
        pass
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
                                                   errno.EPIPE, errno.ECONNREFUSED, errno.EHOSTUNREACH):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("connection reset", "server disconnected", "timed out", "timeout"))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError) and exc.__cause__ is not None:
        exc = exc.__cause__  # fsspec's HTTP info hides the answer behind FileNotFoundError
    status = _status(exc)
    text = f"HTTP {status}" if status else f"{type(exc).__name__}: {exc}"
    return redact_text(text)


def fetch_retrying(call: Any, what: str, deadline: float | None = None) -> Any:
    """``call()`` with retries on transient failures (``metaextract.remote.retries``, exponential backoff from
    ``retry-backoff`` seconds with jitter), giving up at `deadline` (``time.monotonic()``).

    Raises
    ------
    FileNotFoundError
        404 (never retried).
    RemoteFetchError
        The last failure after every try, or a non-transient one.
    """
    retries = int(_setting("retries", 4))
    backoff = float(_setting("retry-backoff", 0.2))
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            if isinstance(exc, FileNotFoundError) and not transient_http(exc):
                raise FileNotFoundError(errno.ENOENT, f"not found (404): {redact(what)}") from None
            attempt += 1
            if not transient_http(exc):
                raise RemoteFetchError(errno.EIO, f"{_describe(exc)} fetching {redact(what)}") from None
            wait = backoff * 2 ** (attempt - 1) * (0.5 + random.random())
            if attempt > retries or (deadline is not None and time.monotonic() + wait > deadline):
                raise RemoteFetchError(errno.EIO, f"{_describe(exc)} fetching {redact(what)} "
                                                  f"(tried {attempt} times)") from None
            time.sleep(wait)


# --------------------------------------------------------------------------- #
# what the store says about a file
# --------------------------------------------------------------------------- #
class RemoteInfo(tuple):
    """(size, mtime_ns, version): the fingerprint of a remote file; version is its ETag (else Last-Modified)."""

    __slots__ = ()

    def __new__(cls, size: int, mtime_ns: int, version: str | None) -> RemoteInfo:
        return super().__new__(cls, (size, mtime_ns, version))

    size = property(lambda self: self[0])
    mtime_ns = property(lambda self: self[1])
    version = property(lambda self: self[2])


def _mtime_ns(info: dict[str, Any]) -> int:
    for key in ("mtime", "LastModified", "last_modified", "Last-Modified", "created", "updated", "modified"):
        value = info.get(key)
        if value is None:
            continue
        try:
            if isinstance(value, dt.datetime):
                when = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
                return int(when.timestamp() * 1e6) * 1000
            if isinstance(value, int | float):
                return int(value * 1e6) * 1000
            if isinstance(value, str):
                try:
                    when = email.utils.parsedate_to_datetime(value)
                except (TypeError, ValueError):
                    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                if when.tzinfo is None:
                    when = when.replace(tzinfo=dt.timezone.utc)
                return int(when.timestamp() * 1e6) * 1000
        except (TypeError, ValueError, OverflowError):
            continue
    return 0


def _version(info: dict[str, Any]) -> str | None:
    for key in ("ETag", "etag", "e_tag", "VersionId", "generation", "md5", "Content-MD5"):
        value = info.get(key)
        if value:
            return str(value).strip()
    lm = info.get("Last-Modified") or info.get("LastModified")
    return f"last-modified:{lm}" if lm else None


def _to_info(info: dict[str, Any]) -> RemoteInfo:
    size = info.get("size")
    if size is None:
        raise OSError(errno.EIO, "the server does not say the file's size")
    return RemoteInfo(int(size), _mtime_ns(info), _version(info))


_INFO_CACHE: dict[str, tuple[float, RemoteInfo]] = {}


def remote_info(url: str, max_age: float = 60.0) -> RemoteInfo:
    """Size, mtime and version of the remote file at `url` (asked again after `max_age` seconds)."""
    now = time.monotonic()
    hit = _INFO_CACHE.get(url)
    if hit is not None and now - hit[0] < max_age:
        return hit[1]
    fs = get_fs(url)
    info = _to_info(fetch_retrying(lambda: fs.info(url), url))
    _INFO_CACHE[url] = (now, info)
    return info


def _infos(fs: Any, urls: Sequence[str]) -> list[dict[str, Any] | BaseException]:
    """fs.info of many URLs, concurrently where the filesystem is async; failures as exceptions."""
    if not urls:
        return []
    if getattr(fs, "async_impl", False):
        from fsspec.asyn import sync

        async def one(u: str) -> Any:
            for attempt in range(int(_setting("retries", 4)) + 1):
                try:
                    return await fs._info(u)
                except Exception as exc:
                    if not transient_http(exc) or attempt == int(_setting("retries", 4)):
                        return exc
                    await asyncio.sleep(float(_setting("retry-backoff", 0.2)) * 2 ** attempt)
            return OSError("unreachable")

        async def gather(batch: Sequence[str]) -> list[Any]:
            return await asyncio.gather(*(one(u) for u in batch))

        out: list[Any] = []
        step = 256  # requests in flight at once (aiohttp's connector holds 100 connections by default)
        for i in range(0, len(urls), step):
            out.extend(sync(fs.loop, gather, urls[i:i + step]))
        return out
    res: list[dict[str, Any] | BaseException] = []
    for u in urls:
        try:
            res.append(fetch_retrying(lambda u=u: fs.info(u), u))
        except Exception as exc:
            res.append(exc)
    return res


def _child_url(fs: Any, url: str, name: str) -> str | None:
    """The URL of listed entry `name` below directory `url`, spelt as the user spelt `url` (None: not below)."""
    base = fs._strip_protocol(url).rstrip("/")
    stripped = fs._strip_protocol(name).rstrip("/")
    if stripped == base or not stripped.startswith(base + "/"):
        return None  # the directory itself, a parent, or a link elsewhere on the server
    return url.rstrip("/") + stripped[len(base):]


def list_remote(url: str) -> list[tuple[str, bool]]:
    """(url, is_directory) of the entries of a remote directory, sorted by URL."""
    fs = get_fs(url)
    entries = fetch_retrying(lambda: fs.ls(url, detail=True), url)
    out = set()
    for e in entries:
        child = _child_url(fs, url, e["name"])
        if child is not None:
            out.add((child, e.get("type") == "directory"))
    return sorted(out)


def find_remote(url: str) -> list[str]:
    """URLs of every file below a remote directory."""
    fs = get_fs(url)
    found = fetch_retrying(lambda: fs.find(url.rstrip("/") + "/"), url)
    return sorted(c for c in (_child_url(fs, url, p) for p in found) if c is not None)


def is_remote_dir(url: str) -> bool:
    """Is `url` a directory (HTTP: ends with ``/``, or redirects to the same URL with a ``/``, as servers
    answer for a directory named without one; other stores: ask)."""
    if url.split("://", 1)[0].lower() in ("http", "https"):
        if url.endswith("/"):
            return True
        fs = get_fs(url)
        try:
            info = fetch_retrying(lambda: fs.info(url), url)
        except (OSError, ValueError):
            return False  # the read of the file will say what is wrong
        final = urlsplit(str(info.get("url") or "")).path
        return final.endswith("/") and final.rstrip("/") == urlsplit(url).path.rstrip("/")
    fs = get_fs(url)
    try:
        return fetch_retrying(lambda: fs.isdir(url), url)
    except FileNotFoundError:
        return False


def has_glob(url: str) -> bool:
    """Whether the path part of `url` holds glob characters."""
    return bool(_GLOB_CHARS.search(urlsplit(url).path))


def glob_remote(url: str) -> list[str]:
    """URLs of the files matching a glob URL (where the server lists the directories)."""
    fs = get_fs(url)
    found = fetch_retrying(lambda: fs.glob(url), url)
    cut = min(i for i in (urlsplit(url).path.find(c) for c in "*?[") if i >= 0)
    top = url[:url.index(urlsplit(url).path) + cut].rsplit("/", 1)[0]  # the directory above the first wildcard
    out = []
    for p in found:
        child = _child_url(fs, top, p)
        if child is not None:
            out.append(child)
    return sorted(out)


def infos(urls: Sequence[str]) -> list[RemoteInfo | BaseException]:
    """:class:`RemoteInfo` of many URLs of one filesystem, concurrently; failures as exceptions."""
    if not urls:
        return []
    fs = get_fs(urls[0])
    out: list[RemoteInfo | BaseException] = []
    now = time.monotonic()
    for u, info in zip(urls, _infos(fs, urls)):
        if isinstance(info, BaseException):
            out.append(info)
            continue
        try:
            ri = _to_info(info)
        except OSError as exc:
            out.append(exc)
            continue
        _INFO_CACHE[u] = (now, ri)
        out.append(ri)
    return out


def head_and_info(url: str, nbytes: int, deadline: float | None = None) -> tuple[RemoteInfo, bytes | None]:
    """What the store says about `url` and, over HTTP, its first `nbytes` bytes, in one request.

    An HTTP ``GET`` with ``Range: bytes=0-(nbytes-1)`` answers with the file's first bytes *and* its size
    (``Content-Range``), ETag and Last-Modified: a small file is then fetched whole by the request that sizes
    it. Other stores: their ``info`` (the bytes come with the first block fetch); None for the bytes.
    """
    protocol = url.split("://", 1)[0].lower()
    if protocol not in ("http", "https"):
        return remote_info(url, max_age=0), None
    fs = get_fs(url)

    async def get() -> tuple[RemoteInfo | None, bytes]:
        session = await fs.set_session()
        kw = fs.kwargs.copy()
        headers = dict(kw.pop("headers", {}) or {})
        headers.update({"Range": f"bytes=0-{max(nbytes, 1) - 1}", "Accept-Encoding": "identity"})
        async with session.get(fs.encode_url(url), headers=headers, **kw) as r:
            data = await r.read()
            h = r.headers
            size: int | None
            if r.status == 416:  # range not satisfiable: an empty file (its version: asked below)
                return None, b""
            elif r.status == 206 and "/" in h.get("Content-Range", ""):
                total = h["Content-Range"].rsplit("/", 1)[1]
                size = int(total) if total.isdigit() else None
            else:
                fs._raise_not_found_for_status(r, url)  # 404 -> FileNotFoundError; other errors raise
                size = len(data)  # 200: the server sent the whole file
            if size is None:  # "*": the server will not say (asked below)
                return None, data
            info = {"size": size, **{k: h[k] for k in ("ETag", "Last-Modified") if h.get(k)}}
            return _to_info(info), data[:size]

    from fsspec.asyn import sync

    found, data = fetch_retrying(lambda: sync(fs.loop, get), url, deadline)
    if found is None:  # (never inside the event loop: remote_info waits on it)
        info = remote_info(url, max_age=0)
        return info, data[:info.size]
    _INFO_CACHE[url] = (time.monotonic(), found)
    return found, data


# --------------------------------------------------------------------------- #
# the block cache
# --------------------------------------------------------------------------- #
class Miss(Exception):
    """An offline read asked for bytes the local copy does not hold yet (see :meth:`RemoteFile.reader`)."""


class RemoteFile:
    """A remote file's local sparse copy plus the set of blocks it holds, kept in the cache directory.

    Parameters
    ----------
    url : str
        The file's URL (with any credentials; never written anywhere).
    info : RemoteInfo
        Its size and version; the cache key includes both, so a changed file is fetched afresh.
    persist : bool, optional
        Keep the copy for later scans (``metaextract.remote.cache``); False: :meth:`close` deletes it.
    """

    def __init__(self, url: str, info: RemoteInfo, persist: bool | None = None) -> None:
        self.url = url
        self.info = info
        self.size = int(info.size)
        self.block = max(4096, config.parse_bytes(_setting("block-size", "4MiB")))
        self.persist = bool(_setting("cache", True)) if persist is None else persist
        key = hashlib.sha256(f"{redact(url)}\0{info.version}\0{info.size}\0{info.mtime_ns}".encode()).hexdigest()
        directory = os.path.join(cache_dir(), "remote")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, key[:40] + os.path.splitext(urlsplit(redact(url)).path)[1][:12])
        self._blocks_path = self.path + ".blocks.json"
        if self.persist:  # this URL has a copy here: later scans ask for its version before fetching (seen())
            seen = self._seen_path(url)
            if not os.path.exists(seen):
                open(seen, "w").close()
        self.have: set[int] = set()
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._load()

    @staticmethod
    def _seen_path(url: str) -> str:
        digest = hashlib.sha256(redact(url).encode()).hexdigest()[:40]
        return os.path.join(cache_dir(), "remote", f"{digest}.seen")

    @staticmethod
    def seen(url: str) -> bool:
        """True when the cache holds (or held) a copy of some version of `url`: worth asking which version
        the store has now (a HEAD) before fetching anything."""
        return bool(_setting("cache", True)) and os.path.exists(RemoteFile._seen_path(url))

    @property
    def n_blocks(self) -> int:
        """Blocks of the file (the last one may be short)."""
        return max(1, -(-self.size // self.block))

    @property
    def complete(self) -> bool:
        """True when every byte is held locally."""
        return len(self.have) >= self.n_blocks

    def _load(self) -> None:
        try:
            with open(self._blocks_path) as f:
                meta = json.load(f)
            if (meta.get("block") == self.block and meta.get("size") == self.size
                    and os.path.getsize(self.path) == self.size):
                self.have = set(range(self.n_blocks)) if meta.get("complete") else set(meta.get("blocks", []))
        except (OSError, ValueError, TypeError, AttributeError):
            self.have = set()
        if self.size == 0:
            self.have = {0}  # nothing to fetch
        if not self.have or self.size == 0:
            # a sparse file of the right size (holes where nothing is fetched), private to this user; never
            # truncated below its size, should another process be filling the same copy
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size != self.size:
                    os.ftruncate(fd, self.size)
            finally:
                os.close(fd)

    def _save(self) -> None:
        meta = {"url": redact(self.url), "version": self.info.version, "size": self.size, "block": self.block,
                "complete": self.complete, "blocks": [] if self.complete else sorted(self.have)}
        tmp = f"{self._blocks_path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "w") as f:
            json.dump(meta, f)
        os.replace(tmp, self._blocks_path)

    def missing(self, start: int, stop: int) -> list[int]:
        """Blocks of byte range [start, stop) not held locally."""
        stop = min(stop, self.size)
        if stop <= start:
            return []
        return [b for b in range(start // self.block, (stop - 1) // self.block + 1) if b not in self.have]

    def _write(self, offset: int, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def fetch_all(self, deadline: float | None = None) -> None:
        """Fetch the whole file in one request (small files)."""
        if self.complete:
            return
        fs = get_fs(self.url)
        data = fetch_retrying(lambda: fs.cat_file(self.url), self.url, deadline)
        self.requests += 1
        self.bytes += len(data)
        if len(data) != self.size:
            raise RemoteFetchError(errno.EIO, f"the server sent {len(data):,} bytes where it said the file holds "
                                              f"{self.size:,}: {redact(self.url)}")
        self._write(0, data)
        with self._lock:
            self.have = set(range(self.n_blocks))
            self._save()

    def put(self, offset: int, data: bytes) -> None:
        """Bytes fetched otherwise (the head of :func:`head_and_info`): written, and the blocks they cover
        whole are held."""
        if not data or self.complete:
            return
        self._write(offset, data)
        end = min(offset + len(data), self.size)
        whole = [b for b in range(-(-offset // self.block), self.n_blocks)
                 if min((b + 1) * self.block, self.size) <= end]
        if whole:
            self.requests += 1
            self.bytes += len(data)
            with self._lock:
                self.have.update(whole)
                self._save()

    def fetch_blocks(self, blocks: Iterable[int], deadline: float | None = None) -> None:
        """Fetch `blocks` (adjacent ones as one range), all ranges in one concurrent ``cat_ranges`` call."""
        wanted = sorted(set(b for b in blocks if 0 <= b < self.n_blocks) - self.have)
        if not wanted:
            return
        runs: list[list[int]] = []
        for b in wanted:
            if runs and runs[-1][1] == b:
                runs[-1][1] = b + 1
            else:
                runs.append([b, b + 1])
        starts = [r[0] * self.block for r in runs]
        ends = [min(r[1] * self.block, self.size) for r in runs]
        fs = get_fs(self.url)

        def call() -> list[bytes]:
            parts = fs.cat_ranges([self.url] * len(starts), starts, ends, on_error="return")
            for p in parts:
                if isinstance(p, BaseException):
                    raise p
            return parts

        parts = fetch_retrying(call, self.url, deadline)
        self.requests += len(parts)
        for start, end, data in zip(starts, ends, parts):
            if len(data) != end - start:
                raise RemoteFetchError(errno.EIO, f"short read: {len(data):,} of {end - start:,} bytes at "
                                                  f"{start:,} of {redact(self.url)}")
            self.bytes += len(data)
            self._write(start, data)
        with self._lock:
            for r in runs:
                self.have.update(range(r[0], r[1]))
            self._save()

    def ensure(self, start: int, stop: int, deadline: float | None = None) -> None:
        """Make bytes [start, stop) local."""
        self.fetch_blocks(self.missing(start, stop), deadline)

    def pread(self, start: int, n: int, deadline: float | None = None) -> bytes:
        """Bytes [start, start + n) (fewer at the end of the file), fetched first where missing."""
        self.ensure(start, start + n, deadline)
        with open(self.path, "rb") as f:
            f.seek(start)
            return f.read(max(0, min(n, self.size - start)))

    def reader(self, online: bool = False, deadline: float | None = None) -> _BlockReader:
        """A binary file object over the local copy. Offline (default), a read of bytes not held raises
        :class:`Miss` and records the blocks in ``reader.misses`` (no network: usable under a library lock);
        online, missing blocks are fetched."""
        return _BlockReader(self, online, deadline)

    def close(self) -> None:
        """Delete the local copy unless it is kept (``remote.cache``)."""
        if self.persist:
            return
        for p in (self.path, self._blocks_path):
            try:
                os.unlink(p)
            except OSError:
                pass


class _BlockReader:
    """A seekable, read-only binary file object over a :class:`RemoteFile`'s local copy (h5py fileobj, pydicom)."""

    def __init__(self, rf: RemoteFile, online: bool, deadline: float | None) -> None:
        self.rf = rf
        self.online = online
        self.deadline = deadline
        self.pos = 0
        self.misses: set[int] = set()
        self._f = open(rf.path, "rb")
        self.name = redact(rf.url)
        self.closed = False

    def readable(self) -> bool:  # noqa: D102
        return True

    def seekable(self) -> bool:  # noqa: D102
        return True

    def writable(self) -> bool:  # noqa: D102
        return False

    def tell(self) -> int:  # noqa: D102
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:  # noqa: D102
        if whence == 0:
            self.pos = offset
        elif whence == 1:
            self.pos += offset
        else:
            self.pos = self.rf.size + offset
        return self.pos

    def read(self, n: int = -1) -> bytes:  # noqa: D102
        if n is None or n < 0:
            n = self.rf.size - self.pos
        n = max(0, min(n, self.rf.size - self.pos))
        if n == 0:
            return b""
        missing = self.rf.missing(self.pos, self.pos + n)
        if missing:
            if not self.online:
                self.misses.update(missing)
                raise Miss(f"blocks {missing} of {self.name} are not local yet")
            self.rf.fetch_blocks(missing, self.deadline)
        self._f.seek(self.pos)
        data = self._f.read(n)
        self.pos += len(data)
        return data

    def readinto(self, buf: Any) -> int:  # noqa: D102
        data = self.read(len(memoryview(buf).cast("B")))
        memoryview(buf).cast("B")[:len(data)] = data
        return len(data)

    def close(self) -> None:  # noqa: D102
        if not self.closed:
            self._f.close()
            self.closed = True

    def __enter__(self) -> _BlockReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
