"""Base backups to and from object storage: walvault against barman-cloud 3.20.1 (not a test).

Usage (as an unprivileged user -- PostgreSQL refuses root -- with a Python that imports
walvault and the test harness, e.g. the test venv scripts/test.sh builds)::

    WALVAULT_BARMAN_BIN=/opt/walvault-barman/venv/bin \\
        python bench/s3_backup.py [--scale 50] [--compression gzip,none] [--json OUT]

One run:

1. moto's S3 server on 127.0.0.1 (tests/s3harness.py), a PostgreSQL 15 cluster
   (tests/pgharness.py) filled by ``pgbench -i -s SCALE`` (scale 50 is ~750 MiB);
2. per compression: ``walvault backup`` (``basebackups_directory = s3://...``, the
   compression as ``backup_compression``) and ``barman-cloud-backup`` (``--gzip`` or none,
   its default ``-J 2``) of the same cluster into the same moto, each in its own prefix;
3. ``walvault recover`` (4 parallel downloads, the default) and ``barman-cloud-restore`` of
   those backups into new directories (only the copy: no PostgreSQL start);
4. prints a table: wall time, MiB/s of the cluster's size, stored size, and the peak
   memory of the command's whole process tree (the sum of the resident sets of the command
   and every descendant, sampled every 50 ms from /proc: barman-cloud-backup runs worker
   processes, walvault runs pg_basebackup).

moto runs in Python on the same two cores and keeps every object in memory, so absolute
rates are moto's; both tools pay the same server.  Numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from pgharness import PgCluster, find_pg_bindir  # noqa: E402
from s3harness import TEST_ENVIRON, MotoServer  # noqa: E402
from wvharness import WALVAULT, Walvault, streaming_server  # noqa: E402

MiB = 1 << 20


def tree_rss(root: int) -> int:
    """The resident set of ``root`` and all its descendants, in bytes (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


def measure(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``argv``; its wall time and the peak RSS of its process tree."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    elapsed = time.monotonic() - started
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return {"seconds": elapsed, "peak_rss": peak, "stdout": out.decode()}


def stored(moto: MotoServer, bucket: str, prefix: str) -> int:
    sys.path.insert(0, str(REPO / "src"))
    from s3harness import make_storage

    storage = make_storage(f"s3://{bucket}", moto.endpoint)
    return sum(info.size for info in storage.list(prefix))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale (50: ~750 MiB)")
    parser.add_argument("--compression", default="gzip,none", help="comma-separated codecs")
    parser.add_argument("--json", help="write the results there")
    args = parser.parse_args()
    barman_bin = Path(os.environ.get("WALVAULT_BARMAN_BIN", "/opt/walvault-barman/venv/bin"))
    if not (barman_bin / "barman-cloud-backup").exists():
        print(f"no barman-cloud-backup in {barman_bin} (set WALVAULT_BARMAN_BIN)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="wv-s3-backup-bench-"))
    moto = MotoServer(work / "moto.log")
    moto.start()
    (work / "pg").mkdir()
    pg = PgCluster.create(
        work / "pg",
        name="bench",
        wal_segsize_mb=16,
        bindir=find_pg_bindir(15),
        start=True,
        extra_conf={"shared_buffers": "128MB", "max_wal_size": "2GB"},
    )
    env = {**os.environ, **TEST_ENVIRON}
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        env.pop(key, None)
    results: list[dict[str, Any]] = []
    try:
        bindir = find_pg_bindir(15)
        subprocess.run(
            [
                str(bindir / "pgbench"),
                "-i",
                "-q",
                "-s",
                str(args.scale),
                "-h",
                str(pg.socket_dir),
                "-p",
                str(pg.port),
                "-U",
                pg.superuser,
                "postgres",
            ],
            check=True,
            capture_output=True,
        )
        size = int(pg.scalar("SELECT sum(pg_database_size(datname)) FROM pg_database"))
        print(f"cluster: {size / MiB:.0f} MiB (pgbench scale {args.scale})")
        bucket = moto.create_bucket("bench")
        for codec in args.compression.split(","):
            results += run_one(codec, pg, moto, bucket, work, env, size, barman_bin)
    finally:
        pg.destroy()
        moto.stop()
    print()
    print(f"{'step':<34} {'seconds':>8} {'MiB/s':>7} {'stored MiB':>10} {'peak RSS MiB':>12}")
    for row in results:
        print(
            f"{row['step']:<34} {row['seconds']:8.1f} {row['rate']:7.1f} "
            f"{row.get('stored', 0) / MiB:10.1f} {row['peak_rss'] / MiB:12.0f}"
        )
    for codec in args.compression.split(","):
        pairs = {r["step"]: r for r in results if r["codec"] == codec}
        for what in ("backup", "restore"):
            theirs = pairs[f"barman-cloud {what} ({codec})"]["seconds"]
            for step, row in pairs.items():
                if step.startswith(f"walvault {what}"):
                    ratio = theirs / row["seconds"]
                    print(f"{step}: {ratio:.1f}x barman-cloud's speed")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def run_one(
    codec: str,
    pg: PgCluster,
    moto: MotoServer,
    bucket: str,
    work: Path,
    env: dict[str, str],
    size: int,
    barman_bin: Path,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    url = f"s3://{bucket}/walvault-{codec}"
    options = streaming_server(
        pg,
        wals_directory=url,
        basebackups_directory=url,
        aws_endpoint_url=moto.endpoint,
        backup_compression=codec,
        immediate_checkpoint="true",
        archiver="on",
        streaming_archiver="off",
        slot_name=None,
        create_slot=None,
    )
    wv = Walvault(work / f"wv-{codec}", {"pg": options})
    conf = ["-c", str(wv.conf)]
    ours = measure([*WALVAULT, *conf, "-q", "backup", "pg"], env)
    listed = subprocess.run(
        [*WALVAULT, *conf, "list-backups", "--minimal", "pg"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    backup_id = listed.stdout.split()[0]
    rows.append(
        {
            "step": f"walvault backup ({codec})",
            "codec": codec,
            **ours,
            "stored": stored(moto, bucket, f"walvault-{codec}/pg/base/"),
        }
    )
    # the backup is WAITING_FOR_WALS (no archiver here): recover needs DONE, so mark it
    info_key = f"walvault-{codec}/pg/base/{backup_id}/backup.info"
    sys.path.insert(0, str(REPO / "src"))
    from s3harness import make_storage

    storage = make_storage(f"s3://{bucket}", moto.endpoint)
    reader = storage.open(info_key)
    assert reader is not None
    with reader:
        text = reader.read().decode().replace("status=WAITING_FOR_WALS", "status=DONE")
    storage.put(info_key, text.encode(), create_only=False)

    theirs_url = f"s3://{bucket}/barman-{codec}"
    flags = ["--gzip"] if codec == "gzip" else (["--zstd"] if codec == "zstd" else [])
    theirs = measure(
        [
            str(barman_bin / "barman-cloud-backup"),
            "--endpoint-url",
            moto.endpoint,
            *flags,
            "--immediate-checkpoint",
            "-h",
            str(pg.socket_dir),
            "-p",
            str(pg.port),
            "-U",
            pg.superuser,
            "-d",
            "postgres",
            theirs_url,
            "pg",
        ],
        env,
    )
    rows.append(
        {
            "step": f"barman-cloud backup ({codec})",
            "codec": codec,
            **theirs,
            "stored": stored(moto, bucket, f"barman-{codec}/pg/base/"),
        }
    )
    dest = work / f"restore-wv-{codec}"
    for jobs in ("4", "1"):
        argv = [*WALVAULT, *conf, "-q", "recover", "pg", backup_id, str(dest), "--get-wal"]
        ours = measure([*argv, "-j", jobs], env)
        step = f"walvault restore -j {jobs} ({codec})"
        rows.append({"step": step, "codec": codec, **ours})
        subprocess.run(["rm", "-rf", str(dest)], check=False)
    listing = subprocess.run(
        [
            str(barman_bin / "barman-cloud-backup-list"),
            "--endpoint-url",
            moto.endpoint,
            "--format",
            "json",
            theirs_url,
            "pg",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    barman_id = json.loads(listing.stdout)["backups_list"][0]["backup_id"]
    theirs = measure(
        [
            str(barman_bin / "barman-cloud-restore"),
            "--endpoint-url",
            moto.endpoint,
            theirs_url,
            "pg",
            barman_id,
            str(work / f"restore-barman-{codec}"),
        ],
        env,
    )
    rows.append({"step": f"barman-cloud restore ({codec})", "codec": codec, **theirs})
    for row in rows:
        row["rate"] = size / MiB / row["seconds"]
        row.pop("stdout", None)
    subprocess.run(["rm", "-rf", str(dest), str(work / f"restore-barman-{codec}")], check=False)
    return rows


if __name__ == "__main__":
    sys.exit(main())
