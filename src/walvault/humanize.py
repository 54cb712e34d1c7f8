"""Human-readable sizes for console output (``0 B``, ``-229.0 KiB``, ``16.0 MiB``)."""

from __future__ import annotations

_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def pretty_size(size: int | float) -> str:
    """``size`` bytes in binary units: whole bytes below 1 KiB, one decimal above; sign kept.

    >>> pretty_size(0), pretty_size(-234496), pretty_size(16 << 20)
    ('0 B', '-229.0 KiB', '16.0 MiB')
    """
    value = float(size)
    for unit in _BINARY_UNITS:
        if abs(value) < 1024 or unit == _BINARY_UNITS[-1]:
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def pretty_duration(seconds: float) -> str:
    """``less than one second``, ``1 second``, ``2 minutes, 5 seconds``, ``1 day, 3 hours``.

    >>> pretty_duration(0.4), pretty_duration(61), pretty_duration(90061)
    ('less than one second', '1 minute, 1 second', '1 day, 1 hour, 1 minute, 1 second')
    """
    whole = int(seconds)
    if whole < 1:
        return "less than one second"
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return ", ".join(parts)
