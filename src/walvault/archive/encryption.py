"""Encryption at rest with GnuPG, as Barman's ``encryption = gpg`` writes it: gpg as a pipe filter.

**The format** is Barman 3.20's: archive-wal compresses first, then encrypts the compressed
bytes to the public key ``encryption_key_id`` -- an OpenPGP message (RFC 4880: a public-key
encrypted session key packet, then the integrity-protected data), binary, written by
``gpg --compress-level 0``.  The file keeps its plain name (``wals/<hash>/<segment>``, no
``.gpg``), and the catalogue line says ``<compression> gpg``.  Encrypted files are recognised
by their first bytes, as compressed ones are (:func:`identify_encryption`): the header of a
public-key (tag 1) or symmetric-key (tag 3) session key packet.  Never by running ``file``
as Barman does -- ``file`` 5.44 calls an ECDH (cv25519) message "data", and Barman then
serves the ciphertext as WAL.

**Streaming, no plaintext on disk.**  gpg runs as a filter between pipes: archive-wal's
compressor writes into :class:`Encryptor` (gpg's stdin) while a pump thread copies gpg's
stdout into the archive's file; readers get a :class:`DecryptingReader` whose stdin is the
stored file's descriptor (or a feeder thread for an object store's stream) and whose stdout
they read.  Memory stays at a few pipe buffers and 1 MiB chunks whatever the file's size.
gpg hands out plaintext before it has checked the message's integrity (its MDC) at the end:
a reader learns the verdict when it reads the end (:class:`DecryptionError` then), and every
consumer of the archive's read path throws away what it wrote when the read fails.

**Keys and passphrase.**  Archiving needs only the public key (the backup host never needs
the secret key to archive).  It is looked up once per run
(:func:`walvault.archive.gpgkeys.resolve_recipient`): it must match exactly one key with a
usable encryption (sub)key; gpg then gets its fingerprint with ``--trust-model always``: the
key named in the configuration *is* the trust decision, so a public key imported without
signing it works (expired or revoked keys are still refused by gpg).  Reading runs
``encryption_passphrase_command`` (a shell command, as Barman: its standard output,
stripped, is the passphrase; once per process) and gives the passphrase to gpg through a
pipe of its own, ``--passphrase-fd N`` with ``--pinentry-mode loopback``: never on a command
line, in the environment or in a log.  gpg uses the keyring of the inherited ``$GNUPGHOME``
(else ``~/.gnupg``), found on ``path_prefix`` then ``PATH``, as Barman does.  Key rotation
needs nothing here: each file names the key it was encrypted to, and gpg picks the secret
key from the keyring (one passphrase for all of them).

**gpg-agent's cache.**  After one decryption gpg-agent remembers the passphrase (10 minutes
by default, renewed on use), and then accepts any passphrase.  Decryption is still correct;
``check`` clears the cached entry before its trial decryption, so a wrong
``encryption_passphrase_command`` is not hidden by the cache
(:func:`walvault.archive.gpgkeys.forget_passphrases`).
"""

from __future__ import annotations

import os

from walvault.errors import ArchiveReadError, WalvaultError

# mypy reads this name as typing.TYPE_CHECKING: the restore client imports this module
TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    import threading
    from collections.abc import Iterator
    from typing import BinaryIO

    from walvault.archive.gpgkeys import Recipient
    from walvault.config import ServerConfig
    from walvault.storage.base import ObjectInfo, Reader

#: The name of the encryption in the configuration and in the catalogue's fifth column.
GPG = "gpg"
#: Enough of a file's start to tell an encrypted one (a packet header and its first fields).
HEAD_LEN = 24
CHUNK = 1 << 20
#: Public-key algorithms of a session key packet whose first field is an MPI: RSA, Elgamal.
_MPI_ALGORITHMS = frozenset({1, 2, 16, 20})
#: ... and the others: ECDH (an MPI, then the wrapped key), X25519, X448.
_ECC_ALGORITHMS = frozenset({18, 25, 26})
#: Symmetric ciphers (IDEA..Camellia-256, RFC 4880 9.2) and S2K hashes of a v4 SKESK packet.
_CIPHERS = frozenset({1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13})
_HASHES = frozenset({1, 2, 3, 8, 9, 10, 11})
#: How much of gpg's stderr is kept for messages.
_STDERR_KEEP = 16 << 10
#: libgpg-error's code for "Bad passphrase" (the low 16 bits of an ``ERROR`` status code).
_BAD_PASSPHRASE = 11


