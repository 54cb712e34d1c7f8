"""Clusters made from another one: restored base backups, streaming standbys.

:class:`pgharness.PgCluster` has these as its methods ``from_backup``, ``make_standby``
and ``sibling`` (the first argument is then the cluster itself).  The copy gets its own
port and socket directory, keeps the roles and passwords of its template and is destroyed
together with it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pgcluster_util import (
    DEFAULT_TIMEOUT,
    ConfValue,
    ensure_not_root,
    free_port,
    fresh_cluster_dir,
    wait_until,
)

if TYPE_CHECKING:
    from pgharness import PgCluster


def sibling(
    template: PgCluster,
    name: str,
    cluster_dir: Path,
    extra_conf: Mapping[str, ConfValue] | None = None,
) -> PgCluster:
    """A cluster object (nothing on disk is written) for ``cluster_dir/data``, with the
    settings, roles and binaries of ``template`` but its own port and socket directory.

    It is registered with ``template``, which destroys it when destroyed itself; write its
    settings (``_write_settings``) once its data directory exists.
    """
    socket_dir = Path(tempfile.mkdtemp(prefix="wvpg-", dir="/tmp"))
    settings = dict(template.settings)
    settings.update(cluster_name=name, port=free_port(), unix_socket_directories=str(socket_dir))
    settings.update(extra_conf or {})
    cluster = type(template)(
        name=name,
        cluster_dir=cluster_dir,
        bindir=template.bindir,
        port=int(settings["port"]),
        socket_dir=socket_dir,
        passwords=template.passwords,
        settings=settings,
    )
    template.standbys.append(cluster)
    return cluster


def _parent(primary: PgCluster, base_dir: str | os.PathLike[str] | None) -> Path:
    return Path(base_dir).resolve() if base_dir is not None else primary.cluster_dir.parent


def from_backup(
    primary: PgCluster,
    backup_dir: str | os.PathLike[str],
    name: str,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    extra_conf: Mapping[str, ConfValue] | None = None,
) -> PgCluster:
    """A cluster (not started) whose PGDATA is a copy of ``backup_dir``.

    For restores of a base backup of ``primary``: the copy gets its own port and socket
    directory (in ``harness.conf``); roles and passwords are those of ``primary``.  It is
    destroyed with ``primary``.  Add ``recovery.signal`` and a ``restore_command`` before
    :meth:`~pgharness.PgCluster.start`.
    """
    ensure_not_root()
    cluster_dir = fresh_cluster_dir(_parent(primary, base_dir) / name)
    restored = sibling(primary, name, cluster_dir, extra_conf)
    shutil.copytree(backup_dir, restored.data_dir, symlinks=True)
    restored.data_dir.chmod(0o700)
    restored._write_settings()
    return restored


def make_standby(
    primary: PgCluster,
    base_dir: str | os.PathLike[str] | None = None,
    name: str = "standby",
    *,
    slot: str | None = None,
    extra_conf: Mapping[str, ConfValue] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> PgCluster:
    """Clone ``primary`` with ``pg_basebackup -R -X stream`` and start the clone.

    Connects as the streaming role.  ``base_dir`` defaults to the parent directory of
    ``primary``.  With ``slot`` a physical replication slot of that name is created on the
    primary and used by the standby.  Returns once the standby is in recovery and
    ``streaming`` in the primary's ``pg_stat_replication``.  The standby is destroyed with
    ``primary``.
    """
    ensure_not_root()
    cluster_dir = fresh_cluster_dir(_parent(primary, base_dir) / name)
    standby = sibling(primary, name, cluster_dir, extra_conf)
    args = [
        "-D",
        str(standby.data_dir),
        "-d",
        primary.streaming_conninfo(),
        "-R",
        "-X",
        "stream",
        "-c",
        "fast",
        "--no-sync",
    ]
    if slot is not None:
        args += ["-C", "-S", slot]
    primary._run("pg_basebackup", *args, timeout=timeout + 60)
    standby._write_settings()
    standby.start(timeout=timeout)
    wait_until(
        standby.is_in_recovery,
        timeout=timeout,
        what=f"{name} to be in recovery",
        cluster=standby,
    )
    wait_until(
        lambda: primary.replication_state(name) == "streaming",
        timeout=timeout,
        what=f"{name} to be streaming from {primary.name}",
        cluster=standby,
    )
    return standby
