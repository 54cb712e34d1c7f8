"""walvault vs Barman 3.20.1, side by side on the same real WAL (a benchmark, not a test).

Usage (as root, with a Python that can import walvault, used to check the archives):

    /opt/wv-venv/bin/python bench/run.py [--quick] [--json OUT.json] [--sections LIST] [--keep]
                                         [--barman-venv DIR] [--walvault-python PYTHON]

What it does, in one run:

1. installs Barman 3.20.1 into its own venv if needed (``bench/barman_env.sh``), and walvault
   as it is deployed: a regular (not editable) ``pip install`` of a copy of this tree, as it
   is, into a fresh venv of the run made from ``/usr/bin/python3`` (pip compiles the
   ``.pyc`` files; dependencies pinned to the versions beside the bench's Python);
2. creates a throwaway PostgreSQL 15 cluster (16 MiB segments) owned by the unprivileged user
   ``walvault-bench`` under ``/var/tmp/walvault-bench/``, streams its WAL with
   ``pg_receivewal`` on a slot while ``pgbench -i`` then ``pgbench -T`` run, and keeps the
   finished segments as a pool of real WAL;
3. ``archive``: ``archive-wal`` throughput of each tool for no compression, gzip, zstd and lz4,
   each at its default (medium) level, on the same segments (hard-linked into each tool's
   ``streaming/`` with one trailing ``.partial``), median of several runs, then a check that
   every segment is in each archive and decompresses to the original bytes;
4. ``scale``: one run with ``streaming_archiver_batch_size = 1000`` over a backlog of 1,000 and
   of 200,000 files (sparse 16 MiB files whose first page is a real page header, patched with
   the page address of each file's name, so every file is a valid segment for its name);
5. ``getwal``: one ``get-wal`` call, one ``restore_command`` call, and a replay-style restore
   of consecutive segments through ``restore_command`` (serial, and with prefetch ``-p 4`` for
   walvault), each tool reading its own zstd archive;
   ``ssh``: the same replay through ``barman-wal-restore`` and ``walvault-wal-restore`` over
   ssh to a throwaway sshd on 127.0.0.1, serial and with ``-p 4``, with and without a
   shared ssh connection (ControlMaster);
6. ``lag``: each tool's receiver in turn (started by its ``cron``, own slot and
   application_name) while ``pgbench -c 4 -j 2 -T 20`` runs; every 100 ms, how far its
   ``write_lsn``/``flush_lsn`` in pg_stat_replication are behind ``pg_current_wal_lsn()``;
7. ``recovery``: each tool backs up the cluster (``backup --wait``, postgres method), pgbench
   writes ~10 more segments that both archive, then each tool's ``recover`` of its latest
   backup into a new directory is timed up to the end of recovery of the started server,
   and both recovered clusters must hold the same rows;
8. prints a table (and writes JSON, default ``bench/results/latest.json``); peak memory is the
   maximum resident set size of the command's process tree (GNU time).

Everything it creates (cluster, WAL pool, archives) is removed at the end, and its PostgreSQL
is stopped even on failure. Figures that cannot be measured (e.g. a walvault command that is
not built yet) are reported as missing, never invented.

The code is in ``bench/wvbench/`` (one module per part); this file is only the entry point.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from wvbench import cli


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
