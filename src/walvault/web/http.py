"""A small HTTP/1.1 server on asyncio for ``/``, ``/metrics`` and ``/api/status``.

Only what a browser and a Prometheus scraper need: ``GET`` and ``HEAD``, one request per
connection (``Connection: close``), a bounded request head (16 KiB) that must arrive
within 10 seconds, so a slow or silent client never holds the service's loop.  Anything
else is answered with the proper status (400, 404, 405, 413, 421).

On a loopback address the ``Host`` header must name a loopback host (``127.0.0.1``,
``localhost``, ``[::1]``): a web page elsewhere that rebinds its own DNS name to 127.0.0.1
cannot read the status through the visitor's browser.  Responses carry ``Cache-Control:
no-store``, ``X-Content-Type-Options: nosniff`` and, for the page, a Content-Security-Policy
that allows its own inline script and style only (no external asset is ever loaded).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("walvault.serve")

MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 10.0
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


@dataclass
class Response:
    """What a route answers."""

    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[], Response]
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Header Fields Too Large",
    421: "Misdirected Request",
    500: "Internal Server Error",
}


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9781`` for IPv6) -> (host, port); ValueError saying what is
    accepted."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"'{text}' is not HOST:PORT (e.g. 127.0.0.1:9781 or [::1]:9781)")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"'{host}' is not an IP address: give one (127.0.0.1, ::1, 0.0.0.0), not a host name"
        ) from None
    return host, port


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address) is a loopback address."""
    return ipaddress.ip_address(host).is_loopback


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (no name resolution: no helper thread)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _host_allowed(host_header: str | None, loopback_only: bool) -> bool:
    if not loopback_only:
        return True
    if not host_header:
        return False
    name = host_header.strip().lower()
    if name.startswith("["):
        name = name[: name.find("]") + 1]
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    if name in LOOPBACK_NAMES:
        return True
    try:  # an address literal, never a name that merely starts like one
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _plain(status: int, text: str) -> Response:
    return Response(status, "text/plain; charset=utf-8", (text + "\n").encode())


class HttpServer:
    """Serves ``routes`` (path -> callable) on an already listening socket."""

    def __init__(self, sock: socket.socket, routes: dict[str, Route]) -> None:
        self.sock = sock
        self.routes = routes
        self.loopback_only = is_loopback(sock.getsockname()[0])
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Start accepting connections."""
        self._server = await asyncio.start_server(self._handle, sock=self.sock, limit=MAX_HEAD)

    def close(self) -> None:
        """Stop accepting connections."""
        if self._server is not None:
            self._server.close()

    def answer(self, head: bytes) -> tuple[Response, bool]:
        """The response to a request head, and whether to send its body (not for HEAD)."""
        try:
            lines = head.decode("iso-8859-1").split("\r\n")
            method, target, version = lines[0].split(" ")
        except (UnicodeDecodeError, ValueError):
            return _plain(400, "bad request line"), True
        if not version.startswith("HTTP/1."):
            return _plain(400, "HTTP/1.x only"), True
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                key, sep, value = line.partition(":")
                if not sep:
                    return _plain(400, "bad header line"), True
                headers[key.strip().lower()] = value.strip()
        if not _host_allowed(headers.get("host"), self.loopback_only):
            return _plain(421, "this service answers only to a loopback Host"), True
        if method not in ("GET", "HEAD"):
            response = _plain(405, "only GET and HEAD")
            response.headers["Allow"] = "GET, HEAD"
            return response, True
        route = self.routes.get(target.split("?", 1)[0])
        if route is None:
            return _plain(404, f"no such page; try {', '.join(sorted(self.routes))}"), True
        try:
            return route(), method == "GET"
        except Exception:
            log.exception("serving %s failed", target)
            return _plain(500, "internal error (see the walvault log)"), True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except asyncio.LimitOverrunError:
                response, body = _plain(413, "request head too large"), True
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            else:
                response, body = self.answer(head[:-4])
            writer.write(_serialise(response, body))
            await asyncio.wait_for(writer.drain(), HEAD_TIMEOUT)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


def _serialise(response: Response, with_body: bool) -> bytes:
    headers = {
        "Content-Type": response.content_type,
        "Content-Length": str(len(response.body)),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Connection": "close",
        **response.headers,
    }
    reason = _REASONS.get(response.status, "")
    head = f"HTTP/1.1 {response.status} {reason}\r\n"
    head += "".join(f"{key}: {value}\r\n" for key, value in headers.items()) + "\r\n"
    return head.encode("iso-8859-1") + (response.body if with_body else b"")
