#!/usr/bin/env bash
# scripts/test.sh -- THE test command of walvault:   bash scripts/test.sh [pytest args...]
#
# Runs, in order, stopping at the first failure and exiting with its code:
#   ruff check src tests bench; ruff format --check src tests bench; mypy;
#   python -m pytest -q -p no:cacheprovider "$@"
#   and, as root, the two-user deployment test tests/deploy (see below)
# pytest's "no tests collected" (exit 5) is a failure too.
#
# The integration tests start real PostgreSQL clusters, and PostgreSQL refuses to
# run as root, so:
#   * As root (CI runs `bash .ci/run` as root): make sure the system user
#     walvault-test exists (home /var/lib/walvault-test), copy the working tree
#     (without .git, .venv, caches, *.egg-info) to a fresh /var/tmp/walvault-test/src
#     owned by that user, create the venv /var/tmp/walvault-test/venv from
#     /usr/bin/python3 as that user (reused while the sha256 of pyproject.toml and
#     the Python version are unchanged), `pip install -e src[test]` into it and run
#     every check as that user with a minimal environment (HOME, PATH, LANG, CI,
#     TERM and WALVAULT_* are passed through). Runs are serialised with a lock.
#     Then, when the whole suite ran (no test named: options only) or an argument names tests/deploy, root
#     runs tests/deploy itself with the same venv: PostgreSQL as the system user
#     walvault-pgtest (created if needed), walvault as walvault-test, root as the DBA
#     (every process started through runuser as its user).
#   * As any other user: use the venv ${WALVAULT_VENV:-<repo>/.venv} (made from
#     /usr/bin/python3 if present, else python3), install into it and run the
#     checks in place.
#
# Environment knobs:
#   WALVAULT_SKIP_LINT=1   skip ruff and mypy (quick local runs), pytest only
#   WALVAULT_SKIP_PG=1     skip the tests that need a real PostgreSQL
#   WALVAULT_PG_BINDIR     PostgreSQL server binaries to use (default: version 15)
#   WALVAULT_PG_BINARIES   where scripts/pg_binaries.sh put PostgreSQL 14, 16, 17, 18 for
#                          the version matrix (tests/matrix; default
#                          /var/cache/walvault/postgresql); a major not found there, in
#                          /usr/lib/postgresql/<major>/bin or WALVAULT_PG_BINDIR is skipped
#   WALVAULT_PG_MAJORS     the majors of the matrix, e.g. "14 18" (default: 14 to 18);
#                          when set, a major whose binaries are missing fails (.ci/run sets it)
#   WALVAULT_VENV          venv location for non-root runs
#   WALVAULT_TEST_WORK     as root: the test user's copy, venv and lock (default
#                          /var/tmp/walvault-test); give each checkout its own to run
#                          several checkouts' tests at once
#   WALVAULT_TEST_FULL_FS  a small filesystem the test user may fill (the full-disk tests);
#                          as root, test.sh mounts a 64 MiB tmpfs at $WORK/full-fs and sets
#                          it; without one those tests are skipped, saying why
#
# Examples:  bash scripts/test.sh
#            WALVAULT_SKIP_LINT=1 bash scripts/test.sh tests/integration -x
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

TEST_USER=walvault-test
TEST_HOME=/var/lib/walvault-test
#: PostgreSQL's OS user in the two-user deployment test (tests/deploy), created when missing
PG_TEST_USER=walvault-pgtest
WORK="${WALVAULT_TEST_WORK:-/var/tmp/walvault-test}"

section() {
    printf '\n==== %s ====\n' "$*"
}

# venv_stamp PYTHON -> what the venv was built for (pyproject.toml + interpreter)
venv_stamp() {
    local py="$1" pyproject="$2"
    printf '%s %s\n' \
        "$(sha256sum "$pyproject" | cut -d' ' -f1)" \
        "$("$py" -c 'import sys; print(sys.version.split()[0])')"
}

