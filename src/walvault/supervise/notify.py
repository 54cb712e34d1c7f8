"""systemd's readiness protocol (``Type=notify``): one datagram to ``$NOTIFY_SOCKET``.

``READY=1`` once the service listens and has started its workers, ``RELOADING=1`` /
``READY=1`` around a SIGHUP reload, ``STOPPING=1`` when it stops.  Without
``$NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``) nothing is sent.
"""

from __future__ import annotations

import os
import socket
import time


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``...) to systemd; False when there is no socket."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    message = "\n".join(fields)
    if "RELOADING=1" in fields:  # systemd >= 253 wants the time of the reload with it
        message += f"\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            return False
    return True
