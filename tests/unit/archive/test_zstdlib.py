"""walvault.archive.zstdlib: the zstd API without zstandard/__init__ (platform, typing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakewal import python_stdout

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
    "print(z.__name__)\n"
)


def _loaded_api(env: dict[str, str] | None = None, prelude: str = "") -> str:
    """The module zstdlib gave, after checking it round-trips with the real package."""
    return python_stdout(prelude + CODE, env=env).strip()


def test_the_compiled_backend_is_loaded_directly() -> None:
    assert _loaded_api() == "zstandard.backend_c"


def test_the_backend_alone_imports_no_platform_or_typing() -> None:
    code = (
        "import sys\n"
        "from walvault.archive.zstdlib import zstandard\n"
        "zstandard().ZstdDecompressor()\n"
        "print(sorted(m for m in ('platform', 'typing', 're', 'zstandard') if m in sys.modules))"
    )
    assert python_stdout(code).strip() == "[]"


@pytest.mark.parametrize(
    ("env", "prelude"),
    [
        ({"PYTHON_ZSTANDARD_IMPORT_POLICY": "default"}, ""),
        ({}, "import zstandard\n"),
    ],
    ids=["import-policy-set", "package-already-imported"],
)
def test_falls_back_to_the_package(env: dict[str, str], prelude: str) -> None:
    assert _loaded_api(env, prelude) == "zstandard"


def test_a_shadowing_module_is_what_import_would_load(tmp_path: Path) -> None:
    """A ``zstandard.py`` earlier on sys.path wins for ``import zstandard``: so it must here."""
    (tmp_path / "zstandard.py").write_text("SHADOW = True\n")
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); sys.path.insert(0, b'/nowhere')\n"
        "from walvault.archive.zstdlib import zstandard\n"
        "print(getattr(zstandard(), 'SHADOW', False))"
    )
    assert python_stdout(code).strip() == "True"


def test_bytes_entries_on_sys_path_are_skipped() -> None:
    code = (
        "import sys; sys.path.insert(0, b'/nowhere')\n"
        "from walvault.archive.zstdlib import zstandard\n"
        "print(zstandard().__name__)"
    )
    assert python_stdout(code).strip() == "zstandard.backend_c"
