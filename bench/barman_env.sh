#!/usr/bin/env bash
# Install Barman 3.20.1 into its own venv, for the side-by-side benchmarks (bench/run.py).
#
# Usage: bash bench/barman_env.sh [VENV_DIR]     (default: /var/tmp/walvault-bench/barman-venv)
#        BARMAN_PYTHON=/path/to/python3.12 bash bench/barman_env.sh
#
# Barman 3.20.x needs Python >= 3.12 (on Python 3.11 pip would silently pick 3.19.1), so the
# venv is built with pyenv's 3.12. That Python lives in root's home, so Barman runs as root
# (`barman_user = root` in the bench configuration); PostgreSQL runs as an unprivileged user.
# psycopg2 is built from source: it needs gcc and libpq-dev (pg_config). `barman recover`
# needs rsync. Missing Debian packages are installed with apt-get (as root).
# boto3 is installed too: the `s3` section runs Barman's cloud WAL storage
# (`wals_directory = s3://...`) and barman-cloud-wal-restore, which need it (the versions
# .ci/install-barman pins for the interop tests).
# Idempotent: an existing venv that already runs Barman 3.20.1 with boto3 is left as it is
# (one without boto3 gets it).
set -euo pipefail

BARMAN_VERSION=3.20.1
CLOUD_REQUIREMENTS=(boto3==1.44.18 botocore==1.44.18 s3transfer==0.19.3)
VENV=${1:-${BARMAN_VENV:-/var/tmp/walvault-bench/barman-venv}}

log() { printf 'barman_env: %s\n' "$*" >&2; }

# `barman --version` prints "3.20.1 Barman by EnterpriseDB (...)": compare the first word
barman_version() { "$1" --version 2>/dev/null | awk 'NR == 1 {print $1}'; }

# --- Debian packages: C compiler and libpq headers for psycopg2, rsync for recover
missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[[ -e /usr/include/postgresql/libpq-fe.h ]] || missing+=(libpq-dev)
command -v pg_config >/dev/null 2>&1 || [[ " ${missing[*]} " == *" libpq-dev "* ]] || missing+=(libpq-dev)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing packages: ${missing[*]} (run as root, or install them first)"
        exit 1
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # another apt-get may hold the dpkg lock: wait for it rather than fail
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# boto3 for Barman's cloud WAL storage and the barman-cloud clients
ensure_cloud() {
    if "$VENV/bin/python" -c 'import boto3, barman.cloud_providers.aws_s3' 2>/dev/null; then
        return
    fi
    log "installing ${CLOUD_REQUIREMENTS[*]} into $VENV (Barman's cloud WAL storage)"
    "$VENV/bin/python" -m pip install -q "${CLOUD_REQUIREMENTS[@]}"
    "$VENV/bin/python" -c 'import boto3, barman.cloud_providers.aws_s3'
}

if [[ -x "$VENV/bin/barman" && "$(barman_version "$VENV/bin/barman")" == "$BARMAN_VERSION" ]]; then
    ensure_cloud
    log "Barman $BARMAN_VERSION already installed in $VENV"
    echo "$VENV/bin/barman"
    exit 0
fi

# --- Python >= 3.12: $BARMAN_PYTHON, else pyenv's 3.12.1, else any pyenv 3.12.x, else python3.12
find_python() {
    if [[ -n "${BARMAN_PYTHON:-}" ]]; then
        echo "$BARMAN_PYTHON"
        return
    fi
    local root=""
    if command -v pyenv >/dev/null 2>&1; then
        root=$(pyenv root 2>/dev/null || true)
    fi
    local candidate
    for candidate in \
        "${root:+$root/versions/3.12.1/bin/python3}" \
        "$HOME/.pyenv/versions/3.12.1/bin/python3"; do
        [[ -n "$candidate" && -x "$candidate" ]] && { echo "$candidate"; return; }
    done
    for candidate in "${root:+$root}"/versions/3.12*/bin/python3 "$HOME"/.pyenv/versions/3.12*/bin/python3; do
        [[ -x "$candidate" ]] && { echo "$candidate"; return; }
    done
    command -v python3.12 || true
}
PY=$(find_python)
if [[ -z "$PY" || ! -x "$PY" ]]; then
    log "no Python 3.12 found (looked at \$BARMAN_PYTHON, \$(pyenv root)/versions/3.12*, ~/.pyenv, PATH)"
    exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
    log "$PY is $("$PY" -V 2>&1), Barman $BARMAN_VERSION needs >= 3.12"
    exit 1
fi
log "using $PY ($("$PY" -V 2>&1))"

# --- the venv (rebuilt from scratch if a previous attempt left it half done)
if [[ -e "$VENV" && ! -x "$VENV/bin/python" ]]; then
    rm -rf "$VENV"
fi
mkdir -p "$(dirname "$VENV")"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "barman[lz4,zstandard]==$BARMAN_VERSION" "${CLOUD_REQUIREMENTS[@]}"

got=$(barman_version "$VENV/bin/barman" || true)
if [[ "$got" != "$BARMAN_VERSION" ]]; then
    log "installed Barman reports version '$got', expected $BARMAN_VERSION"
    exit 1
fi
ensure_cloud
log "Barman $got installed in $VENV"
echo "$VENV/bin/barman"
