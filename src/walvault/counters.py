"""Process-local counters that any module bumps for ``walvault serve``'s metrics.

A storage driver counts each request it makes (``count_request("s3", "put", ok=False)``);
nothing here imports anything, so counting costs a dictionary update and the thin clients
may call it too.  ``walvault serve`` runs archive-wal in forked workers: each worker sends
:func:`drain` (what it counted) back to the service, which adds it to its totals and
exposes them as ``walvault_storage_requests_total`` and
``walvault_storage_request_errors_total``.
"""

from __future__ import annotations

#: (driver, operation) -> [requests, errors]
_requests: dict[tuple[str, str], list[int]] = {}


def count_request(driver: str, operation: str, *, ok: bool = True) -> None:
    """One request of ``driver`` (``posix``, ``s3``...) for ``operation`` (``put``, ``get``...)."""
    entry = _requests.setdefault((driver, operation), [0, 0])
    entry[0] += 1
    if not ok:
        entry[1] += 1


def drain() -> list[list[str | int]]:
    """What was counted since the last call, as ``[driver, operation, requests, errors]``
    rows (JSON-friendly), and reset."""
    rows: list[list[str | int]] = [
        [driver, operation, counts[0], counts[1]]
        for (driver, operation), counts in sorted(_requests.items())
    ]
    _requests.clear()
    return rows
