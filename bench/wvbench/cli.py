"""The command line: parse the options, run the sections, clean up, write JSON, print the table."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from wvbench import archive, encryption, getwal, lag, recovery, s3, scale, sshpush, sshrestore
from wvbench.common import (
    BARMAN_VERSION,
    BASE,
    HERE,
    SECTIONS,
    SEG,
    BenchError,
    Params,
    log,
    scratch_dir,
)
from wvbench.install import SYSTEM_PYTHON, Install, install_walvault
from wvbench.report import Results, machine_info, table, walvault_tree
from wvbench.runner import Bench
from wvbench.tools import find_tools, reap_strays

# --------------------------------------------------------------------------- main


def default_barman_venv() -> Path:
    """The venv whose ``bin`` WALVAULT_BARMAN_BIN names (the tests' Barman), else ours."""
    bin_dir = os.environ.get("WALVAULT_BARMAN_BIN")
    return Path(bin_dir).parent if bin_dir else BASE / "barman-venv"


def disk_check(params: Params, sections: Sequence[str]) -> None:
    usage = shutil.disk_usage(BASE)
    # pool + one restored copy + archives of the restore set, plus the sparse backlog's pages
    need = (params.pool_min + 40) * SEG * 2.5 + params.scale_backlog * 12 * 1024
    if "recovery" in sections:
        # two base backups of the pgbench cluster (~16 MB per scale unit) and a restored copy
        need += 3 * params.pgbench_scale * 16e6
    if usage.free < need:
        raise BenchError(
            f"{BASE} has {usage.free / 1e9:.1f} GB free; this run needs about {need / 1e9:.1f} GB"
        )


def main(argv: Sequence[str] | None = None, description: str | None = None) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a smaller run of about 3 minutes")
    parser.add_argument(
        "--json", type=Path, default=HERE / "results" / "latest.json", help="where to write JSON"
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--barman-venv",
        type=Path,
        default=Path(os.environ.get("BARMAN_VENV", default_barman_venv())),
        help="Barman 3.20.1's venv (default: the one WALVAULT_BARMAN_BIN is the bin of, as "
        "in the tests; else installed by bench/barman_env.sh if missing)",
    )
    parser.add_argument(
        "--walvault-python",
        default=SYSTEM_PYTHON,
        help="the Python of the venv walvault is pip-installed into, from this tree "
        f"(default: {SYSTEM_PYTHON})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (debugging)")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if os.geteuid() != 0:
        print(
            "bench/run.py must run as root: it creates the user walvault-bench, runs "
            "PostgreSQL as that user, and runs Barman as root (barman_user = root).",
            file=sys.stderr,
        )
        return 2

    params = Params.make(args.quick)
    results = Results()
    started = time.monotonic()
    BASE.mkdir(parents=True, exist_ok=True)
    os.chmod(BASE, 0o755)
    work = BASE / f"run-{os.getpid()}"

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    bench = None
    install: Install | None = None
    tree: dict[str, Any] = {}
    status = 0
    try:
        disk_check(params, sections)
        work.mkdir()
        tree = walvault_tree()  # what is copied and installed next
        install = install_walvault(work, args.walvault_python)
        tools = find_tools(args.barman_venv, install_barman=True, walvault_bindir=install.bindir)
        results.missing.extend(tools.missing)
        for line in tools.missing:
            log(f"MISSING: {line}")
        bench = Bench(params, tools, work, results)
        bench.setup()
        loads = results.details.setdefault("loadavg_1min", {})
        loads["start"] = os.getloadavg()[0]
        for section in sections:
            log(f"== {section} (load average {os.getloadavg()[0]:.1f})")
            loads[section] = os.getloadavg()[0]
            try:
                {
                    "archive": archive.archive_throughput,
                    "encryption": encryption.encryption_throughput,
                    "scale": scale.scale,
                    "getwal": getwal.getwal,
                    "ssh": sshrestore.ssh_restore,
                    "sshpush": sshpush.ssh_push,
                    "s3": s3.s3,
                    "lag": lag.lag,
                    "recovery": recovery.recovery,
                }[section](bench)
            except BenchError as exc:
                results.errors.append(f"{section}: {exc}")
                log(f"{section}: {exc}")
    except BenchError as exc:
        results.errors.append(str(exc))
        log(f"ERROR: {exc}")
        status = 1
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        status = 130
    finally:
        if bench is not None:
            bench.teardown()
        strays = reap_strays(str(work))
        if strays:
            log(f"stopped {len(strays)} leftover process(es) of this run: {strays}")
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(scratch_dir(), ignore_errors=True)

    elapsed = time.monotonic() - started
    results.details.setdefault("loadavg_1min", {})["end"] = os.getloadavg()[0]
    info = machine_info()
    if install is not None:
        info["python_walvault"] = install.python_version
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "quick" if args.quick else "full",
        "elapsed_seconds": round(elapsed, 1),
        "machine": info,
        "walvault_tree": tree,
        "walvault_install": None
        if install is None
        else {
            "how": "pip install (not editable) of a copy of the tree, .pyc compiled by pip",
            "venv": str(install.venv),
            "made_from": install.python,
            "python": install.python_version,
            "pyc_files": install.compiled,
            "seconds": round(install.seconds, 1),
            "packages": install.packages,
        },
        "versions": {
            "postgres": results.details.get("postgres_version"),
            "barman": bench.tools.barman_version if bench else None,
            "walvault": bench.tools.walvault_version if bench else None,
        },
        "params": asdict(params),
        "rows": [asdict(r) | {"advantage": r.advantage} for r in results.rows],
        "missing": results.missing,
        "errors": results.errors,
        "details": results.details,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")

    print()
    print(
        f"walvault vs Barman {BARMAN_VERSION} -- {info.get('cores')} cores ({info.get('cpu')}), "
        f"PostgreSQL {results.details.get('postgres_version')}, "
        f"{'quick' if args.quick else 'full'} run in {elapsed / 60:.1f} min"
    )
    tree = report["walvault_tree"]
    if tree:
        print(
            f"{report['versions']['walvault']}, tree at {tree.get('commit')} with "
            f"{tree.get('src_files_changed')} uncommitted file(s) under src/; "
            f"run {report['when']}"
        )
    if install is not None:
        print(f"walvault {install.describe()}")
    loads = results.details["loadavg_1min"]
    print(
        "1-min load average before each part: "
        + ", ".join(f"{k} {v:.1f}" for k, v in loads.items())
        + f" ({info.get('cores')} cores; other work on the machine inflates times)"
    )
    wal = results.details.get("wal")
    if wal:
        print(f"WAL: {wal['segments_collected']} real 16 MiB segments from {wal['generated_by']}")
    print()
    print(table(results))
    if results.missing:
        print("\nNot measured (missing):")
        for line in results.missing:
            print(f"  - {line}")
    if results.errors:
        print("\nErrors:")
        for line in results.errors:
            print(f"  - {line}")
    print(f"\nJSON: {args.json}")
    if results.errors and status == 0:
        status = 1
    return status
