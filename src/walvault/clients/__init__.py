"""Programs PostgreSQL runs: walvault-wal-restore (restore_command), walvault-wal-archive."""
