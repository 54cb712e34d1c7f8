"""Measure the S3 client choice: obstore (through walvault's S3Storage) against boto3 (not a test).

Usage: python bench/s3_driver.py [--rounds N] [--process-rounds N]

Starts moto's S3 server on 127.0.0.1 (tests/s3harness.py) and measures, on the same server:

* import cost: a fresh ``python -c`` that imports the client (and builds a client), best of 5;
* warm requests: one PUT and one GET of a 16 MiB segment and of a 500 kB object from a
  client already built (median of ``--rounds``);
* a whole process per request, as an archive_command/restore_command pays it: interpreter,
  import, client, one PUT or GET (median of ``--process-rounds``).

The data is random (incompressible); the obstore side includes what S3Storage adds (the
SHA-256 of the body for the metadata, the digest check on read).  moto runs in Python on the
same cores, so absolute figures are moto's; the ratios are the client's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from s3harness import TEST_ENVIRON, MotoServer, make_storage  # noqa: E402

SIZES = {"16 MiB segment": 16 << 20, "500 kB object": 500_000}

IMPORTS = {
    "python -c pass": "pass",
    "import obstore": "import obstore",
    "obstore S3Store()": (
        "from obstore.store import S3Store; S3Store('b', region='us-east-1', "
        "access_key_id='k', secret_access_key='s')"
    ),
    "import boto3": "import boto3",
    "boto3.client('s3')": (
        "import boto3; boto3.client('s3', region_name='us-east-1', aws_access_key_id='k', "
        "aws_secret_access_key='s')"
    ),
}

PROCESS_OBSTORE = """
import sys
sys.path.insert(0, {tests!r})
from s3harness import make_storage
s = make_storage({url!r}, {endpoint!r})
if {op!r} == "put":
    s.put({key!r}, open({path!r}, "rb").read(), create_only=False)
else:
    r = s.open({key!r})
    with open({path!r} + ".out", "wb") as f:
        while piece := r.read(1 << 20):
            f.write(piece)
"""

PROCESS_BOTO3 = """
import boto3
c = boto3.client("s3", endpoint_url={endpoint!r}, region_name="us-east-1",
                 aws_access_key_id="k", aws_secret_access_key="s")
if {op!r} == "put":
    c.put_object(Bucket={bucket!r}, Key={key!r}, Body=open({path!r}, "rb").read())
else:
    body = c.get_object(Bucket={bucket!r}, Key={key!r})["Body"]
    with open({path!r} + ".out", "wb") as f:
        for piece in body.iter_chunks(1 << 20):
            f.write(piece)
"""


def best_import_ms(statement: str, rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True)
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def median_ms(action: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--process-rounds", type=int, default=3)
    args = parser.parse_args()

    import boto3

    print("import cost (fresh interpreter, best of 5, ms)")
    for name, statement in IMPORTS.items():
        print(f"  {name:22s} {best_import_ms(statement):7.0f}")

    with tempfile.TemporaryDirectory(prefix="wv-s3bench-") as tmp:
        server = MotoServer(Path(tmp) / "moto.log")
        server.start()
        try:
            bucket = server.create_bucket("bench")
            storage = make_storage(f"s3://{bucket}/ob", server.endpoint)
            client = boto3.client(
                "s3",
                endpoint_url=server.endpoint,
                region_name="us-east-1",
                aws_access_key_id=TEST_ENVIRON["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=TEST_ENVIRON["AWS_SECRET_ACCESS_KEY"],
            )
            print(f"\nwarm client, one request (median of {args.rounds}, ms)")
            print(
                f"  {'':16s} {'obstore PUT':>12s} {'boto3 PUT':>10s} {'obstore GET':>12s} "
                f"{'boto3 GET':>10s}"
            )
            for label, size in SIZES.items():
                data = os.urandom(size)
                key = f"warm-{size}"

                def ob_put(k: str = key, d: bytes = data) -> object:
                    return storage.put(k, d, create_only=False)

                def ob_get(k: str = key) -> object:
                    reader = storage.open(k)
                    assert reader is not None
                    with reader:
                        return reader.read()

                def bo_put(k: str = key, d: bytes = data) -> object:
                    return client.put_object(Bucket=bucket, Key=f"bo/{k}", Body=d)

                def bo_get(k: str = key) -> object:
                    return client.get_object(Bucket=bucket, Key=f"bo/{k}")["Body"].read()

                row = [median_ms(f, args.rounds) for f in (ob_put, bo_put, ob_get, bo_get)]
                print(f"  {label:16s} {row[0]:12.0f} {row[1]:10.0f} {row[2]:12.0f} {row[3]:10.0f}")

            print(f"\none process per request (median of {args.process_rounds}, ms)")
            print(
                f"  {'':16s} {'obstore PUT':>12s} {'boto3 PUT':>10s} {'obstore GET':>12s} "
                f"{'boto3 GET':>10s}"
            )
            for label, size in SIZES.items():
                path = str(Path(tmp) / f"data-{size}")
                Path(path).write_bytes(os.urandom(size))
                key = f"proc-{size}"
                row = []
                for op in ("put", "get"):
                    for template in (PROCESS_OBSTORE, PROCESS_BOTO3):
                        code = template.format(
                            tests=str(REPO / "tests"),
                            url=f"s3://{bucket}/ob",
                            endpoint=server.endpoint,
                            bucket=bucket,
                            op=op,
                            key=key if template is PROCESS_OBSTORE else f"bo/{key}",
                            path=path,
                        )
                        row.append(
                            median_ms(
                                lambda c=code: subprocess.run(
                                    [sys.executable, "-c", c], check=True
                                ),
                                args.process_rounds,
                            )
                        )
                print(f"  {label:16s} {row[0]:12.0f} {row[1]:10.0f} {row[2]:12.0f} {row[3]:10.0f}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
