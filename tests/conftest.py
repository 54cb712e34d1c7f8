"""Shared pytest fixtures.

PostgreSQL fixtures (see ``tests/pgharness.py`` for the cluster API):

* ``pg_bindir``  (session) -- ``Path`` of the default server binaries (PostgreSQL 15, or
  ``$WALVAULT_PG_BINDIR``). Tests using it are skipped only when ``WALVAULT_SKIP_PG=1``;
  otherwise missing binaries are an error.
* ``pg_factory`` (function) -- ``PgFactory``: ``pg_factory(name=None, *,
  wal_segsize_mb=1, extra_conf=None, start=True, major=None) -> PgCluster``.  ``major``
  asks for the binaries of that PostgreSQL major (see ``pg_bindir_of``).  Every cluster it
  made (and every standby made from those with ``make_standby``) is destroyed at
  teardown, whether the test passed or not.
* ``pg``         (function) -- a started primary named ``primary``.

The version matrix (PostgreSQL 14 to 18: Debian's 15, the others from the cache that
``scripts/pg_binaries.sh`` fills; ``pgcluster_util.find_pg_bindir``):

* ``pg_bindir_of`` (session) -- ``pg_bindir_of(major) -> Path`` of that major's binaries, or
  the test is skipped (a major missing while ``WALVAULT_PG_MAJORS`` names it: an error, so
  CI cannot pass without it).
* ``pg_major`` (function) -- parametrised over every major of the matrix (ids ``pg14`` to
  ``pg18``; ``WALVAULT_PG_MAJORS="14 17"`` narrows it): the major, its binaries checked as
  ``pg_bindir_of`` does.

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

Barman fixtures (see ``tests/barmanharness.py``): ``barman_install`` (session) -- the Barman
3.20.1 that ``WALVAULT_BARMAN_BIN`` names, checked once: skipped when the variable is unset,
an error (never a skip) when it is set and Barman is missing, broken or another version;
``barman_factory`` (function) -- ``barman_factory(servers, *, name="barman",
barman_home=None, s3_endpoint=None) -> Barman``: a configuration file under ``tmp_path``;
``walvault_sshd`` (function) -- a started ``Sshd`` whose sessions find walvault under the
name ``barman`` first on their PATH (what barman-wal-restore calls).

Tests under ``tests/integration`` get the ``integration`` marker automatically; those under
``tests/matrix`` get ``integration`` and ``matrix``.
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

from barmanharness import (  # noqa: E402
    SKIP_REASON,
    Barman,
    BarmanBroken,
    BarmanInstall,
    barman_named_walvault,
    find_barman,
)
from pgharness import (  # noqa: E402
    ConfValue,
    HarnessError,
    PgCluster,
    find_pg_bindir,
    requested_majors,
)
from s3harness import TEST_ENVIRON, MotoServer, make_storage  # noqa: E402
from sshharness import Sshd, sshd_available  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs real PostgreSQL binaries")
    config.addinivalue_line("markers", "matrix: runs against every PostgreSQL major (14 to 18)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration_dir = _TESTS_DIR / "integration"
    matrix_dir = _TESTS_DIR / "matrix"
    for item in items:
        parents = Path(str(item.path)).parents
        if integration_dir in parents:
            item.add_marker(pytest.mark.integration)
        if matrix_dir in parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.matrix)


@pytest.fixture(scope="session")
def pg_bindir() -> Path:
    if os.environ.get("WALVAULT_SKIP_PG") == "1":
        pytest.skip("WALVAULT_SKIP_PG=1: tests needing a real PostgreSQL are skipped")
    return find_pg_bindir()


class BindirOf:
    """``bindir_of(major)``: the binaries of a major, found once per session; skip or fail."""

    def __init__(self) -> None:
        self.found: dict[int, Path | HarnessError] = {}

    def __call__(self, major: int) -> Path:
        if os.environ.get("WALVAULT_SKIP_PG") == "1":
            pytest.skip("WALVAULT_SKIP_PG=1: tests needing a real PostgreSQL are skipped")
        if major not in self.found:
            try:
                self.found[major] = find_pg_bindir(major)
            except HarnessError as exc:
                self.found[major] = exc
        found = self.found[major]
        if isinstance(found, Path):
            return found
        majors, required = requested_majors()
        if required and major in majors:
            raise found  # WALVAULT_PG_MAJORS names it (CI): missing binaries fail the test
        pytest.skip(f"PostgreSQL {major}: {found}")


@pytest.fixture(scope="session")
def pg_bindir_of() -> BindirOf:
    return BindirOf()


def _matrix_params() -> list[Any]:
    majors, _required = requested_majors()
    return [pytest.param(major, id=f"pg{major}") for major in majors]


@pytest.fixture(params=_matrix_params())
def pg_major(request: pytest.FixtureRequest, pg_bindir_of: BindirOf) -> int:
    major: int = request.param
    pg_bindir_of(major)
    return major


class PgFactory:
    """Creates throwaway clusters under ``base_dir`` and destroys them all at teardown."""

    def __init__(self, base_dir: Path, bindir: Path, bindir_of: BindirOf | None = None) -> None:
        self.base_dir = base_dir
        self.bindir = bindir
        self.bindir_of = bindir_of or BindirOf()
        self.clusters: list[PgCluster] = []

    def __call__(
        self,
        name: str | None = None,
        *,
        wal_segsize_mb: int = 1,
        extra_conf: Mapping[str, ConfValue] | None = None,
        start: bool = True,
        major: int | None = None,
    ) -> PgCluster:
        if name is None:
            name = f"pg{len(self.clusters) + 1}"
        cluster = PgCluster.create(
            self.base_dir,
            name=name,
            wal_segsize_mb=wal_segsize_mb,
            extra_conf=extra_conf,
            bindir=self.bindir if major is None else self.bindir_of(major),
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
def pg_factory(pg_bindir: Path, pg_bindir_of: BindirOf, tmp_path: Path) -> Iterator[PgFactory]:
    base_dir = tmp_path / "pg"
    base_dir.mkdir()
    factory = PgFactory(base_dir, pg_bindir, pg_bindir_of)
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
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test credentials for walvault's subprocesses (the endpoint is in the config)."""
    for key, value in TEST_ENVIRON.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def s3_environ(moto_server: MotoServer) -> dict[str, str]:
    return {**TEST_ENVIRON, "AWS_ENDPOINT_URL": moto_server.endpoint}


@pytest.fixture(scope="session")
def barman_install() -> BarmanInstall:
    broken = None
    try:
        install = find_barman()
    except BarmanBroken as exc:
        broken = str(exc)
    if broken is not None:  # set means "Barman is there": a broken one fails, never skips
        pytest.fail(f"Barman was announced but does not work: {broken}", pytrace=False)
    if install is None:
        pytest.skip(SKIP_REASON)
    return install


@pytest.fixture
def barman_factory(barman_install: BarmanInstall, tmp_path: Path) -> Any:
    def make(
        servers: Mapping[str, Mapping[str, Any]],
        *,
        name: str = "barman",
        barman_home: Path | None = None,
        s3_endpoint: str | None = None,
    ) -> Barman:
        return Barman(
            barman_install,
            tmp_path / name,
            servers,
            barman_home=barman_home,
            s3_endpoint=s3_endpoint,
        )

    return make


@pytest.fixture
def walvault_sshd(tmp_path: Path) -> Iterator[Sshd]:
    why = sshd_available()
    if why is not None:
        pytest.skip(why)
    named = barman_named_walvault(tmp_path / "barman-is-walvault")
    daemon = Sshd(
        tmp_path / "sshd",
        path=f"{named}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
    )
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
