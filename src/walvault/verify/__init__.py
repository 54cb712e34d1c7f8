"""``walvault verify``: prove that the archive can be restored, without restoring it.

* :mod:`.source`   -- the one way verify reads archived files (``read_plain``), the archive's
  index of segments, ``.partial`` files and timeline history files;
* :mod:`.plan`     -- pure: which timelines a recovery from a position can follow, and the
  segments (timeline, number) it reads on the way, as PostgreSQL picks them;
* :mod:`.chain`    -- walks such a path segment by segment with :mod:`walvault.wal.records`,
  carrying the record chain across segment boundaries; the RPO is where it stops;
* :mod:`.files`    -- a backup's files against its ``backup_manifest`` (pg_verifybackup);
* :mod:`.report`   -- ``verify SERVER [BACKUP_ID|all]``: the lines, as check results;
* :mod:`.incremental` -- cron's cheap pass over new segments only, with its state file, and
  the ``WAL verification`` line of ``check``.
"""
