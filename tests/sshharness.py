"""An unprivileged sshd on a free loopback port, with throwaway keys, for client tests."""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def sshd_available() -> str | None:
    """Why an sshd cannot be started here (None when it can)."""
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is not installed (package openssh-server)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (package openssh-client)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Sshd:
    """``sshd -D`` as the current user, accepting only a key made for the test."""

    def __init__(
        self, directory: Path, *, path: str | None = None, home: Path | None = None
    ) -> None:
        """Keys and configuration in ``directory``; ``path``: the PATH of remote commands;
        ``home``: their HOME (default: the user's, from the password database)."""
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.port = _free_port()
        self.key = directory / "client_key"
        for key in (directory / "host_key", self.key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
        shutil.copy(f"{self.key}.pub", directory / "authorized_keys")
        self.config = directory / "sshd_config"
        settings = {
            "Port": self.port,
            "ListenAddress": "127.0.0.1",
            "HostKey": directory / "host_key",
            "PidFile": directory / "sshd.pid",
            "AuthorizedKeysFile": directory / "authorized_keys",
            "StrictModes": "no",
            "UsePAM": "no",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "PubkeyAuthentication": "yes",
            "LogLevel": "VERBOSE",
        }
        session_env = []
        if path is not None:
            session_env.append(f"PATH={path}")
        if home is not None:
            session_env.append(f"HOME={home}")
        if session_env:
            settings["SetEnv"] = " ".join(session_env)
        self.config.write_text("".join(f"{k} {v}\n" for k, v in settings.items()))
        self.log = directory / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ssh_command(self) -> str:
        """The ssh program with the options that trust this sshd and use the test key."""
        options = [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
        ]
        return shlex.join(options)

    def start(self, timeout: float = 15) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("sshd did not start listening") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
