"""The service's HTTP side without a network: request parsing, routes, Host checks."""

from __future__ import annotations

import socket

import pytest

from walvault.web.http import HttpServer, Response, parse_listen


def server(host: str = "127.0.0.1") -> HttpServer:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))
    routes = {"/metrics": lambda: Response(200, "text/plain", b"ok")}
    try:
        return HttpServer(sock, routes)
    finally:
        sock.close()


def head(line: str, host: str = "127.0.0.1:9781") -> bytes:
    return f"{line}\r\nHost: {host}\r\nUser-Agent: t".encode()


def test_routes_methods_and_bad_requests() -> None:
    web = server()
    assert web.answer(head("GET /metrics HTTP/1.1"))[0].status == 200
    assert web.answer(head("GET /metrics?x=1 HTTP/1.1"))[0].body == b"ok"
    response, body = web.answer(head("HEAD /metrics HTTP/1.1"))
    assert response.status == 200 and not body
    assert web.answer(head("GET /etc/passwd HTTP/1.1"))[0].status == 404
    response, _ = web.answer(head("POST /metrics HTTP/1.1"))
    assert response.status == 405 and response.headers["Allow"] == "GET, HEAD"
    assert web.answer(b"GARBAGE")[0].status == 400
    assert web.answer(head("GET /metrics SPDY/3"))[0].status == 400
    assert web.answer(b"GET /metrics HTTP/1.1\r\nno colon here")[0].status == 400


def test_loopback_service_answers_only_to_loopback_hosts() -> None:
    web = server()
    for good in ("127.0.0.1:9781", "localhost:9781", "localhost", "[::1]:9781", "127.0.0.2"):
        assert web.answer(head("GET /metrics HTTP/1.1", good))[0].status == 200, good
    for bad in ("evil.example", "evil.example:9781", "127.0.0.1.evil.example:80", ""):
        assert web.answer(head("GET /metrics HTTP/1.1", bad))[0].status == 421, bad
    assert web.answer(b"GET /metrics HTTP/1.1")[0].status == 421  # no Host at all


def test_wider_binding_accepts_any_host() -> None:
    web = server("0.0.0.0")
    assert web.answer(head("GET /metrics HTTP/1.1", "backup.example:9781"))[0].status == 200


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9781") == ("127.0.0.1", 9781)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    for bad in ("9781", "localhost:9781", "127.0.0.1:", "127.0.0.1:99999", ":80", "1.2.3.4:x"):
        with pytest.raises(ValueError):
            parse_listen(bad)
