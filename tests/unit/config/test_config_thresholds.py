"""``min_free_space`` and ``max_streaming_lag``: sizes with units, defaults, inheritance, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from walvault.config import load_config
from walvault.config.parsers import parse_positive_size, parse_size

MiB = 1 << 20


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", 0),
        ("123", 123),
        ("64MB", 64 * MiB),
        ("64 MiB", 64 * MiB),
        (" 64 mb ", 64 * MiB),
        ("2k", 2048),
        ("1 GB", 1 << 30),
        ("1tib", 1 << 40),
        ("512 B", 512),
    ],
)
def test_sizes(raw: str, expected: int) -> None:
    assert parse_size(raw) == expected


@pytest.mark.parametrize("raw", ["", "MB", "-1", "1.5 GB", "64 MiBs", "६४ MB", "1e6"])
def test_bad_sizes_say_what_is_accepted(raw: str) -> None:
    with pytest.raises(ValueError, match="accepted: a whole number of bytes"):
        parse_size(raw)


def test_a_lag_threshold_must_be_above_zero() -> None:
    with pytest.raises(ValueError, match="above 0"):
        parse_positive_size("0")


def test_defaults_inheritance_and_an_invalid_value(tmp_path: Path) -> None:
    conf = tmp_path / "w.conf"
    conf.write_text(
        f"[walvault]\nwalvault_home = {tmp_path}\nmin_free_space = 1 GB\n"
        "[a]\nconninfo = host=x\n"
        "[b]\nconninfo = host=x\nmin_free_space = 0\nmax_streaming_lag = 48MB\n"
        "[c]\nconninfo = host=x\nmax_streaming_lag = lots\n"
    )
    servers = load_config(str(conf)).servers
    assert servers["a"].min_free_space == 1 << 30 and servers["a"].max_streaming_lag is None
    assert servers["b"].min_free_space == 0 and servers["b"].max_streaming_lag == 48 * MiB
    assert servers["c"].disabled
    assert "invalid value 'lots' for option 'max_streaming_lag'" in servers["c"].messages[0]
    conf.write_text(f"[walvault]\nwalvault_home = {tmp_path}\n[a]\nconninfo = host=x\n")
    assert load_config(str(conf)).servers["a"].min_free_space == 64 * MiB
