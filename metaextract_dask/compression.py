"""Compressed single files (gzip, bz2, xz, zstd), recognised by their magic bytes and read through decompression.

The extension never decides (``fsspec.utils.infer_compression`` goes by name): a ``.fits.gz`` that is not
gzip is read as what it is, and a gzip file named ``.dat`` is looked into. One level is undone; what is inside
is sniffed like any file (a ``.tar.gz`` is a ``binary`` row with ``compression = "gzip"``). Output is streamed
to a local file, never held in memory, and stops at ``metaextract.scan.max-decompressed-bytes`` (a
decompression bomb becomes a ``too_large`` row, not a full disk).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from collections.abc import Callable
from typing import IO, Any

from metaextract_dask import config
from metaextract_dask.watchdog import FileAbort

__all__ = ["sniff_compression", "decompress_to", "open_decompressed", "COMPRESSIONS", "max_decompressed_bytes"]

#: Wrappers recognised by content (the ``files.compression`` values).
COMPRESSIONS = ("gzip", "bz2", "xz", "zstd")

_CHUNK = 1 << 20


def sniff_compression(head: bytes) -> str | None:
    """The compression whose magic bytes start `head` (``gzip``, ``bz2``, ``xz``, ``zstd``), or None."""
    if head[:2] == b"\x1f\x8b" and head[2:3] == b"\x08":  # gzip with deflate, the only method in use
        return "gzip"
    if head[:3] == b"BZh" and head[3:4] in b"123456789" and head[4:10] in (b"\x31\x41\x59\x26\x53\x59",
                                                                          b"\x17\x72\x45\x38\x50\x90"):
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return None


def open_decompressed(raw: IO[bytes], kind: str) -> IO[bytes]:
    """A file object giving the decompressed bytes of `raw` (compressed with `kind`)."""
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "bz2":
        return bz2.BZ2File(raw, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    if kind == "zstd":
        try:
            import zstandard
        except ImportError as exc:  # a dependency; a broken install says what to do
            raise ImportError("zstd-compressed files need the 'zstandard' package (pip install zstandard)") from exc
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
    raise ValueError(f"unknown compression {kind!r}")


def max_decompressed_bytes() -> int | None:
    """``metaextract.scan.max-decompressed-bytes`` in bytes (None: no limit)."""
    value = config.get("scan.max-decompressed-bytes", "4GiB")
    return None if value is None else config.parse_bytes(value)


def decompress_to(src: str, kind: str, dst: str, limit: int | None = None,
                  on_head: Callable[[bytes], None] | None = None) -> int:
    """Decompress the file `src` into `dst`, streaming; return the decompressed size.

    Parameters
    ----------
    src, dst : str
        Compressed input, decompressed output (created with mode 0600).
    kind : str
        One of :data:`COMPRESSIONS`.
    limit : int, optional
        Most decompressed bytes allowed; beyond it :class:`~metaextract_dask.watchdog.FileAbort` ``too_large``
        is raised and `dst` removed.
    on_head : callable, optional
        Called with the first decompressed chunk (so a truncated stream still tells what it held).

    Raises
    ------
    EOFError
        A truncated stream (gzip/bz2/xz "ended before the end-of-stream marker").
    """
    total = 0
    ok = False
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as raw, open_decompressed(raw, kind) as stream:
            first = True
            while True:
                # a small first read: a stream truncated early still yields its head (what it held)
                chunk: Any = stream.read(1 << 14 if first else _CHUNK)
                if not chunk:
                    break
                if first and on_head is not None:
                    on_head(bytes(chunk[:65536]))
                first = False
                total += len(chunk)
                if limit is not None and total > limit:
                    raise FileAbort("too_large", f"decompresses to more than {limit:,} bytes "
                                                 f"(metaextract.scan.max-decompressed-bytes); "
                                                 f"{os.path.getsize(src):,} bytes of {kind}")
                out.write(chunk)
        if kind == "zstd" and total == 0 and os.path.getsize(src) > 0:
            _check_zstd_complete(src)
        ok = True
    finally:
        if not ok:
            try:
                os.unlink(dst)
            except OSError:
                pass
    return total


def _check_zstd_complete(src: str) -> None:
    import zstandard

    with open(src, "rb") as f:
        data = f.read(1 << 16)
    params = zstandard.get_frame_parameters(data)
    if params.content_size not in (0, zstandard.CONTENTSIZE_UNKNOWN):
        raise EOFError("zstd stream ended before the frame was complete")
