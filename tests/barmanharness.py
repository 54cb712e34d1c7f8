"""Barman 3.20.1 in the tests: the installation CI made, its configuration, its commands.

Where Barman is.  ``WALVAULT_BARMAN_BIN`` names the ``bin`` directory of a Barman 3.20.1
installation (``.ci/install-barman`` makes one under ``/opt/walvault-barman`` that any user
can run, and ``.ci/run`` sets the variable).  The variable set means "Barman is there":
:func:`find_barman` then raises :class:`BarmanBroken` when a command is missing, does not
run, or is another version, and the tests that need it FAIL.  Only when the variable is unset
(a developer run without the installation) does :func:`find_barman` return None, and the
fixtures skip, saying how to get it.

What runs.  :class:`Barman` is one Barman configuration file: a ``[barman]`` section
(``barman_user`` = the user running the tests, ``barman_home``, ``log_file``) and server
sections, either for Barman's own home or pointing ``barman_home`` at a walvault home (the
layouts are the same, so Barman then reads walvault's archive in place).  Its commands --
``barman``, ``barman-wal-restore``, ``barman-cloud-wal-archive``, ``barman-cloud-wal-restore``,
``barman-cloud-backup-list`` -- run as child processes of the test user with the
environment the tests give, plus, when an S3 endpoint is set, moto's endpoint
(``AWS_ENDPOINT_URL``, which Barman's server-mode cloud WAL storage reads; the barman-cloud
clients get ``--endpoint-url``) and the test credentials of :mod:`s3harness`.

barman-wal-restore runs plain ``ssh`` (it has no option for keys or host checks):
:func:`ssh_shim` writes an ``ssh`` that adds the options of a test :class:`sshharness.Sshd`,
for the front of the client's ``PATH``; :func:`barman_named_walvault` writes a ``barman``
that runs walvault, for the front of the sshd sessions' ``PATH`` (what a user does with a
symbolic link on a walvault host that old clients still call ``barman``).
"""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from s3harness import TEST_ENVIRON

BARMAN_VERSION = "3.20.1"
#: the variable that says where Barman is (and so that it must work)
BIN_VARIABLE = "WALVAULT_BARMAN_BIN"
#: the commands the interop tests run
TOOLS = (
    "barman",
    "barman-wal-archive",
    "barman-wal-restore",
    "barman-cloud-wal-archive",
    "barman-cloud-wal-restore",
    "barman-cloud-backup-list",
)
#: why the tests skip without the variable
SKIP_REASON = (
    f"{BIN_VARIABLE} is not set: the Barman {BARMAN_VERSION} interop tests need Barman's "
    f"installation (as root: `bash .ci/install-barman` installs it and prints the directory "
    f"to set {BIN_VARIABLE} to; .ci/run does both)"
)
PG_BIN = "/usr/lib/postgresql/15/bin"


class BarmanBroken(RuntimeError):
    """``WALVAULT_BARMAN_BIN`` is set but does not hold a working Barman 3.20.1."""


