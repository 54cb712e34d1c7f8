"""Shared pytest fixtures.

PostgreSQL fixtures (see ``tests/pgharness.py`` for the cluster API):

* ``pg_bindir``  (session) -- ``Path`` of the PostgreSQL 15 server binaries.
  Tests using it are skipped only when ``WALVAULT_SKIP_PG=1``; otherwise missing
  binaries are an error.
* ``pg_factory`` (function) -- ``PgFactory``: ``pg_factory(name=None, *,
  wal_segsize_mb=1, extra_conf=None, start=True) -> PgCluster``.  Every cluster it
  made (and every standby made from those with ``make_standby``) is destroyed at
  teardown, whether the test passed or not.
* ``pg``         (function) -- a started primary named ``primary``.

``sshd`` (function) -- a started :class:`sshharness.Sshd` (skipped where no sshd is
installed); remote commands run with this interpreter's ``bin`` first on PATH.

GnuPG fixtures (see ``tests/gpgharness.py``): ``gpg_keys`` (session) -- two keys (RSA and
ECC subkeys, one passphrase) generated once; ``gnupg_home`` (function) -- a fresh
``GNUPGHOME`` with both, set in the environment (walvault and PostgreSQL started by the test
inherit it).

S3 fixtures (see ``tests/s3harness.py``): ``moto_server`` (session) -- moto's S3 server on
127.0.0.1, started on first use and stopped at the end of the session; ``s3_bucket``
(function) -- the name of a fresh bucket on it, everything reset after the test;
``s3_storage`` (function) -- an ``S3Storage`` for ``s3://<s3_bucket>/walvault-test`` with
short timeouts; ``s3_environ`` -- the AWS_* variables (endpoint, keys, region) a walvault
subprocess needs to reach ``moto_server``.

Tests under ``tests/integration`` get the ``integration`` marker automatically.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

_TESTS_DIR = Path(__file__).resolve().parent
if str(_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(_TESTS_DIR))

from pgharness import ConfValue, PgCluster, find_pg_bindir  # noqa: E402
from s3harness import TEST_ENVIRON, MotoServer, make_storage  # noqa: E402
from sshharness import Sshd, sshd_available  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs real PostgreSQL binaries")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration_dir = _TESTS_DIR / "integration"
    for item in items:
        if integration_dir in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def pg_bindir() -> Path:
    if os.environ.get("WALVAULT_SKIP_PG") == "1":
        pytest.skip("WALVAULT_SKIP_PG=1: tests needing a real PostgreSQL are skipped")
    return find_pg_bindir(15)


class PgFactory:
    """Creates throwaway clusters under ``base_dir`` and destroys them all at teardown."""

    def __init__(self, base_dir: Path, bindir: Path) -> None:
        self.base_dir = base_dir
        self.bindir = bindir
        self.clusters: list[PgCluster] = []

    def __call__(
        self,
        name: str | None = None,
        *,
        wal_segsize_mb: int = 1,
        extra_conf: Mapping[str, ConfValue] | None = None,
        start: bool = True,
    ) -> PgCluster:
        if name is None:
            name = f"pg{len(self.clusters) + 1}"
        cluster = PgCluster.create(
            self.base_dir,
            name=name,
            wal_segsize_mb=wal_segsize_mb,
            extra_conf=extra_conf,
            bindir=self.bindir,
            start=start,
        )
        self.clusters.append(cluster)
        return cluster

    def cleanup(self) -> None:
        errors: list[BaseException] = []
        while self.clusters:
            cluster = self.clusters.pop()
            try:
                cluster.destroy()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def pg_factory(pg_bindir: Path, tmp_path: Path) -> Iterator[PgFactory]:
    base_dir = tmp_path / "pg"
    base_dir.mkdir()
    factory = PgFactory(base_dir, pg_bindir)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def pg(pg_factory: PgFactory) -> PgCluster:
    return pg_factory("primary")


@pytest.fixture
def walvault_factory(tmp_path: Path) -> Iterator[Any]:
    """``walvault_factory(servers) -> Walvault``: a home and configuration; processes stopped."""
    from wvharness import Walvault

    made: list[Walvault] = []

    def make(servers: Mapping[str, Mapping[str, Any]], name: str = "walvault") -> Walvault:
        wv = Walvault(tmp_path / name, servers)
        made.append(wv)
        return wv

    try:
        yield make
    finally:
        for wv in made:
            wv.cleanup()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    why = sshd_available()
    if why is not None:
        pytest.skip(why)
    daemon = Sshd(
        tmp_path / "sshd", path=f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
    )
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def gpg_keys() -> Iterator[Any]:
    """The session's GnuPG keys (``tests/gpgharness.py``: ``Keys``), made once."""
    from gpgharness import Keys

    keys = Keys()
    try:
        yield keys
    finally:
        keys.cleanup()


@pytest.fixture
def gnupg_home(gpg_keys: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh GNUPGHOME holding both keys (public and secret), set in the environment."""
    home: Path = gpg_keys.home()
    monkeypatch.setenv("GNUPGHOME", str(home))
    return home


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> Iterator[str]:
    name = moto_server.create_bucket()
    try:
        yield name
    finally:
        moto_server.reset()


@pytest.fixture
def s3_storage(moto_server: MotoServer, s3_bucket: str) -> Any:
    return make_storage(f"s3://{s3_bucket}/walvault-test", moto_server.endpoint)


@pytest.fixture
def s3_environ(moto_server: MotoServer) -> dict[str, str]:
    return {**TEST_ENVIRON, "AWS_ENDPOINT_URL": moto_server.endpoint}