class EncryptionError(WalvaultError):
    """A file cannot be encrypted (gpg missing, the key unusable, gpg failed)."""


class DecryptionError(ArchiveReadError):
    """An encrypted file cannot be decrypted, or its decryption failed (exit 200: never
    "not found" -- a wrong passphrase must stop a recovery, not end it)."""


def _packet(head: bytes) -> tuple[int, int, int] | None:
    """(tag, offset of the body, body length) of the OpenPGP packet starting ``head``."""
    if len(head) < 2 or not head[0] & 0x80:
        return None
    first = head[0]
    if first & 0x40:  # new format: one to five length octets; partial lengths not here
        tag, octet = first & 0x3F, head[1]
        if octet < 192:
            return tag, 2, octet
        if octet < 224 and len(head) > 2:
            return tag, 3, ((octet - 192) << 8) + head[2] + 192
        if octet == 255 and len(head) > 5:
            return tag, 6, int.from_bytes(head[2:6], "big")
        return None
    tag, kind = (first >> 2) & 0x0F, first & 0x03
    if kind == 3:  # indeterminate length: never a session key packet
        return None
    octets = 1 << kind
    if len(head) < 1 + octets:
        return None
    return tag, 1 + octets, int.from_bytes(head[1 : 1 + octets], "big")


def identify_encryption(head: bytes) -> str | None:
    """``"gpg"`` when ``head`` starts an encrypted OpenPGP message, else None.

    The message must open with a session key packet: public-key (tag 1, version 3 or 6,
    a known public-key algorithm) or symmetric-key (tag 3, version 4 to 6).  WAL page
    headers, zeros and the compression codecs' magic numbers never look like that.
    """
    found = _packet(head)
    if found is None:
        return None
    tag, body, length = found
    fields = head[body : body + length]
    if tag == 1 and len(fields) >= 12 and fields[0] == 3:  # version, key ID, algorithm
        algorithm, bits = fields[9], int.from_bytes(fields[10:12], "big")
        mpi = 12 + (bits + 7) // 8  # the packet's size up to the end of its first MPI
        if algorithm in (1, 2, 3):  # RSA: exactly one MPI
            return GPG if bits and length == mpi else None
        if algorithm in _MPI_ALGORITHMS or algorithm == 18:  # Elgamal, ECDH: more follows
            return GPG if bits and length > mpi else None
        return GPG if algorithm in _ECC_ALGORITHMS and length > 10 else None
    if tag == 1 and len(fields) >= 2 and fields[0] == 6:
        return GPG
    if tag == 3 and len(fields) >= 4 and fields[0] == 4:  # version, cipher, S2K type, hash
        ok = fields[1] in _CIPHERS and fields[2] in (0, 1, 3) and fields[3] in _HASHES
        return GPG if ok else None
    if tag == 3 and len(fields) >= 4 and fields[0] in (5, 6):
        return GPG if fields[1 + (fields[0] == 6)] in _CIPHERS else None
    return None


# ---------------------------------------------------------------- gpg and the passphrase


