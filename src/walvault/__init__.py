"""walvault: continuous WAL streaming, archiving and point-in-time recovery for PostgreSQL."""

__version__ = "0.1.0"
