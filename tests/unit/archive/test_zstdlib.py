"""walvault.archive.zstdlib: the zstd API without zstandard/__init__ (platform, typing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CODE = (
    "import sys\n"
    "from walvault.archive.zstdlib import zstandard\n"
    "z = zstandard()\n"
    "data = bytes(range(256)) * 4096\n"
    "frame = z.ZstdCompressor(level=4).compress(data)\n"
    "assert z.ZstdDecompressor().decompressobj().decompress(frame) == data\n"
    "import zstandard as package\n"  # the real package decodes what the backend wrote
    "assert package.ZstdDecompressor().decompress(frame) == data\n"
    "assert issubclass(z.ZstdError, Exception)\n"
    "print(z.__name__, 'platform' in sys.modules)\n"
)


def _run(env: dict[str, str] | None = None, prelude: str = "") -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", prelude + CODE],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return out.stdout.split()


def test_the_compiled_backend_is_loaded_directly() -> None:
    # the name printed before `import zstandard` ran: the backend; platform only came
    # with the package, imported afterwards by the check itself
    name, _ = _run()
    assert name == "zstandard.backend_c"


def test_the_backend_alone_imports_no_platform_or_typing() -> None:
    code = (
        "import sys\n"
        "from walvault.archive.zstdlib import zstandard\n"
        "zstandard().ZstdDecompressor()\n"
        "print(sorted(m for m in ('platform', 'typing', 're', 'zstandard') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("env", "prelude"),
    [
        ({"PYTHON_ZSTANDARD_IMPORT_POLICY": "default"}, ""),
        ({}, "import zstandard\n"),
    ],
    ids=["import-policy-set", "package-already-imported"],
)
def test_falls_back_to_the_package(env: dict[str, str], prelude: str) -> None:
    name, _ = _run(env, prelude)
    assert name == "zstandard"


def test_a_shadowing_module_is_what_import_would_load(tmp_path: Path) -> None:
    """A ``zstandard.py`` earlier on sys.path wins for ``import zstandard``: so it must here."""
    (tmp_path / "zstandard.py").write_text("SHADOW = True\n")
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); sys.path.insert(0, b'/nowhere')\n"
        "from walvault.archive.zstdlib import zstandard\n"
        "print(getattr(zstandard(), 'SHADOW', False))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_bytes_entries_on_sys_path_are_skipped() -> None:
    code = (
        "import sys; sys.path.insert(0, b'/nowhere')\n"
        "from walvault.archive.zstdlib import zstandard\n"
        "print(zstandard().__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "zstandard.backend_c"
