"""The restore service's requests: the two forms only, strictly; refusals of strangers."""

from __future__ import annotations

import os

import pytest

from walvault.restore_service import wire
from walvault.restore_service.server import Peer, RestoreService


def test_requests_round_trip() -> None:
    line = wire.fetch_request("pg", "000000010000000000000003", partial=True)
    assert wire.parse_request(line) == ("FETCH", "pg", "000000010000000000000003", True)
    assert wire.parse_request(wire.test_request("main.db")) == ("TEST", "main.db", None, False)


@pytest.mark.parametrize(
    "line",
    [
        b"FETCH pg ../../etc/passwd 0\n",
        b"FETCH pg 000000010000000000000003 2\n",
        b"FETCH pg 000000010000000000000003\n",
        b"FETCH  pg 000000010000000000000003 0\n",
        b"FETCH pg 00000001000000000000000\x003 0\n",
        b"TEST pg extra\n",
        b"DELETE pg\n",
        b"TEST pg",  # no end of line
        b"TEST " + b"p" * 300 + b"\n",
        "TEST p\u00e9\n".encode(),
    ],
)
def test_anything_else_is_refused(line: bytes) -> None:
    with pytest.raises(wire.RequestError):
        wire.parse_request(line)


def test_the_answer_is_log_lines_then_the_exit_code() -> None:
    assert (
        wire.reply(["ERROR: x", "WARNING: y"], 200) == b"LOG ERROR: x\nLOG WARNING: y\nEXIT 200\n"
    )


class _NoSource:
    def fetch_fd(self, *_: object, **__: object) -> int:  # pragma: no cover - never reached
        raise AssertionError("a refused request reached the archive")


def test_a_user_not_in_restore_users_is_refused_before_anything_is_read() -> None:
    service = RestoreService(_NoSource, {os.geteuid(): "walvault"})  # type: ignore[arg-type]
    stranger = Peer(pid=1, uid=os.geteuid() + 4242, gid=0)
    lines, code = service.serve(stranger, b"FETCH pg 000000010000000000000003 0\n", [])
    assert code == 200
    assert "may not restore WAL" in lines[0] and "restore_users" in lines[0]


def test_a_fetch_needs_exactly_one_descriptor() -> None:
    service = RestoreService(_NoSource, {os.geteuid(): "walvault"})  # type: ignore[arg-type]
    me = Peer(pid=1, uid=os.geteuid(), gid=0)
    lines, code = service.serve(me, b"FETCH pg 000000010000000000000003 0\n", [])
    assert code == 200 and "one descriptor, not 0" in lines[0]
    lines, code = service.serve(me, b"TEST pg\n", [-1])
    assert code == 200 and "no descriptor" in lines[0]
