"""Who walvault runs as: ``walvault_user``, the directories root prepares for it, handing over.

The two-user model (README "Two OS users"): PostgreSQL runs as its own OS user (``postgres``),
walvault as ``walvault_user`` (``walvault``); neither can read the other's files.  A command
started by root with ``walvault_user`` set does what a DBA expects of ``sudo walvault ...``:

1. :func:`prepare_directories` -- still as root, and only for what is *missing*: the
   directory of ``log_file`` (each missing component), ``walvault_home``, the lock directory
   and the directory of the restore service's socket are created and given to
   ``walvault_user``, and so is a missing ``log_file`` (0600).  These usually live where only
   root may create (``/var/log``, ``/run``, ``/var/lib``); nothing that exists is touched.
2. :func:`drop_to` -- then the process becomes ``walvault_user`` (supplementary groups,
   group, user, ``HOME``) *before* it opens the log or takes a lock, so every file the command
   creates belongs to that user.  A root command used to create the log file as root, and the
   walvault user could not log afterwards.

``recover --recovery-owner USER`` is the one command that needs root after its work: the copy
is made as ``walvault_user`` in a child process (:func:`run_dropped`), and root, in the parent,
hands the finished directory over to USER (:func:`hand_over`) -- only entries the child
created (owned by ``walvault_user``), never through a symbolic link, so a link or a hard link
planted in the tree cannot give USER anything else.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterable
from typing import NamedTuple

from walvault.errors import WalvaultError


class Account(NamedTuple):
    """An OS user: name, uid, primary gid, home."""

    name: str
    uid: int
    gid: int
    home: str


def account(name: str, what: str = "walvault_user") -> Account:
    """The OS user ``name``; a one-line error naming ``what`` asked for it when unknown."""
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise WalvaultError(f"{what} '{name}' does not exist on this system") from None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def current_user() -> str:
    """The name of the effective user (its uid when it has no name)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def must_switch(walvault_user: str | None) -> Account | None:
    """The account to become, when root runs a command with ``walvault_user`` set; None when
    this process already is the right user; an error when it is another, unprivileged one."""
    if not walvault_user:
        return None
    wanted = account(walvault_user)
    if os.geteuid() == wanted.uid:
        return None
    if os.geteuid() != 0:
        raise WalvaultError(
            f"please run walvault as the '{walvault_user}' user (walvault_user), not as "
            f"'{current_user()}'"
        )
    return wanted


def _make_owned_dirs(path: str, owner: Account, mode: int = 0o700) -> None:
    """Create the missing components of ``path`` and give each created one to ``owner``."""
    missing: list[str] = []
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue
        os.chown(directory, owner.uid, owner.gid)
        os.chmod(directory, mode)  # not narrowed by root's umask


def prepare_directories(
    owner: Account,
    *,
    directories: Iterable[tuple[str, int]],
    log_file: str | None,
) -> None:
    """As root: create what is missing of ``directories`` (path, mode) and of ``log_file``
    for ``owner`` (see the module docstring); what exists is left as it is."""
    for directory, mode in directories:
        _make_owned_dirs(directory, owner, mode)
    if log_file:
        _make_owned_dirs(os.path.dirname(log_file), owner)
        try:
            fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return
        try:
            os.fchown(fd, owner.uid, owner.gid)
        finally:
            os.close(fd)


def drop_to(owner: Account) -> None:
    """Become ``owner`` for good: groups, gid, uid (in that order), and its ``HOME``."""
    os.initgroups(owner.name, owner.gid)
    os.setgid(owner.gid)
    os.setuid(owner.uid)
    os.environ["HOME"] = owner.home
    os.environ["USER"] = os.environ["LOGNAME"] = owner.name


def run_dropped(owner: Account, work: Callable[[], int]) -> int:
    """Run ``work`` as ``owner`` in a child process; return its exit status.

    The parent keeps its privileges (for :func:`hand_over`) and does nothing meanwhile; the
    child drops them before ``work`` starts.  Output buffers are flushed on both sides so no
    line is printed twice.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's stack
        code = 1
        try:
            drop_to(owner)
            code = work()
        except BaseException as exc:  # pragma: no cover - work() reports its own errors
            print(f"ERROR: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        except KeyboardInterrupt:
            continue  # the child got the same SIGINT and ends its own way
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 130


def hand_over(top: str, *, creator: int, owner: Account) -> int:
    """Give the tree at ``top`` to ``owner``: every entry owned by ``creator`` (the uid that
    made the copy), the top included.  Symbolic links are changed themselves
    (``lchown``), never followed, and not descended into; an entry owned by anyone else, or
    a file with a second hard link (the copy makes none), is left alone and reported.
    Returns the number of entries changed."""
    changed = 0
    foreign: list[str] = []

    def give(path: str) -> None:
        nonlocal changed
        info = os.lstat(path)
        if info.st_uid != creator or (stat.S_ISREG(info.st_mode) and info.st_nlink > 1):
            foreign.append(path)
            return
        os.lchown(path, owner.uid, owner.gid)
        changed += 1

    give(top)
    for root, dirs, files in os.walk(top, followlinks=False):
        for name in dirs + files:
            give(os.path.join(root, name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise WalvaultError(
            f"{len(foreign)} entries under '{top}' were not created by the copy and were "
            f"not given to '{owner.name}': {shown}"
        )
    return changed


def why_not_writable(path: str) -> str | None:
    """Why this process cannot create entries in ``path`` (the nearest existing ancestor of
    it), or None when it can."""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        info = os.stat(probe)
    except OSError as exc:
        return f"'{probe}': {exc.strerror}"
    if not stat.S_ISDIR(info.st_mode):
        return f"'{probe}' is not a directory"
    if os.access(probe, os.W_OK | os.X_OK):
        return None
    import pwd

    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    return f"'{probe}' belongs to {owner} (mode {stat.S_IMODE(info.st_mode):04o})"


def make_destination(path: str, creator: Account | None) -> list[str]:
    """As root, before a copy made by ``creator``: create what is missing of ``path`` -- the
    parents as ``mkdir -p`` would (root's, 0755, so the final owner can reach it), ``path``
    itself 0700 for ``creator`` (root's own when None).  Returns what was created, deepest
    last (for :func:`remove_if_empty`)."""
    made: list[str] = []
    path = os.path.abspath(path)
    missing: list[str] = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    for directory in reversed(missing):
        final = directory == path
        os.mkdir(directory, 0o700 if final else 0o755)
        os.chmod(directory, 0o700 if final else 0o755)
        if final and creator is not None:
            os.chown(directory, creator.uid, creator.gid)
        made.append(directory)
    return made


def remove_if_empty(made: list[str]) -> None:
    """Undo :func:`make_destination` after a failure: remove the directories it created, the
    deepest first, as long as they are empty."""
    for directory in reversed(made):
        try:
            os.rmdir(directory)
        except OSError:
            return
