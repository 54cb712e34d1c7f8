"""systemd's notify datagram, and the request counters workers send to the service."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from walvault import counters
from walvault.supervise.notify import notify


def test_notify_sends_one_datagram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1", "STATUS=serving 2 servers")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving 2 servers"
        assert notify("RELOADING=1")
        message = sock.recv(4096).decode()
        assert message.startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert message.rsplit("=", 1)[1].isdigit()


def test_notify_abstract_socket_and_none(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"walvault-test-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STOPPING=1")
        assert sock.recv(4096) == b"STOPPING=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify("READY=1")  # not under systemd: nothing sent, no error
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify.sock")
    assert not notify("READY=1")


def test_counters_drain_what_was_counted() -> None:
    counters.drain()
    counters.count_request("s3", "put")
    counters.count_request("s3", "put", ok=False)
    counters.count_request("s3", "get")
    assert counters.drain() == [["s3", "get", 1, 0], ["s3", "put", 2, 1]]
    assert counters.drain() == []