class BarmanInstall:
    """A checked Barman installation: its ``bin`` directory."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir

    def tool(self, name: str) -> str:
        """The path of one of :data:`TOOLS`."""
        if name not in TOOLS:
            raise ValueError(f"not a Barman command the tests use: {name}")
        return str(self.bin_dir / name)


def find_barman(environ: Mapping[str, str] | None = None) -> BarmanInstall | None:
    """The installation ``WALVAULT_BARMAN_BIN`` names, checked; None when it is unset.

    Raises :class:`BarmanBroken` (with what was wrong) when it is set and a command is
    missing, ``barman --version`` fails or reports another version, or boto3 (for the
    barman-cloud clients) does not import in Barman's Python.
    """
    env = os.environ if environ is None else environ
    value = env.get(BIN_VARIABLE, "")
    if not value:
        return None
    bin_dir = Path(value)
    if not bin_dir.is_absolute():
        raise BarmanBroken(f"{BIN_VARIABLE}={value!r} is not an absolute path")
    for tool in TOOLS:
        if not os.access(bin_dir / tool, os.X_OK):
            raise BarmanBroken(f"{BIN_VARIABLE}={value}: {tool} is missing or not executable")
    try:
        version = subprocess.run(
            [str(bin_dir / "barman"), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except OSError as exc:
        raise BarmanBroken(f"{bin_dir}/barman does not run: {exc}") from exc
    words = version.stdout.split()
    if version.returncode != 0 or not words or words[0] != BARMAN_VERSION:
        raise BarmanBroken(
            f"{bin_dir}/barman --version exited {version.returncode} saying "
            f"{(version.stdout + version.stderr).strip()!r}; expected {BARMAN_VERSION}"
        )
    python = bin_dir / "python"
    probe = subprocess.run(
        [str(python), "-c", "import boto3, barman.cloud_providers.aws_s3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        raise BarmanBroken(f"boto3 does not import in {python}: {probe.stderr.strip()}")
    return BarmanInstall(bin_dir)


def _ini_value(value: Any) -> str:
    text = str(value)
    if "\n" in text:
        raise ValueError(f"a configuration value cannot hold a newline: {text!r}")
    return text


class Barman:
    """One Barman configuration file and the Barman commands run against it.

    ``home``: where the configuration and Barman's log go; ``barman_home`` (default
    ``home``): Barman's home directory, e.g. a walvault home to read walvault's archive.
    ``servers``: server sections (option -> value).  ``s3_endpoint``: moto's endpoint for
    cloud storage and the barman-cloud clients.  ``environ``: the base environment of every
    command (default: this process's).
    """

    def __init__(
        self,
        install: BarmanInstall,
        home: Path,
        servers: Mapping[str, Mapping[str, Any]],
        *,
        barman_home: Path | None = None,
        s3_endpoint: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.install = install
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.barman_home = barman_home or home
        self.conf = home / "barman.conf"
        self.log = home / "barman.log"
        self.s3_endpoint = s3_endpoint
        self.base_environ = dict(os.environ if environ is None else environ)
        self.write(servers)

    def write(self, servers: Mapping[str, Mapping[str, Any]]) -> None:
        """(Re)write the configuration file."""
        lines = [
            "[barman]",
            f"barman_user = {getpass.getuser()}",
            f"barman_home = {self.barman_home}",
            f"log_file = {self.log}",
            "log_level = INFO",
        ]
        for name, options in servers.items():
            lines += ["", f"[{name}]"]
            lines += [f"{key} = {_ini_value(value)}" for key, value in options.items()]
        self.conf.write_text("\n".join(lines) + "\n")

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a Barman command: the base one, the S3 test credentials and
        endpoint when an endpoint is set, and ``extra``."""
        env = dict(self.base_environ)
        if self.s3_endpoint is not None:
            env.update(TEST_ENVIRON)
            env["AWS_ENDPOINT_URL"] = self.s3_endpoint
            env["AWS_EC2_METADATA_DISABLED"] = "true"  # never ask for instance credentials
        env.update(extra or {})
        return env

    def _run(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None,
        binary: bool,
        timeout: float,
    ) -> subprocess.CompletedProcess[Any]:
        return subprocess.run(
            argv,
            capture_output=True,
            text=not binary,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=self.environ(env),
        )

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        binary: bool = False,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[Any]:
        """``barman -c CONF ARGS`` (stdout as bytes with ``binary``, e.g. for get-wal)."""
        argv = [self.install.tool("barman"), "-c", str(self.conf), *args]
        return self._run(argv, env=env, binary=binary, timeout=timeout)

    def cloud(
        self,
        tool: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """A barman-cloud client (``barman-cloud-wal-restore`` ...) with ``--endpoint-url``."""
        if not tool.startswith("barman-cloud-"):
            raise ValueError(f"not a barman-cloud client: {tool}")
        if self.s3_endpoint is None:
            raise ValueError("this Barman has no S3 endpoint")
        argv = [self.install.tool(tool), "--endpoint-url", self.s3_endpoint, *args]
        return self._run(argv, env=env, binary=False, timeout=timeout)

    def wal_restore(
        self,
        *args: str,
        ssh_dir: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """``barman-wal-restore ARGS`` with ``ssh_dir`` (see :func:`ssh_shim`) first on PATH."""
        base = self.environ(env)
        path = f"{ssh_dir}:{base.get('PATH', '/usr/bin:/bin')}"
        argv = [self.install.tool("barman-wal-restore"), *args]
        return self._run(argv, env={**(env or {}), "PATH": path}, binary=False, timeout=timeout)

    def wal_archive(
        self,
        *args: str,
        ssh_dir: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """``barman-wal-archive ARGS`` with ``ssh_dir`` (see :func:`ssh_shim`) first on PATH."""
        base = self.environ(env)
        path = f"{ssh_dir}:{base.get('PATH', '/usr/bin:/bin')}"
        argv = [self.install.tool("barman-wal-archive"), *args]
        return self._run(argv, env={**(env or {}), "PATH": path}, binary=False, timeout=timeout)

    def log_text(self) -> str:
        """Barman's log so far (for assertion messages)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def ssh_shim(directory: Path, ssh_command: str) -> Path:
    """A directory holding ``ssh``: ``ssh_command`` (e.g. :attr:`Sshd.ssh_command`, which
    trusts the test sshd and uses its key) followed by the caller's arguments."""
    directory.mkdir(parents=True, exist_ok=True)
    words = shlex.split(ssh_command)
    if words[0] == "ssh":
        words[0] = "/usr/bin/ssh"
    _script(directory / "ssh", f'#!/bin/sh\nexec {shlex.join(words)} "$@"\n')
    return directory


def barman_named_walvault(directory: Path) -> Path:
    """A directory holding ``barman``: walvault's CLI in this interpreter, whatever the
    arguments (``barman --config CONF get-wal ...`` as barman-wal-restore sends it)."""
    directory.mkdir(parents=True, exist_ok=True)
    command = shlex.join([sys.executable, "-m", "walvault.cli.main"])
    _script(directory / "barman", f'#!/bin/sh\nexec {command} "$@"\n')
    return directory


def barman_server(pg: Any, **overrides: Any) -> dict[str, Any]:
    """Options of a Barman streaming-only server for the harness cluster ``pg`` (Barman
    3.20's names; None drops an option)."""
    options: dict[str, Any] = {
        "conninfo": pg.conninfo(),
        "streaming_conninfo": pg.streaming_conninfo(),
        "backup_method": "postgres",
        "streaming_archiver": "on",
        "slot_name": "walvault",
        "archiver": "off",
        "path_prefix": PG_BIN,
    }
    options.update(overrides)
    return {k: v for k, v in options.items() if v is not None}
