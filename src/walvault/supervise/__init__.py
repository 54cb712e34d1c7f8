"""Supervision: the cron pass that keeps archive-wal and receive-wal running, with back-off."""