class Gpg:
    """How to run gpg for a server: the program (on ``path_prefix``, then ``PATH``) and the
    passphrase command.  Cheap to make; the program is looked up on first use."""

    def __init__(self, search_path: str, passphrase_command: str | None, server: str) -> None:
        self.search_path = search_path
        self.passphrase_command = passphrase_command
        self.server = server
        self._program: str | None = None

    @classmethod
    def for_server(cls, server: ServerConfig) -> Gpg:
        return cls(server.search_path, server.encryption_passphrase_command, server.name)

    @property
    def program(self) -> str:
        """The gpg binary (EncryptionError when there is none)."""
        if self._program is None:
            import shutil

            found = shutil.which("gpg", path=self.search_path)
            if found is None:
                raise EncryptionError(
                    f"server {self.server}: gpg (GnuPG) not found on path_prefix or PATH "
                    f"({self.search_path}): install it (Debian: apt-get install gnupg)"
                )
            self._program = found
        return self._program

    def argv(self, *args: str) -> list[str]:
        """gpg with the options every call takes: no terminal, no questions, binary output,
        machine-readable status lines on stderr."""
        return [
            self.program,
            "--batch",
            "--no-tty",
            "--no-greeting",
            "--no-auto-check-trustdb",
            "--status-fd",
            "2",
            *args,
        ]

    def environ(self) -> dict[str, str]:
        """Our environment (``GNUPGHOME``...) with messages in English for the log."""
        return {**os.environ, "LC_ALL": "C", "PATH": self.search_path}

    def run(self, *args: str, data: bytes = b"") -> tuple[int, bytes, str]:
        """Run gpg to completion: (exit status, stdout, stderr)."""
        import subprocess

        try:
            done = subprocess.run(
                self.argv(*args), input=data, capture_output=True, env=self.environ(), timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EncryptionError(
                f"server {self.server}: cannot run {self.program}: {exc}"
            ) from exc
        return done.returncode, done.stdout, done.stderr.decode("utf-8", "replace")

    def passphrase(self) -> bytes:
        """The output of ``encryption_passphrase_command``, stripped (DecryptionError when it
        is not configured, fails or prints nothing)."""
        if not self.passphrase_command:
            raise DecryptionError(
                f"server {self.server}: the file is encrypted (gpg) but no "
                "encryption_passphrase_command is configured"
            )
        return _passphrase(self.passphrase_command, self.server)


_PASSPHRASES: dict[str, bytes] = {}
_PASSPHRASE_LOCK: threading.Lock | None = None


def _passphrase(command: str, server: str) -> bytes:
    """Run ``command`` once per process (its output is never shown: only its status)."""
    global _PASSPHRASE_LOCK
    if _PASSPHRASE_LOCK is None:  # made on first use (at worst twice, at once: harmless)
        import threading

        _PASSPHRASE_LOCK = threading.Lock()
    with _PASSPHRASE_LOCK:
        if command not in _PASSPHRASES:
            _PASSPHRASES[command] = _run_passphrase_command(command, server)
        return _PASSPHRASES[command]


def _run_passphrase_command(command: str, server: str) -> bytes:
    import subprocess

    try:
        done = subprocess.run(
            command, shell=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DecryptionError(
            f"server {server}: encryption_passphrase_command did not run: {type(exc).__name__}"
        ) from None
    if done.returncode != 0:
        raise DecryptionError(
            f"server {server}: encryption_passphrase_command failed (exit status {done.returncode})"
        )
    value = bytes(done.stdout.strip())
    if not value:
        raise DecryptionError(
            f"server {server}: encryption_passphrase_command printed no passphrase"
        )
    if b"\n" in value:
        raise DecryptionError(
            f"server {server}: encryption_passphrase_command printed more than one line"
        )
    return value


def _status(stderr: str, keyword: str) -> list[list[str]]:
    """The arguments of every ``[GNUPG:] <keyword>`` status line."""
    found = []
    for line in stderr.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "[GNUPG:]" and words[1] == keyword:
            found.append(words[2:])
    return found


def messages(stderr: str) -> str:
    """gpg's own messages (not the status lines), joined: for an error's text."""
    lines = [
        line.removeprefix("gpg: ").strip()
        for line in stderr.splitlines()
        if line.strip() and not line.startswith("[GNUPG:]")
    ]
    return "; ".join(lines[-3:]) or "no message"


# ---------------------------------------------------------------- encrypting


#: Linux's fcntl to size a pipe: 1 MiB (the unprivileged maximum) instead of 64 KiB means
#: 16 times fewer wake-ups between the compressor and gpg.
_F_SETPIPE_SZ = 1031


def _file_descriptor(sink: BinaryIO) -> int | None:
    """The descriptor of ``sink`` when it is a regular file gpg may write itself (flushed
    first), else None (memory, a spooled file: those get a pump thread)."""
    import io
    import stat

    if not isinstance(sink, io.BufferedWriter | io.FileIO):
        return None
    try:
        fd = sink.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        sink.flush()
    except (OSError, ValueError):
        return None
    return fd


class Encryptor:
    """A binary file whose writes are encrypted into ``sink`` by ``gpg --encrypt``.

    :meth:`finish` after the last write: the message is complete in ``sink`` when it
    returns; EncryptionError (or the sink's own OSError) when something failed.  :meth:`abort`
    stops gpg.  Use :func:`encrypting` for both.  A regular file as ``sink`` (a local
    archive's temporary file) becomes gpg's stdout: no copy through this process.  With
    ``source`` (a descriptor read from its current offset) gpg reads its input there
    itself, and nothing is to be written.
    """

    def __init__(
        self, gpg: Gpg, recipient: Recipient, sink: BinaryIO, source: int | None = None
    ) -> None:
        import subprocess
        import threading

        self._gpg = gpg
        self._sink = sink
        direct = _file_descriptor(sink)
        argv = gpg.argv(
            "--yes",
            "--no-armor",
            "--compress-level",
            "0",
            "--trust-model",
            "always",
            "--recipient",
            recipient.argument,
            "--encrypt",
        )
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if source is None else source,
                stdout=subprocess.PIPE if direct is None else direct,
                stderr=subprocess.PIPE,
                env=gpg.environ(),
            )
        except OSError as exc:
            raise EncryptionError(f"server {gpg.server}: cannot run {gpg.program}: {exc}") from exc
        if self._proc.stdin is not None:
            import contextlib
            import fcntl

            with contextlib.suppress(OSError):  # a smaller pipe only costs wake-ups
                fcntl.fcntl(self._proc.stdin.fileno(), _F_SETPIPE_SZ, 1 << 20)
        self._stderr = bytearray()
        self._sink_error: OSError | None = None
        self._pump = threading.Thread(target=self._copy_out, daemon=True)
        self._pump.start()

    def _copy_out(self) -> None:
        """stdout into the sink, stderr kept (one thread: a selector over both pipes)."""
        import selectors

        assert self._proc.stderr is not None
        selector = selectors.DefaultSelector()
        if self._proc.stdout is not None:
            selector.register(self._proc.stdout, selectors.EVENT_READ, "out")
        selector.register(self._proc.stderr, selectors.EVENT_READ, "err")
        try:
            while selector.get_map():
                for key, _ in selector.select():
                    data = os.read(key.fd, CHUNK)
                    if not data:
                        selector.unregister(key.fileobj)
                    elif key.data == "err":
                        self._stderr += data
                        del self._stderr[:-_STDERR_KEEP]
                    elif self._sink_error is None:
                        try:
                            self._sink.write(data)
                        except OSError as exc:
                            self._sink_error = exc
                            self._proc.kill()
        finally:
            selector.close()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        assert self._proc.stdin is not None, "gpg reads its source itself"
        try:
            self._proc.stdin.write(data)
        except BrokenPipeError:
            self._fail()
        return len(memoryview(data))

    def _fail(self) -> None:
        """gpg went away: wait for it and raise why."""
        self._proc.wait()
        self._pump.join()
        if self._sink_error is not None:
            raise self._sink_error
        raise EncryptionError(self._reason())

    def _reason(self) -> str:
        err = self._stderr.decode("utf-8", "replace")
        invalid = _status(err, "INV_RECP")
        if invalid:
            return f"server {self._gpg.server}: gpg refused the recipient key ({messages(err)})"
        return (
            f"server {self._gpg.server}: gpg --encrypt failed (exit status "
            f"{self._proc.returncode}: {messages(err)})"
        )

    def finish(self) -> None:
        """Close gpg's input and wait for the whole message to be in the sink."""
        import contextlib

        if self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        self._proc.wait()
        self._pump.join()
        if self._sink_error is not None:
            raise self._sink_error
        if self._proc.returncode != 0:
            raise EncryptionError(self._reason())

    def abort(self) -> None:
        """Stop gpg (the sink holds nothing usable)."""
        import contextlib

        if self._proc.poll() is None:
            self._proc.kill()
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        self._proc.wait()
        self._pump.join()


class encrypting:  # used like a function: ``with encrypting(...) as sink``
    """``with encrypting(gpg, recipient, sink) as out:`` -- writes to ``out`` are encrypted
    into ``sink``; the message is complete when the block ends without an exception."""

    def __init__(self, gpg: Gpg, recipient: Recipient, sink: BinaryIO) -> None:
        self._args = (gpg, recipient, sink)
        self._encryptor: Encryptor | None = None

    def __enter__(self) -> Encryptor:
        self._encryptor = Encryptor(*self._args)
        return self._encryptor

    def __exit__(self, kind: object, *rest: object) -> None:
        assert self._encryptor is not None
        if kind is None:
            self._encryptor.finish()
        else:
            self._encryptor.abort()


# ---------------------------------------------------------------- decrypting


class DecryptingReader:
    """A :class:`walvault.storage.base.Reader` of the plaintext of an encrypted file.

    ``source`` is the stored file: one with ``fileno`` (a local file) becomes gpg's stdin
    from its start; any other is fed to gpg by a thread, ``consumed`` (the bytes already
    read from it) first.  ``info`` is the stored file's.  The last :meth:`read` (b"") raises
    DecryptionError when gpg did not decrypt the whole message (wrong passphrase, no secret
    key, corrupt or truncated ciphertext); :meth:`close` stops gpg and closes ``source``.
    """

    def __init__(self, gpg: Gpg, source: Reader, consumed: bytes, where: str) -> None:
        import subprocess
        import threading

        self._gpg, self._source, self._where = gpg, source, where
        self._done = False
        self._feed_error: BaseException | None = None
        passphrase = gpg.passphrase()
        program = gpg.program
        secret_r, secret_w = os.pipe()
        try:
            os.write(secret_w, passphrase + b"\n")  # a few bytes: the pipe buffer holds them
        finally:
            os.close(secret_w)
        fileno = getattr(source, "fileno", None)
        stdin: int = subprocess.PIPE
        if fileno is not None:
            stdin = fileno()
            os.lseek(stdin, 0, os.SEEK_SET)
        argv = gpg.argv(
            "--pinentry-mode", "loopback", "--passphrase-fd", str(secret_r), "--decrypt"
        )
        try:
            self._proc: subprocess.Popen[bytes] = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=gpg.environ(),
                pass_fds=(secret_r,),
            )
        except OSError as exc:
            raise DecryptionError(f"cannot run {program}: {exc}") from exc
        finally:
            os.close(secret_r)
        self._stderr = bytearray()
        self._threads = [threading.Thread(target=self._drain, daemon=True)]
        if fileno is None:
            self._threads.append(threading.Thread(target=self._feed, args=(consumed,), daemon=True))
        for thread in self._threads:
            thread.start()

    @property
    def info(self) -> ObjectInfo:
        return self._source.info

    def _drain(self) -> None:
        assert self._proc.stderr is not None
        while data := os.read(self._proc.stderr.fileno(), CHUNK):
            self._stderr += data
            del self._stderr[:-_STDERR_KEEP]

    def _feed(self, consumed: bytes) -> None:
        import contextlib

        stdin = self._proc.stdin
        assert stdin is not None
        try:
            if consumed:
                stdin.write(consumed)
            while chunk := self._source.read(CHUNK):
                stdin.write(chunk)
        except BrokenPipeError:
            pass  # gpg stopped reading: its status says why
        except BaseException as exc:  # a store that fails mid-stream
            self._feed_error = exc
            self._proc.kill()
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def read(self, size: int = -1, /) -> bytes:
        if self._done:
            return b""
        assert self._proc.stdout is not None
        data = self._proc.stdout.read(size if size >= 0 else -1)
        if not data or size < 0:
            self._finish()
        return data

    def _finish(self) -> None:
        """At the end of the plaintext: did gpg decrypt and verify all of it?"""
        self._done = True
        code = self._proc.wait()
        for thread in self._threads:
            thread.join()
        if self._feed_error is not None:
            error = self._feed_error
            raise DecryptionError(f"cannot read '{self._where}': {error}") from None
        err = self._stderr.decode("utf-8", "replace")
        if code == 0 and _status(err, "DECRYPTION_OKAY") and not _status(err, "DECRYPTION_FAILED"):
            return
        raise DecryptionError(f"cannot decrypt '{self._where}': {self._why(err, code)}")

    def _why(self, err: str, code: int) -> str:
        if _status(err, "NO_SECKEY") and not _status(err, "DECRYPTION_KEY"):
            keys = ", ".join(args[0] for args in _status(err, "NO_SECKEY") if args)
            return (
                f"the secret key it is encrypted to ({keys}) is not in the keyring "
                "(GNUPGHOME or ~/.gnupg of this user)"
            )
        for args in _status(err, "ERROR"):
            if len(args) >= 2 and args[1].isdigit() and int(args[1]) & 0xFFFF == _BAD_PASSPHRASE:
                return "bad passphrase (from encryption_passphrase_command)"
        if _status(err, "BADMDC") or "manipulated" in err:
            return "the message has been altered or damaged (integrity check failed)"
        return f"gpg --decrypt failed (exit status {code}: {messages(err)})"

    def stop(self) -> None:
        """Stop gpg and its threads; ``source`` stays open (idempotent)."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for thread in self._threads:
            thread.join()
        import contextlib

        for stream in (self._proc.stdout, self._proc.stdin, self._proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._done = True

    def close(self) -> None:
        """:meth:`stop`, then close ``source``."""
        self.stop()
        self._source.close()

    def __enter__(self) -> DecryptingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decrypted_pieces(reader: DecryptingReader) -> Iterator[bytes]:
    """The plaintext of ``reader`` in ``CHUNK`` pieces (DecryptionError at the end if bad)."""
    while data := reader.read(CHUNK):
        yield data
