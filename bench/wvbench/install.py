"""walvault as it is deployed: a regular pip install of this tree into a venv of the run's own.

The development venv (``/opt/wv-venv``) holds an *editable* install, and with
``PYTHONDONTWRITEBYTECODE=1`` every call there compiles walvault's modules from source again:
10-15 ms per call, more for the bigger commands. Barman runs from a normal pip install, with
the ``.pyc`` files pip compiled. So each run copies the working tree (as it is, uncommitted
changes included), builds a fresh venv from the system Python and ``pip install``s the copy
into it (not editable; pip compiles the bytecode). Dependencies are pinned to the versions of
the Python running the bench, so that only walvault's own code differs from the development
venv. The venv lives in the run's directory and goes with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from wvbench.common import REPO, BenchError, check_call, log

SYSTEM_PYTHON = "/usr/bin/python3"
# top-level entries of the tree that are not part of walvault's source (caches, builds, VCS)
_NOT_SOURCE = {
    ".git",
    ".venv",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "build",
    "dist",
}


@dataclass
class Install:
    """Where walvault was installed for this run, and how."""

    venv: Path
    python: str  # the interpreter the venv was made from
    python_version: str
    seconds: float  # copy + venv + pip install
    compiled: int  # walvault .pyc files present after the install
    packages: list[str] = field(default_factory=list)  # pip freeze of the venv

    @property
    def bindir(self) -> Path:
        return self.venv / "bin"

    def describe(self) -> str:
        return (
            f"pip-installed (not editable, {self.compiled} .pyc) into {self.venv} "
            f"(Python {self.python_version})"
        )


def _ignore(directory: str, names: Iterable[str]) -> set[str]:
    skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if os.path.samefile(directory, REPO):
        skip |= _NOT_SOURCE & set(names)
    elif os.path.basename(directory) == "bench":
        skip |= {"results"} & set(names)
    return skip


def _constraints(path: Path) -> bool:
    """Write the versions installed beside the bench's Python; False if pip cannot tell."""
    argv = [sys.executable, "-m", "pip", "freeze", "--exclude-editable"]
    proc = subprocess.run([*argv, "--disable-pip-version-check"], capture_output=True, text=True)
    pins = [
        line
        for line in proc.stdout.splitlines()
        if "==" in line and not line.lower().startswith("walvault==")
    ]
    if proc.returncode != 0 or not pins:
        return False
    path.write_text("\n".join(pins) + "\n")
    return True


def install_walvault(work: Path, python: str = SYSTEM_PYTHON) -> Install:
    """Copy the tree into ``work``, make ``work/walvault-venv`` and pip install the copy."""
    start = time.monotonic()
    source = work / "walvault-src"
    venv = work / "walvault-venv"
    shutil.copytree(REPO, source, ignore=_ignore, symlinks=True)
    check_call([python, "-m", "venv", str(venv)], f"{python} -m venv {venv}")
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    argv = [*pip, "install", "--quiet", "--disable-pip-version-check", "--compile"]
    constraints = work / "walvault-constraints.txt"
    if _constraints(constraints):
        argv += ["--constraint", str(constraints)]
    check_call([*argv, str(source)], f"pip install of walvault into {venv}")
    shutil.rmtree(source)  # the venv holds its own copy now
    where, version = check_call(
        [
            str(venv / "bin" / "python"),
            "-I",
            "-c",
            "import platform, walvault; print(walvault.__file__, platform.python_version())",
        ],
        "import walvault from its venv",
        cwd=work,
    ).split()
    package = Path(where).parent
    if not package.is_relative_to(venv):  # an editable install would point into the tree
        raise BenchError(f"walvault in {venv} is imported from {package}, not from the venv")
    freeze = check_call([*pip, "freeze", "--disable-pip-version-check"], "pip freeze")
    install = Install(
        venv=venv,
        python=python,
        python_version=version,
        seconds=time.monotonic() - start,
        compiled=sum(1 for _ in package.rglob("*.pyc")),
        packages=freeze.splitlines(),
    )
    log(f"walvault {install.describe()} in {install.seconds:.0f} s")
    return install
