"""The HTTP side: /metrics (text or OpenMetrics by content negotiation), a landing page, /-/healthy.

Threaded standard-library server. TLS handshakes run in the request thread (a slow or plain-HTTP
client must not block accept()). Every failure inside a scrape has already become a metric; anything
unexpected here is logged and answered with a short 500 body, never a traceback.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, List, Optional, Tuple, Union

from . import __version__, statuspage
from .exporter import Exporter
from .exposition import negotiate

log = logging.getLogger(__name__)

# A scrape request has no body and a few short headers; anything bigger is not a scrape.
MAX_REQUEST_LINE_BYTES = 8192
MAX_HEADERS = 64
# Subtracted from Prometheus's scrape timeout so the answer is on the wire before it gives up.
SCRAPE_TIMEOUT_MARGIN_S = 0.5
# The body is written in pieces of about this size.
WRITE_BATCH_BYTES = 256 * 1024
# zlib level of gzip-compressed scrapes: Go's default, as node_exporter's promhttp uses. The body is
# mostly repeated metric names and labels, so level 1 loses little size and 6 costs little more CPU
# (bench/bench_scale.py --gzip measures both).
GZIP_LEVEL = 6


def accepts_gzip(accept_encoding: Optional[str]) -> bool:
    """Whether an Accept-Encoding header takes gzip (or any coding) with a q-value above 0."""
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, val = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(val)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


def gzip_chunks(chunks: Iterable[bytes], level: int = GZIP_LEVEL) -> List[bytes]:
    """One gzip stream over the chunks, compressed as they come (no joined copy of the whole body)."""
    z = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 16 + 15: a gzip header and trailer
    out = [z.compress(chunk) for chunk in chunks]
    out.append(z.flush())
    return [c for c in out if c]


def parse_listen_address(address: str) -> Tuple[str, int]:
    """node_exporter's ``[host]:port``: ``:9177`` (all interfaces), ``127.0.0.1:9177``, ``[::1]:9177``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("listen address %r: want [host]:port, e.g. :9177 or 127.0.0.1:9177" % address)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: str, exporter: Exporter, telemetry_path: str = "/metrics",
                 web_config: Any = None, max_requests: int = 40) -> None:
        host, port = parse_listen_address(address)
        self.address_family = socket.AF_INET6 if ":" in host or host == "" else socket.AF_INET
        self.exporter = exporter
        self.telemetry_path = telemetry_path
        self.web_config = web_config
        self.ssl_context: Optional[ssl.SSLContext] = web_config.ssl_context() if web_config else None
        # 0 disables the cap, as node_exporter's --web.max-requests.
        self.scrape_slots = threading.BoundedSemaphore(max_requests) if max_requests > 0 else None
        super().__init__((host, port), ExporterRequestHandler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # ":port" means every interface, IPv4 included.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is not None:
            request.settimeout(10.0)
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
                request.do_handshake()
            except (ssl.SSLError, OSError) as e:
                log.debug("TLS handshake with %s failed: %s", client_address[0], e)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("error serving %s", client_address[0], exc_info=log.isEnabledFor(logging.DEBUG))


class ExporterRequestHandler(BaseHTTPRequestHandler):
    server: ExporterHTTPServer
    raw_requestline: bytes  # set by BaseHTTPRequestHandler.handle_one_request
    server_version = "virt_exporter/" + __version__
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle clients (slowloris) lose their thread after this
    # Headers and body go out as separate writes: with Nagle's algorithm a small last write may wait
    # for the ACK of the one before (Go's net/http, which node_exporter uses, also sets TCP_NODELAY).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def parse_request(self) -> bool:
        if len(self.raw_requestline) > MAX_REQUEST_LINE_BYTES:
            # As the standard library does for lines over 64 KiB: send_error logs these.
            self.requestline, self.request_version, self.command = "", "", ""
            self.close_connection = True
            self.send_error(414)
            return False
        ok = super().parse_request()
        if not ok:
            return False
        if len(self.headers) > MAX_HEADERS:
            self.close_connection = True
            self.send_error(431)
            return False
        length = (self.headers.get("Content-Length") or "0").strip()
        if not length.isdigit():
            self.close_connection = True
            self.send_error(400, "bad Content-Length")
            return False
        if int(length) > 0 or self.headers.get("Transfer-Encoding"):
            # The body is never read: close the connection rather than parse it as the next request.
            self.close_connection = True
            self.send_error(413, "request bodies are not accepted")
            return False
        return True

    def do_GET(self) -> None:
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        except Exception:
            log.exception("unexpected error serving %s", self.path)
            try:
                self._send(500, "text/plain; charset=utf-8", b"internal error, see the exporter's log\n")
            except OSError:
                pass

    def do_HEAD(self) -> None:
        self.do_GET()

    def _route(self) -> None:
        cfg = self.server.web_config
        if cfg is not None:
            if not cfg.allow_request():
                self._send(429, "text/plain; charset=utf-8", b"too many requests\n")
                return
            if not cfg.check_basic_auth(self.headers.get("Authorization")):
                self._send(401, "text/plain; charset=utf-8", b"Unauthorized\n",
                           {"WWW-Authenticate": 'Basic realm="virt_exporter"'})
                return
        path = self.path.split("?", 1)[0]
        if path == self.server.telemetry_path:
            self._metrics()
        elif path == "/":
            self._status_page()
        elif path == "/-/healthy":
            self._send(200, "text/plain; charset=utf-8", b"Healthy\n")
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _status_page(self) -> None:
        """The status page, or its data as JSON for ``Accept: application/json``."""
        view = self.server.exporter.status(self._scrape_timeout_s())
        accept = self.headers.get("Accept") or ""
        if "application/json" in accept and "text/html" not in accept:
            self._send(200, "application/json", statuspage.render_json(view))
            return
        # Only the page's own script runs, whatever a domain name or metadata string holds.
        self._send(200, "text/html; charset=utf-8", statuspage.render_html(view, self.server.telemetry_path),
                   {"Content-Security-Policy": statuspage.CONTENT_SECURITY_POLICY,
                    "X-Content-Type-Options": "nosniff"})

    def _scrape_timeout_s(self) -> Optional[float]:
        header = self.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
        if header:
            try:
                return max(0.1, float(header) - SCRAPE_TIMEOUT_MARGIN_S)
            except ValueError:
                pass
        return None

    def _metrics(self) -> None:
        timeout_s = self._scrape_timeout_s()
        encode, content_type = negotiate(self.headers.get("Accept"))
        scrape = self.server.exporter.scrape(timeout_s)
        # Waiting for a shared in-flight sample does not count against the cap: take it first.
        scrape.prefetch()
        slots = self.server.scrape_slots
        if slots is not None and not slots.acquire(blocking=False):
            self._send(503, "text/plain; charset=utf-8",
                       b"too many concurrent scrapes (--web.max-requests), try again\n")
            return
        headers = {}
        try:
            chunks = encode(scrape.collect())
            if accepts_gzip(self.headers.get("Accept-Encoding")):
                chunks = gzip_chunks(chunks)
                headers = {"Content-Encoding": "gzip"}
        finally:
            if slots is not None:
                slots.release()
        # Caches must not hand a compressed body to a client that did not ask for one.
        headers["Vary"] = "Accept-Encoding"
        self._send(200, content_type, chunks, headers)

    def _send(self, code: int, content_type: str, body: Union[bytes, List[bytes]],
              headers: Optional[dict] = None) -> None:
        chunks = [body] if isinstance(body, bytes) else body
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(len(c) for c in chunks)))
        cfg = self.server.web_config
        for k, v in list((cfg.extra_headers if cfg is not None else {}).items()) + list((headers or {}).items()):
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            # A few large writes, not one per family: each write is a syscall (the stream is
            # unbuffered), and the batch bounds the extra copy at a thousand domains' output.
            batch: List[bytes] = []
            size = 0
            for chunk in chunks:
                batch.append(chunk)
                size += len(chunk)
                if size >= WRITE_BATCH_BYTES:
                    self.wfile.write(b"".join(batch))
                    batch, size = [], 0
            if batch:
                self.wfile.write(b"".join(batch))

