"""Section `encryption`: archive-wal throughput with and without ``encryption = gpg``.

Both tools, on the same real segments, for zstd, gzip and no compression at their default
levels: each codec run plain and encrypted (an ed25519 key with an RSA-3072 encryption
subkey, GnuPG from Debian, one keyring in the run's work directory for both tools; Barman's
``gpg --encrypt`` needs the key ultimately trusted, walvault's does not).  The cost of
encryption is ``1 - encrypted rate / plain rate`` per tool.  Every encrypted archive is then
checked: each file is an OpenPGP message that gpg decrypts and that decompresses to the
original segment.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from wvbench.common import BenchError, log, median, rate
from wvbench.homes import Home, archive_cmd, archived_bytes, place_partial
from wvbench.report import Row
from wvbench.runner import Bench
from wvbench.tools import run_timed

CODECS = ("zstd", "gzip", "none")
PASSPHRASE = "walvault bench passphrase"


class Keyring:
    """A GNUPGHOME with one key (made here) and a passphrase file."""

    def __init__(self, root: Path) -> None:
        self.home = root / "gnupg"
        self.home.mkdir(mode=0o700, parents=True)
        (self.home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
        self.passphrase = root / "passphrase"
        self.passphrase.write_text(PASSPHRASE + "\n")
        self.passphrase.chmod(0o600)
        loopback = ["--pinentry-mode", "loopback", "--passphrase", PASSPHRASE]
        uid = "walvault bench <bench@walvault.invalid>"
        self.gpg(*loopback, "--quick-gen-key", uid, "ed25519", "cert,sign", "never")
        listing = self.gpg("--with-colons", "--list-keys", uid).decode()
        self.fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
        )
        self.gpg(*loopback, "--quick-add-key", self.fingerprint, "rsa3072", "encr", "never")
        self.gpg("--import-ownertrust", data=f"{self.fingerprint}:6:\n".encode())

    def gpg(self, *args: str, data: bytes = b"") -> bytes:
        done = subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--no-tty", *args],
            input=data,
            capture_output=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise BenchError(f"gpg {args[:3]}: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout

    def options(self) -> dict[str, str]:
        return {
            "encryption": "gpg",
            "encryption_key_id": self.fingerprint,
            "encryption_passphrase_command": f"cat {self.passphrase}",
        }

    def environ(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home)}

    def stop(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"], capture_output=True
        )


def _verify(keyring: Keyring, home: Home, names: list[str], hashes: dict[str, str]) -> str | None:
    """None when every archived file decrypts and decompresses to its original segment."""
    from walvault import compression
    from walvault.archive.encryption import identify_encryption

    for name in names:
        path = home.archived(name)
        if not path.is_file():
            return f"{path} missing"
        stored = path.read_bytes()
        if identify_encryption(stored) is None:
            return f"{path} is not encrypted"
        plain = keyring.gpg(
            "--pinentry-mode", "loopback", "--passphrase", PASSPHRASE, "--decrypt", data=stored
        )
        algo = compression.identify(plain)
        digest = hashlib.sha256(compression.decompress_bytes(algo, plain) if algo else plain)
        if digest.hexdigest() != hashes[name]:
            return f"{path} does not decrypt to the original segment"
    return None


def encryption_throughput(bench: Bench) -> None:
    p = bench.params
    if shutil.which("gpg") is None:
        raise BenchError("gpg is not installed (Debian: apt-get install gnupg)")
    keyring = Keyring(bench.work / "encryption")
    try:
        _measure(bench, keyring, p.archive_segments, p.repeats)
    finally:
        keyring.stop()


def _measure(bench: Bench, keyring: Keyring, sample: int, repeats: int) -> None:
    sample = min(sample, len(bench.segments))
    step = len(bench.segments) / sample
    names = [bench.segments[int(i * step)] for i in range(sample)]
    tools = [t for t in ("barman", "walvault") if bench.tool_ready(t, "archive-wal")]
    detail: dict[str, Any] = {"segments": sample, "key": "RSA-3072 subkey", "runs": {}}
    bench.results.details["encryption"] = detail
    for codec in CODECS:
        times: dict[str, dict[bool, list[float]]] = {t: {False: [], True: []} for t in tools}
        cpu: dict[str, dict[bool, list[float]]] = {t: {False: [], True: []} for t in tools}
        sizes: dict[str, int] = {}
        failed: dict[str, str] = {}
        for rep in range(repeats):
            order = tools if rep % 2 == 0 else list(reversed(tools))
            for tool in order:
                for encrypted in (False, True) if rep % 2 == 0 else (True, False):
                    if tool in failed:
                        continue
                    extra = keyring.options() if encrypted else {}
                    home = bench.new_home(tool, codec, extra)
                    for name in names:
                        os.link(bench.pool / name, home.streaming / name)
                    place_partial(home.streaming, names[-1])
                    os.sync()
                    run = run_timed(archive_cmd(bench.tools, home), env=keyring.environ())
                    problem = None if run.ok else run.describe()
                    if problem is None and encrypted and rep == repeats - 1:
                        problem = _verify(keyring, home, names, bench.hashes)
                    if problem is not None:
                        failed[tool] = problem
                        bench.results.errors.append(f"encryption {codec} ({tool}): {problem}")
                        log(f"  {tool} {codec} encrypted={encrypted}: FAILED: {problem}")
                    else:
                        times[tool][encrypted].append(run.elapsed)
                        cpu[tool][encrypted].append(run.cpu_seconds)
                        sizes[f"{tool}-{encrypted}"] = archived_bytes(home, names)
                        log(
                            f"  archive-wal {codec:4} {tool:8} "
                            f"{'encrypted' if encrypted else 'plain    '} run {rep + 1}: "
                            f"{run.elapsed:6.2f} s ({sample / run.elapsed:6.1f} seg/s), "
                            f"CPU {run.cpu_seconds:.2f} s"
                        )
                    shutil.rmtree(home.root)
        detail["runs"][codec] = {
            t: {
                "plain_seconds": times[t][False],
                "encrypted_seconds": times[t][True],
                "plain_cpu_seconds": cpu[t][False],
                "encrypted_cpu_seconds": cpu[t][True],
                "plain_bytes": sizes.get(f"{t}-False"),
                "encrypted_bytes": sizes.get(f"{t}-True"),
            }
            for t in tools
        }
        _rows(bench, codec, sample, times, cpu, failed)


def _rows(
    bench: Bench,
    codec: str,
    count: int,
    times: dict[str, dict[bool, list[float]]],
    cpu: dict[str, dict[bool, list[float]]],
    failed: dict[str, str],
) -> None:
    label = "none" if codec == "none" else f"{codec}, default level"
    texts = bench.texts("archive-wal", failed)
    plain = {t: v[False] for t, v in times.items()}
    encrypted = {t: v[True] for t, v in times.items()}
    note = f"{count} x 16 MiB, median of {len(next(iter(plain.values()), []))}"
    for name, series in (("plain", plain), ("encrypted", encrypted)):
        bench.results.add(
            Row(
                "encryption",
                f"archive-wal {label}, {name}: segments/s",
                "seg/s",
                "higher",
                rate(series, "barman", count),
                rate(series, "walvault", count),
                *texts,
                note=note,
            )
        )

    def per_segment(tool: str, encrypted: bool) -> float | None:
        value = median(cpu.get(tool, {}).get(encrypted, []))
        return None if value is None else 1000.0 * value / count

    for name, flag in (("plain", False), ("encrypted", True)):
        bench.results.add(
            Row(
                "encryption",
                f"archive-wal {label}, {name}: CPU per segment",
                "ms",
                "lower",
                per_segment("barman", flag),
                per_segment("walvault", flag),
                *texts,
                note="user + system time of the command and its children (gpg), median",
            )
        )

    def cost(tool: str) -> float | None:
        before, after = median(plain.get(tool, [])), median(encrypted.get(tool, []))
        if not before or not after:
            return None
        return 100.0 * (1.0 - before / after)  # the share of throughput encryption takes

    bench.results.add(
        Row(
            "encryption",
            f"archive-wal {label}: throughput lost to encryption",
            "%",
            "lower",
            cost("barman"),
            cost("walvault"),
            *texts,
            note="1 - encrypted/plain segments per second",
        )
    )