# Run the checks from the current directory with the venv's tools on PATH.
# Used in both modes (as root: invoked as the test user via "--as-test-user").
run_checks() {
    local rc=0
    if [[ "${WALVAULT_SKIP_LINT:-0}" == 1 ]]; then
        section "lint and type checks skipped (WALVAULT_SKIP_LINT=1)"
    else
        section "ruff check src tests bench"
        ruff check src tests bench || return $?
        section "ruff format --check src tests bench"
        ruff format --check src tests bench || return $?
        section "mypy"
        mypy || return $?
    fi
    section "pytest${*:+ $*}"
    python -m pytest -q -p no:cacheprovider "$@" || rc=$?
    if [[ $rc -eq 5 ]]; then
        echo "test.sh: pytest collected no tests (exit 5): treated as a failure" >&2
    fi
    return "$rc"
}

# quietly PROGRAM ARGS...: run, show the output only if it fails
quietly() {
    local log rc=0
    log="$(mktemp)"
    "$@" >"$log" 2>&1 || rc=$?
    if [[ $rc -ne 0 ]]; then
        cat "$log" >&2
        echo "test.sh: failed (exit $rc): $*" >&2
    fi
    rm -f "$log"
    return "$rc"
}

# ensure_venv VENV_DIR BASE_PYTHON SRC_DIR: create/reuse the venv, install SRC_DIR[test]
ensure_venv() {
    local venv="$1" base_py="$2" src="$3"
    local want have=""
    want="$(venv_stamp "$base_py" "$src/pyproject.toml")"
    [[ -f "$venv/.walvault-stamp" ]] && have="$(cat "$venv/.walvault-stamp")"
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    if [[ "$want" != "$have" || ! -x "$venv/bin/python" ]]; then
        section "creating venv $venv (installing $src[test])"
        rm -rf "$venv"
        "$base_py" -m venv "$venv"
        quietly "$venv/bin/python" -m pip install --upgrade pip 'setuptools>=68' wheel
        quietly "$venv/bin/python" -m pip install --no-build-isolation -e "$src[test]"
        printf '%s\n' "$want" >"$venv/.walvault-stamp"
    else
        section "reusing venv $venv (reinstalling $src in editable mode)"
        # Dependencies are unchanged (same pyproject.toml); refresh the editable
        # install of this tree only.
        quietly "$venv/bin/python" -m pip install --no-build-isolation --no-deps -e "$src"
    fi
}

# ---------------------------------------------------------------- test-user side
if [[ "${1:-}" == "--as-test-user" ]]; then
    shift
    if [[ "$(id -u)" == 0 ]]; then
        echo "test.sh: --as-test-user is internal; run 'bash scripts/test.sh' instead" >&2
        exit 2
    fi
    cd "$WORK/src"
    ensure_venv "$WORK/venv" /usr/bin/python3 "$WORK/src"
    export PATH="$WORK/venv/bin:$PATH"
    run_checks "$@"
    exit $?
fi

# ---------------------------------------------------------------- not root
if [[ "$(id -u)" != 0 ]]; then
    cd "$REPO"
    venv="${WALVAULT_VENV:-$REPO/.venv}"
    base_py=/usr/bin/python3
    [[ -x "$base_py" ]] || base_py="$(command -v python3)"
    ensure_venv "$venv" "$base_py" "$REPO"
    export PATH="$venv/bin:$PATH"
    run_checks "$@"
    exit $?
fi

# ---------------------------------------------------------------- root
section "preparing unprivileged user $TEST_USER"
if ! id -u "$TEST_USER" >/dev/null 2>&1; then
    useradd --system --create-home --home-dir "$TEST_HOME" --shell /bin/bash "$TEST_USER"
fi
mkdir -p "$TEST_HOME"
chown "$TEST_USER:" "$TEST_HOME"

mkdir -p "$WORK"
chown "$TEST_USER:" "$WORK"
chmod 755 "$WORK"

# One run at a time: the source copy and the venv are shared.
exec 9>"$WORK/.lock"
if ! flock -n 9; then
    echo "test.sh: another run holds $WORK/.lock, waiting..." >&2
    flock 9
fi

section "copying $REPO to $WORK/src"
rm -rf "$WORK/src"
install -d -o "$TEST_USER" -g "$(id -gn "$TEST_USER")" -m 755 "$WORK/src"
tar -C "$REPO" -cf - \
    --exclude=./.git --exclude=.venv --exclude=__pycache__ --exclude='*.egg-info' \
    --exclude=.mypy_cache --exclude=.pytest_cache --exclude=.ruff_cache --exclude=.hypothesis \
    . | tar -C "$WORK/src" --no-same-owner -xf -
