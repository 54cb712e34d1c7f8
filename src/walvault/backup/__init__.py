"""Base backups over the streaming connection, their metadata, retention and recovery."""
