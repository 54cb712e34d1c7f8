"""The status page of ``walvault serve`` in a real browser: Debian's headless Chromium.

Chromium runs the page's own script (``--dump-dom`` prints the DOM after it ran) and takes
a screenshot.  Set ``WALVAULT_SERVE_SCREENSHOT=/some/file.png`` to keep the screenshot
(docs/serve-status.png was made this way).  Chromium is required (``.ci/run`` installs
it); ``WALVAULT_SKIP_BROWSER=1`` skips these tests on a machine without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from serveharness import Serve, streaming_pid
from wvharness import slot_active, streaming_server, wait_for

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


@pytest.fixture
def chromium(tmp_path: Path) -> Any:
    if os.environ.get("WALVAULT_SKIP_BROWSER") == "1":
        pytest.skip("WALVAULT_SKIP_BROWSER=1")
    program = shutil.which("chromium") or shutil.which("chromium-browser")
    if program is None:
        raise AssertionError(
            "headless Chromium is needed (apt-get install chromium; .ci/run does it), "
            "or set WALVAULT_SKIP_BROWSER=1"
        )
    runs = iter(range(1000))

    def run(url: str, *extra: str) -> str:
        profile = tmp_path / f"chromium-profile-{next(runs)}"  # a new, empty profile each time
        result = subprocess.run(
            [program, *FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    return run


def attribute(dom: str, css_class: str, name: str) -> str | None:
    """The attribute ``name`` of the first element whose class is ``css_class``."""
    for tag in re.findall(r"<[a-z]+ [^>]*>", dom):
        if re.search(rf'class="{re.escape(css_class)}"', tag):
            found = re.search(rf'{name}="([^"]*)"', tag)
            return found.group(1) if found else None
    return None


def test_status_page_renders_plots_and_shows_a_dead_receiver(
    pg: Any, walvault_factory: Any, chromium: Any, tmp_path: Path
) -> None:
    wv = walvault_factory({"pg": streaming_server(pg, description="Main PostgreSQL")})
    serve = Serve(wv, "--sample-interval", "1", "--check-interval", "3")
    streaming_pid(serve)
    wait_for(lambda: slot_active(pg), what="streaming")
    pg.sql("CREATE TABLE t (i int)")
    for _ in range(3):
        pg.sql("INSERT INTO t SELECT generate_series(1, 5000)")
        pg.switch_wal()
    assert wv.run("backup", "--wait", "pg").returncode == 0
    pg.sql("INSERT INTO t VALUES (1)")
    wait_for(
        lambda: (
            len(serve.server()["lag"]["samples"]) >= 5
            and serve.server()["coverage"]["timelines"]
            and serve.server()["checks"]["at"]
        ),
        what="samples, archive and checks",
    )

    dom = chromium(serve.url + "/", "--dump-dom")
    assert 'id="server-pg"' in dom and "Main PostgreSQL" in dom
    section = re.search(r'<section class="server" id="server-pg"[^>]*>', dom)
    assert section and 'data-receiver-state="streaming"' in section.group(0)
    points = attribute(dom, "lag-plot", "data-points")
    assert points is not None and int(points) >= 5, points
    assert 'class="lagline"' in dom  # the plot has a line, not only axes
    ranges = attribute(dom, "coverage", "data-ranges")
    assert ranges is not None and int(ranges) >= 1, ranges
    assert 'class="archived"' in dom and 'class="backup"' in dom  # a DONE backup's marker
    assert "TL1" in dom

    picture = tmp_path / "status.png"
    chromium(serve.url + "/", f"--screenshot={picture}", "--window-size=1360,900")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000
    keep = os.environ.get("WALVAULT_SERVE_SCREENSHOT")
    if keep:
        shutil.copyfile(picture, keep)

    # the receiver dies and cannot come back (PostgreSQL is gone): the page says so
    pg.stop()
    wait_for(
        lambda: serve.server()["receiver"]["state"] in ("down", "backing off"),
        what="receiver down",
    )
    dom = chromium(serve.url + "/", "--dump-dom")
    section = re.search(r'<section class="server" id="server-pg"[^>]*>', dom)
    assert section, dom[:2000]
    state = re.search(r'data-receiver-state="([^"]+)"', section.group(0))
    assert state and state.group(1) in ("down", "backing off"), section.group(0)
    errors = re.search(r'<ul class="errors">(.*?)</ul>', dom, re.S)
    assert errors and "receiver:" in errors.group(1), errors
    assert "last receiver exit:" in errors.group(1)
