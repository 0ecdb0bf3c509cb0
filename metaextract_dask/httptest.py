"""A real HTTP file server on loopback for tests and benchmarks of remote scans.

``ThreadingHTTPServer`` serving a directory with what object stores and web servers give: ``Range`` requests
(206 + ``Content-Range``), ``ETag`` / ``Last-Modified`` / ``Accept-Ranges`` headers, HEAD, HTML directory
listings (links, directories with a trailing ``/``), keep-alive connections. On top, what real networks do:
a fixed latency added to every request, and faults injected per path (HTTP errors, connection resets, slow
answers). Every request and body byte is counted, per path too, so tests assert what a scan fetched from
the server's own counters.

Example
-------
>>> with HTTPTestServer(root, latency=0.02) as srv:      # doctest: +SKIP
...     srv.add_fault("hdf5/*.h5", ["500", "reset"])       # the next two requests of each such file fail
...     scan([srv.url + "/"], "catalog")
...     srv.requests, srv.bytes_sent
"""

from __future__ import annotations

import email.utils
import fnmatch
import html
import os
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote, urlsplit

__all__ = ["HTTPTestServer"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers: clients reuse connections
    # Headers and body in separate small writes would otherwise meet the client's delayed ACK (Nagle): ~40 ms
    # added to some answers that a real server does not add. Latency is what `latency` says, nothing more.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    # -- helpers ---------------------------------------------------------------------------------------
    @property
    def owner(self) -> HTTPTestServer:
        return self.server.owner  # type: ignore[attr-defined, no-any-return]

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
            self.owner._count_bytes(self._rel, len(body))

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout: close() sends RST, what a crashing proxy or load balancer does
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    # -- methods ---------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802
        self._serve()

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        owner = self.owner
        path = unquote(urlsplit(self.path).path)
        self._rel = path.lstrip("/")
        owner._count_request(self._rel, self.command, self.headers.get("Range"))
        if owner.latency:
            time.sleep(owner.latency)
        fault = owner._next_fault(self._rel)
        if fault is not None:
            if fault == "reset":
                self._reset()
                return
            if fault.startswith("slow:"):
                time.sleep(float(fault[5:]))
            elif fault.isdigit():
                self._send(int(fault), f"injected {fault}".encode())
                return
        local = os.path.realpath(os.path.join(owner.root, self._rel))
        if not (local == owner.root or local.startswith(owner.root + os.sep)) or not os.path.exists(local):
            self._send(404, b"not found")
            return
        if os.path.isdir(local):
            if not path.endswith("/"):
                self._send(301, b"", {"Location": quote(path) + "/"})
                return
            self._listing(local, path)
            return
        self._file(local)

    def _listing(self, local: str, path: str) -> None:
        names = sorted(os.listdir(local))
        links = []
        for name in names:
            href = quote(name) + ("/" if os.path.isdir(os.path.join(local, name)) else "")
            links.append(f'<li><a href="{href}">{html.escape(name)}</a></li>')
        body = (f"<html><head><title>Index of {html.escape(path)}</title></head><body>"
                f"<h1>Index of {html.escape(path)}</h1><ul>{''.join(links)}</ul></body></html>").encode()
        self._send(200, body, {"Content-Type": "text/html; charset=utf-8"})

    def _file(self, local: str) -> None:
        st = os.stat(local)
        size = st.st_size
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{st.st_size:x}-{st.st_mtime_ns:x}"',
                   "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True),
                   "Content-Type": "application/octet-stream"}
        rng = self.headers.get("Range")
        start, end = 0, size  # [start, end)
        status = 200
        if rng and rng.startswith("bytes=") and "," not in rng:
            spec = rng[6:].strip()
            first, _, last = spec.partition("-")
            try:
                if first == "":
                    start, end = max(0, size - int(last)), size
                else:
                    start = int(first)
                    end = min(size, int(last) + 1) if last else size
            except ValueError:
                start, end = 0, size
            else:
                if start >= size or start >= end:
                    self._send(416, b"", {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        if self.command == "HEAD":
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            return
        with open(local, "rb") as f:
            f.seek(start)
            body = f.read(end - start)
        self._send(status, body, headers)


class HTTPTestServer:
    """A file server on 127.0.0.1 (a free port) in a background thread.

    Parameters
    ----------
    root : path
        The directory served at ``url + "/"``.
    latency : float
        Seconds added to every request before it is answered (a network round trip).

    Attributes
    ----------
    url : str
        ``http://127.0.0.1:<port>``.
    requests, bytes_sent : int
        Requests answered (faults included) and body bytes sent, since start or :meth:`reset_counters`.
    by_path : collections.Counter
        Body bytes sent per relative path; ``requests_by_path`` counts requests per path.
    """

    def __init__(self, root: str | os.PathLike[str], latency: float = 0.0) -> None:
        self.root = os.path.realpath(os.fspath(root))
        self.latency = float(latency)
        self._lock = threading.Lock()
        self._faults: list[tuple[str, list[str], bool]] = []
        self.reset_counters()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> HTTPTestServer:
        """Start answering (in a daemon thread)."""
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="metaextract-httptest")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the server and close its socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HTTPTestServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- counters --------------------------------------------------------------------------------------
    def reset_counters(self) -> None:
        """Set the request and byte counters to zero."""
        with self._lock:
            self.requests = 0
            self.bytes_sent = 0
            self.by_path: Counter[str] = Counter()
            self.requests_by_path: Counter[str] = Counter()
            self.methods: Counter[str] = Counter()
            self.ranges = 0

    def _count_request(self, rel: str, method: str, rng: str | None) -> None:
        with self._lock:
            self.requests += 1
            self.requests_by_path[rel] += 1
            self.methods[method] += 1
            if rng:
                self.ranges += 1

    def _count_bytes(self, rel: str, n: int) -> None:
        with self._lock:
            self.bytes_sent += n
            self.by_path[rel] += n

    # -- faults ----------------------------------------------------------------------------------------
    def add_fault(self, pattern: str, actions: list[str], repeat: bool = False) -> None:
        """Inject faults into requests of paths matching `pattern` (a glob on the path relative to the root).

        Each matching request takes the next action of `actions`, per path: ``"500"`` (any status code),
        ``"reset"`` (the connection is reset, no answer), ``"slow:2.5"`` (answer after 2.5 s more), ``"ok"``.
        With `repeat` the actions cycle forever, else each path gets them once and is then served normally.
        """
        with self._lock:
            self._faults.append((pattern, list(actions), repeat))
            self._fault_pos: Counter[tuple[int, str]] = getattr(self, "_fault_pos", Counter())

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self._faults = []
            self._fault_pos = Counter()

    def _next_fault(self, rel: str) -> str | None:
        with self._lock:
            for i, (pattern, actions, repeat) in enumerate(self._faults):
                if not fnmatch.fnmatchcase(rel, pattern):
                    continue
                n = self._fault_pos[(i, rel)]
                if n >= len(actions) and not repeat:
                    continue
                self._fault_pos[(i, rel)] += 1
                action = actions[n % len(actions)]
                return None if action == "ok" else action
        return None