chown -R "$TEST_USER:" "$WORK/src"

# The helper copy of this script, runnable by the test user.
script="$WORK/src/scripts/test.sh"

env_args=(
    "HOME=$TEST_HOME"
    "USER=$TEST_USER"
    "LOGNAME=$TEST_USER"
    "PATH=/usr/local/bin:/usr/bin:/bin"
    "LANG=C.UTF-8"
    "MYPY_CACHE_DIR=$WORK/mypy_cache"
    "RUFF_CACHE_DIR=$WORK/ruff_cache"
)
[[ -n "${CI:-}" ]] && env_args+=("CI=$CI")
[[ -n "${TERM:-}" ]] && env_args+=("TERM=$TERM")
while IFS='=' read -r var _; do
    env_args+=("$var=${!var}")
done < <(env | grep -E '^WALVAULT_[A-Z0-9_]*=' || true)

# The full-disk tests need a filesystem they can fill without harming anything: a small
# tmpfs owned by the test user (only root may mount it).  Unmounted (lazily: a process the
# tests left could still hold a file) when this script ends.
full_fs="$WORK/full-fs"
mkdir -p "$full_fs"
if mountpoint -q "$full_fs" || mount -t tmpfs -o "size=64m,mode=0700,uid=$(id -u "$TEST_USER"),gid=$(id -g "$TEST_USER")" walvault-full-fs "$full_fs" 2>/dev/null; then
    find "$full_fs" -mindepth 1 -delete
    trap 'umount -l "$full_fs" 2>/dev/null || true' EXIT
    env_args+=("WALVAULT_TEST_FULL_FS=$full_fs")
else
    echo "test.sh: could not mount a tmpfs at $full_fs: the full-disk tests will be skipped" >&2
fi

cd /
rc=0
runuser -u "$TEST_USER" -- env -i "${env_args[@]}" \
    bash "$script" --as-test-user "$@" </dev/null || rc=$?

# The two-user deployment test (tests/deploy): PostgreSQL as one OS user, walvault as another,
# root as the DBA.  Starting processes as other users needs root, so it runs here, as root,
# after the suite (which skipped it), when the whole suite was asked for or tests/deploy was
# named.  Root's pytest only orchestrates: every walvault and PostgreSQL process it starts
# runs as its own user through runuser.
# (options alone, e.g. .ci/run's --durations=30, still ask for the whole suite)
deploy_args=()
named_tests=0
for arg in "$@"; do
    [[ "$arg" != -* ]] && named_tests=1
    [[ "$arg" == tests/deploy* ]] && deploy_args+=("$arg")
done
if [[ $named_tests -eq 0 ]]; then
    deploy_args=(tests/deploy)
fi
if [[ $rc -eq 0 && ${#deploy_args[@]} -gt 0 && "${WALVAULT_SKIP_PG:-0}" != 1 ]]; then
    section "two-user deployment test, as root: ${deploy_args[*]}"
    if ! id -u "$PG_TEST_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
            "$PG_TEST_USER"
    fi
    root_env=(
        "HOME=/root"
        "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        "LANG=C.UTF-8"
        "PYTHONDONTWRITEBYTECODE=1"
        "WALVAULT_TEST_WALVAULT_USER=$TEST_USER"
        "WALVAULT_TEST_PG_USER=$PG_TEST_USER"
    )
    [[ -n "${WALVAULT_PG_BINDIR:-}" ]] && root_env+=("WALVAULT_PG_BINDIR=$WALVAULT_PG_BINDIR")
    (cd "$WORK/src" && env -i "${root_env[@]}" "$WORK/venv/bin/python" -m pytest -q \
        -p no:cacheprovider "${deploy_args[@]}" </dev/null) || rc=$?
    if [[ $rc -eq 5 ]]; then
        echo "test.sh: pytest collected no deployment tests (exit 5): treated as a failure" >&2
    fi
fi
if [[ $rc -eq 0 ]]; then
    section "all checks passed"
else
    section "FAILED (exit $rc)"
fi
exit "$rc"
