"""The status page at ``/``: one self-contained HTML document, no external asset.

The page carries the current status (the ``/api/status`` document) inline and draws it with
a small inline script: per server, the receiver's state, the lag of the last hour as a plot,
the archive coverage as a timeline (archived ranges per timeline, recorded gaps, holes,
backups), failed checks and the last errors.  It fetches ``/api/status`` again every
:data:`REFRESH_MS` milliseconds and redraws, so it stays live; it works offline and from a
file.  Every text from the server is inserted with ``textContent`` (never as HTML), and the
Content-Security-Policy allows only this page's own script and style (a fresh nonce per
response), same-origin fetches, and nothing else.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

REFRESH_MS = 2000

_TEMPLATE_FILE = "status.html"  # beside this module: HTML, CSS and the script, no asset
_template: str | None = None


def _load_template() -> str:
    global _template
    if _template is None:
        from importlib.resources import files

        _template = files("walvault.web").joinpath(_TEMPLATE_FILE).read_text(encoding="utf-8")
    return _template


def page_html(snapshot: dict[str, Any]) -> tuple[str, str]:
    """The page for ``snapshot`` and the Content-Security-Policy to send with it."""
    nonce = secrets.token_urlsafe(16)
    data = json.dumps(snapshot, separators=(",", ":")).replace("<", "\\u003c")
    html = (
        _load_template()
        .replace("__NONCE__", nonce)
        .replace("__REFRESH__", str(REFRESH_MS))
        .replace("__DATA__", data)
    )
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return html, csp
