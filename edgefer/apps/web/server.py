"""The HTTP endpoint of ``edgefer live`` and ``edgefer kiosk``: ``/healthz``, ``/metrics``, the
operator's page (``/``), ``/api/status`` and, only with the preview on, ``/frame.jpg``.

Security, in order of the request: a bounded number of requests in service at once (503
beyond, counted); the token, when one is configured, on every route but ``/healthz`` (bearer
header, or the cookie the page sets from ``/?token=``), compared in constant time (401,
counted); routes matched exactly against a fixed table, so there is no directory listing and
no path to traverse; and headers that forbid framing, foreign scripts and content sniffing.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edgefer.apps.telemetry import Metrics
from edgefer.apps.web.preview import PreviewEncoder
from edgefer.apps.web.status import StatusBoard
from edgefer.errors import ConfigError, OutputError

log = logging.getLogger(__name__)

COOKIE = "edgefer_token"
UNAUTHORIZED = (b"unauthorized: open /?token=TOKEN once in the browser, or send the header "
                b"Authorization: Bearer TOKEN\n")
FRAME_WAIT_S = 2.0  # a /frame.jpg request waits at most this long for a newer frame
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' blob:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/style.css": ("style.css", "text/css; charset=utf-8")}


@dataclass(frozen=True)
class HttpOptions:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9108
    stale_s: float = 10.0  # /healthz fails when no frame was processed for this long
    preview: bool = False  # the page shows the picture; off: everything but pixels
    preview_fps: float = 5.0
    token_env: str = ""  # the environment variable holding the access token; "" = none
    insecure_no_token: bool = False  # allow a non-loopback address without a token
    max_clients: int = 16  # requests in service at once; more get 503

    def __post_init__(self) -> None:
        checks = {"port": (0 <= self.port <= 65535, "a TCP port, 0-65535"),
                  "stale_s": (self.stale_s > 0, "> 0"),
                  "preview_fps": (0 < self.preview_fps <= 10, "in (0, 10]"),
                  "max_clients": (self.max_clients >= 1, ">= 1")}
        for key, (ok, allowed) in checks.items():
            if not ok:
                raise ConfigError(f"http.{key} must be {allowed}, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    kind: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)


NOT_FOUND = Reply(404, b"not found\n")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def resolve_token(options: HttpOptions, environ: Mapping[str, str] | None = None) -> str | None:
    """The access token, or None on loopback without one; a ConfigError where the address is
    reachable from elsewhere and no token is configured (unless explicitly allowed)."""
    environ = os.environ if environ is None else environ
    if options.token_env:
        token = environ.get(options.token_env, "")
        if not token:
            raise ConfigError(f"http.token_env names {options.token_env}, which is not set or empty")
        if not re.fullmatch(r"[A-Za-z0-9._~-]+", token):  # what a cookie and a URL carry as is
            raise ConfigError(f"the token in {options.token_env} may hold only letters, digits "
                              "and . _ ~ - (e.g. `openssl rand -hex 32`)")
        return token
    if not is_loopback(options.host) and not options.insecure_no_token:
        raise ConfigError(f"http.host {options.host} is reachable from other machines: set "
                          "http.token_env (--http-token-env) to the name of a variable holding a "
                          "token, or set http.insecure_no_token (--http-insecure-no-token)")
    return None


def static_files() -> dict[str, bytes]:
    folder = resources.files("edgefer.apps.web") / "static"
    return {name: (folder / name).read_bytes() for name, _ in STATIC.values()}


class WebServer:
    """A context manager serving in a daemon thread; ``beat()`` after every processed frame."""

    def __init__(self, options: HttpOptions, token: str | None, metrics: Metrics,
                 board: StatusBoard, preview: PreviewEncoder | None) -> None:
        self.options = options
        self.metrics = metrics
        self.board = board
        self.preview = preview
        self.last_frame_at = time.monotonic()
        self._token = token.encode() if token else None
        self.slots = threading.BoundedSemaphore(options.max_clients)
        self._files = static_files()
        try:
            self._server = ThreadingHTTPServer((options.host, options.port), _handler(self))
        except OSError as err:
            raise OutputError(f"cannot listen on {options.host}:{options.port}: "
                              f"{err.strerror}") from err
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="edgefer-http")

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def beat(self) -> None:
        self.last_frame_at = time.monotonic()

    def authorized(self, headers: Any, query: dict[str, list[str]]) -> bool:
        if self._token is None:
            return True
        offered = [query.get("token", [""])[0]]
        scheme, _, credentials = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":  # auth schemes are case-insensitive (RFC 7235)
            offered.append(credentials.strip())
        for part in headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                offered.append(value)
        # compare_digest on every candidate, so timing does not reveal which one matched
        return any([self.is_token(o) for o in offered])

    def is_token(self, offered: str) -> bool:
        """Whether ``offered`` is the access token (in constant time)."""
        return self._token is not None and hmac.compare_digest(offered.encode(), self._token)

    def remember_token(self, query: dict[str, list[str]]) -> Reply:
        """The reply to ``/?token=...``: a redirect that drops the token from the address bar,
        storing it as the cookie only when it is the token (a wrong one in a bookmark must not
        replace a good cookie)."""
        offered = query["token"][0]
        headers = {"Location": "/"}
        if self.is_token(offered):
            headers["Set-Cookie"] = f"{COOKIE}={offered}; HttpOnly; SameSite=Strict; Path=/"
        return Reply(303, b"", headers=headers)

    def route(self, path: str, query: dict[str, list[str]]) -> Reply:
        """The reply to an authorized GET."""
        if path == "/metrics":
            return Reply(200, self.metrics.render(), "text/plain; version=0.0.4")
        if path == "/api/status":
            return Reply(200, json.dumps(self.board.snapshot()).encode(), "application/json")
        if path == "/frame.jpg":
            return self.frame(query.get("after", [""])[0])
        if path in STATIC:
            name, kind = STATIC[path]
            return Reply(200, self._files[name], kind)
        return NOT_FOUND

    def frame(self, after: str) -> Reply:
        """The newest JPEG newer than ``after`` (204 if none came in time); 404 without preview."""
        if self.preview is None:
            return NOT_FOUND
        frame = self.preview.frame_after(int(after) if after.isdigit() else 0, FRAME_WAIT_S)
        if frame is None:
            return Reply(204, b"")
        return Reply(200, frame[1], "image/jpeg", {"X-Frame-Seq": str(frame[0])})

    def health(self) -> Reply:
        age = time.monotonic() - self.last_frame_at
        ok = age <= self.options.stale_s
        body = json.dumps({"ok": ok, "seconds_since_frame": round(age, 3)}).encode()
        return Reply(200 if ok else 503, body, "application/json")

    def __enter__(self) -> WebServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(server: WebServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def version_string(self) -> str:  # the Server header: no Python version, no space
            return "edgefer"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            if parts.path == "/healthz":  # for load balancers and probes: no token, no slot
                self._send(server.health())
                return
            if not server.authorized(self.headers, query):
                server.metrics.http_refused.labels(reason="token").inc()
                self._send(Reply(401, UNAUTHORIZED, headers={
                    "WWW-Authenticate": 'Bearer realm="edgefer"'}))
                return
            if parts.path == "/" and "token" in query:
                self._send(server.remember_token(query))
                return
            self._with_slot(lambda: server.route(parts.path, query))

        do_HEAD = do_GET  # the same reply without its body (probes, `curl -I`): see _send

        def _refuse_method(self) -> None:
            self._send(Reply(405, b"method not allowed\n", headers={"Allow": "GET, HEAD"}))

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

        def _with_slot(self, respond: Callable[[], Reply]) -> None:
            if not server.slots.acquire(blocking=False):
                server.metrics.http_refused.labels(reason="busy").inc()
                self._send(Reply(503, b"too many clients\n", headers={"Retry-After": "1"}))
                return
            try:
                self._send(respond())
            finally:
                server.slots.release()

        def _send(self, reply: Reply) -> None:
            self.send_response(reply.status)
            for name, value in {**SECURITY_HEADERS, **reply.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Type", reply.kind)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command == "HEAD":
                return
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the viewer left
                self.wfile.write(reply.body)

    return Handler
