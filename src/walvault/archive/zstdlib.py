"""python-zstandard's C backend, loaded without running ``zstandard/__init__.py``.

The package's ``__init__`` imports ``platform`` (only to ask whether this is CPython) and,
on Python 3.11, ``typing`` -- together ~6 ms, with the ``re`` and ``enum`` they pull in.
PostgreSQL's restore_command runs once per WAL segment, and each call of the restore client
would pay it: a sixth of the call.  On CPython the package only re-exports its compiled
``backend_c`` module, so that module is loaded here straight from the installed package
(~0.7 ms).  Anything unusual -- another interpreter, ``PYTHON_ZSTANDARD_IMPORT_POLICY``
set, no compiled backend, a package already imported -- falls back to ``import zstandard``.
Both give the same classes (``ZstdCompressor``, ``ZstdDecompressor``, ``ZstdError``).
"""

from __future__ import annotations

import os
import sys

# mypy reads this name as typing.TYPE_CHECKING (importing typing is what this module avoids)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

_MODULE = "zstandard.backend_c"
_loaded: ModuleType | None = None


def zstandard() -> ModuleType:
    """The zstandard API (the compiled backend when it can be loaded directly)."""
    global _loaded
    if _loaded is None:
        _loaded = _backend() or _package()
    return _loaded


def _package() -> ModuleType:
    import zstandard as package

    return package


def _backend() -> ModuleType | None:
    """``zstandard.backend_c`` from the first ``zstandard`` package on sys.path, or None."""
    if (
        sys.implementation.name != "cpython"
        or "zstandard" in sys.modules
        or os.environ.get("PYTHON_ZSTANDARD_IMPORT_POLICY")
    ):
        return None
    loaded = sys.modules.get(_MODULE)
    if loaded is not None:
        return loaded
    from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, ModuleSpec

    for entry in sys.path:
        if not isinstance(entry, str):
            continue  # the import system skips such entries too
        where = entry or os.curdir
        package_dir = os.path.join(where, "zstandard")
        if not os.path.isfile(os.path.join(package_dir, "__init__.py")):
            if os.path.isfile(where) or _module_file_in(where):
                return None  # a zip, or a zstandard module that is not the package: not ours
            continue  # not here: keep searching, as the import system would
        for suffix in EXTENSION_SUFFIXES:
            path = os.path.join(package_dir, "backend_c" + suffix)
            if os.path.isfile(path):
                loader = ExtensionFileLoader(_MODULE, path)
                try:
                    module = loader.create_module(ModuleSpec(_MODULE, loader, origin=path))
                    loader.exec_module(module)
                except ImportError:
                    return None
                sys.modules[_MODULE] = module  # a later `import zstandard` re-exports it
                return module
        return None  # the package that `import zstandard` would find has no C backend
    return None


def _module_file_in(directory: str) -> bool:
    """True when ``directory`` holds something else ``import zstandard`` would load first."""
    from importlib.machinery import all_suffixes

    return os.path.isdir(os.path.join(directory, "zstandard")) or any(
        os.path.exists(os.path.join(directory, "zstandard" + suffix)) for suffix in all_suffixes()
    )
