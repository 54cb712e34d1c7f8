"""Timeline history and backup history files for tests, written the way PostgreSQL writes them."""

from __future__ import annotations

from walvault.wal.names import format_lsn, lsn_to_segment

MiB = 1 << 20


def history_text(*switches: tuple[int, int, str]) -> str:
    """``<parent>\\t<LSN>\\t<reason>`` lines, with the blank line PostgreSQL leaves between a
    copied parent file and the appended line."""
    lines = [f"{tli}\t{format_lsn(lsn)}\t{reason}\n" for tli, lsn, reason in switches]
    return "\n".join(lines)


def backup_history(
    start: int,
    stop: int,
    *,
    tli: int = 1,
    stop_tli: int | None = None,
    seg_size: int = MiB,
    label: str = "pg_basebackup base backup",
    checkpoint: int | None = None,
    pg16: bool = False,
) -> tuple[str, str]:
    """(name, text) of the backup history file PostgreSQL 15 (or 16+) writes at backup stop.

    15 names the STOP file with XLByteToPrevSeg and puts STOP WAL LOCATION second; 16 uses
    XLByteToSeg and the same order (build_backup_content).
    """
    stop_tli = tli if stop_tli is None else stop_tli
    start_wal = lsn_to_segment(start, tli, seg_size).name
    stop_wal = lsn_to_segment(stop, stop_tli, seg_size, prev_on_boundary=not pg16).name
    checkpoint = start + 0x38 if checkpoint is None else checkpoint
    text = (
        f"START WAL LOCATION: {format_lsn(start)} (file {start_wal})\n"
        f"STOP WAL LOCATION: {format_lsn(stop)} (file {stop_wal})\n"
        f"CHECKPOINT LOCATION: {format_lsn(checkpoint)}\n"
        "BACKUP METHOD: streamed\n"
        "BACKUP FROM: primary\n"
        "START TIME: 2026-11-25 16:00:39 UTC\n"
        f"LABEL: {label}\n"
        f"START TIMELINE: {tli}\n"
        "STOP TIME: 2026-11-25 16:00:41 UTC\n"
        f"STOP TIMELINE: {stop_tli}\n"
    )
    name = f"{stop_tli:08X}{start_wal[8:]}.{start % seg_size:08X}.backup"
    return name, text
