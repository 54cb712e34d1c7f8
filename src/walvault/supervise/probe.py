"""``walvault serve``'s probe: lag samples and check results, from one forked worker.

Everything that connects to PostgreSQL for monitoring happens here, so the service's loop
never waits on a server:

* every ``sample_interval`` seconds (10 by default), the streaming lag of each streamed
  server, over one monitoring connection per server kept open between samples
  (``application_name = walvault_serve``; reopened after an error), computed by the
  ``streaming lag`` check's own function from the same facts;
* every ``check_interval`` seconds, the whole of ``walvault check`` for each server
  (:func:`walvault.cli.check.results_for`, within ``check_timeout``), whose results become
  ``walvault_check_ok`` and the page's check list.

Servers are probed one after the other; a sample is bounded by ``check_timeout`` (at most
:data:`SAMPLE_TIMEOUT`), so one unreachable server delays the others' samples by that much
and never stops them.  Results go to the service as JSON lines.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from walvault.checks.facts import Endpoint, RemoteFacts, receiver_row
from walvault.checks.runner import streaming_lag_result
from walvault.cli.check import CheckTimeout, check_deadline, results_for
from walvault.config import ServerConfig
from walvault.errors import WalvaultError
from walvault.postgres.connection import connect, describe_error
from walvault.postgres.status import server_info
from walvault.supervise.children import Emit

log = logging.getLogger("walvault.serve")

SAMPLE_TIMEOUT = 10
APPLICATION_NAME = "walvault_serve"


class _Sampler:
    """One open monitoring connection per server, reopened on failure."""

    def __init__(self) -> None:
        self.connections: dict[str, Any] = {}

    def close(self, name: str) -> None:
        conn = self.connections.pop(name, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def sample(self, server: ServerConfig) -> dict[str, Any]:
        """``{"lag": bytes|None, "error": text|None, "segment_size": n|None}``."""
        conninfo = server.wal_monitoring_conninfo or ""
        timeout = max(2, min(server.check_timeout or SAMPLE_TIMEOUT, SAMPLE_TIMEOUT))
        try:
            with check_deadline(timeout):
                conn = self.connections.get(server.name)
                if conn is None or conn.closed:
                    conn = connect(conninfo, application_name=APPLICATION_NAME, timeout=timeout)
                    conn.execute(f"SET statement_timeout = {timeout * 1000}")
                    self.connections[server.name] = conn
                endpoint = Endpoint(info=server_info(conn), receiver=receiver_row(conn, server))
        except CheckTimeout:
            self.close(server.name)
            return {"lag": None, "error": f"no answer within {timeout} s"}
        except WalvaultError as exc:
            self.close(server.name)
            return {"lag": None, "error": exc.message}
        except Exception as exc:
            self.close(server.name)
            return {"lag": None, "error": describe_error(exc, conninfo)}
        result = streaming_lag_result(server, RemoteFacts(main=endpoint))
        lag = dict(result.perfdata).get("lag")
        return {
            "lag": lag,
            "error": None if result.ok else result.hint,
            "segment_size": endpoint.info.wal_segment_size if endpoint.info else None,
        }


def probe_loop(
    servers: list[ServerConfig], emit: Emit, *, check_interval: float, sample_interval: float
) -> int:
    """Sample and check ``servers`` until killed (the service restarts it on reload)."""
    sampler = _Sampler()
    next_check = {s.name: time.monotonic() + 1.0 + i * 0.5 for i, s in enumerate(servers)}
    while True:
        round_start = time.monotonic()
        for server in servers:
            if server.streaming_archiver and not server.disabled:
                emit(
                    {"kind": "lag", "server": server.name, "at": time.time()}
                    | sampler.sample(server)
                )
            if time.monotonic() >= next_check[server.name]:
                next_check[server.name] = time.monotonic() + check_interval
                from walvault import counters

                counters.drain()  # what the sampling counted belongs to no server
                results = results_for(server, None)
                emit(
                    {
                        "kind": "checks",
                        "server": server.name,
                        "at": time.time(),
                        "results": [{"name": r.name, "ok": r.ok, "hint": r.hint} for r in results],
                        "storage": counters.drain(),  # the checks' requests to the store
                    }
                )
        elapsed = time.monotonic() - round_start
        time.sleep(max(0.2, sample_interval - elapsed))
