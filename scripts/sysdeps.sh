#!/usr/bin/env bash
# Make sure the system packages the test suite needs are installed (idempotent).
#   curl                                   - smoke tests
#   radosgw ceph-mon ceph-osd ceph-common  - Ceph RADOS Gateway, a real SigV4 verifier (tests/servers/rgw.py)
#   postgresql                             - the connection store's shared database (tests/servers/postgres.py)
#   chromium chromium-driver               - a real headless browser for the connect page (Selenium)
#   gcc python3-dev                        - a C compiler and Python's headers: the install compiles the hot
#                                            modules with mypyc (setup.py), and the suite tests them compiled
# Prints nothing and exits 0 when everything is already there.
set -euo pipefail

PACKAGES=(curl radosgw ceph-mon ceph-osd ceph-common postgresql chromium chromium-driver gcc python3-dev)
COMMANDS=(curl radosgw ceph-mon ceph-osd ceph monmaptool ceph-authtool radosgw-admin chromium chromedriver gcc)
PYTHON=${PYTHON:-python3}

missing() {
    local c out=()
    for c in "${COMMANDS[@]}"; do
        command -v "$c" >/dev/null 2>&1 || out+=("$c")
    done
    # PostgreSQL's server binaries live under /usr/lib/postgresql/VERSION/bin, not on PATH.
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || out+=(initdb)
    # The headers of the Python the virtualenv is made from (a Debian python3 needs python3-dev).
    "$PYTHON" -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_path("include"), "Python.h"))' \
        2>/dev/null || out+=(Python.h)
    echo "${out[*]}"
}

[ -z "$(missing)" ] && exit 0

install() {
    "$@" apt-get update
    "$@" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}"
}

if ! command -v apt-get >/dev/null 2>&1; then
    echo "sysdeps: apt-get not found; install these packages by hand: ${PACKAGES[*]}" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    install
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    install sudo -n
else
    echo "sysdeps: missing commands ($(missing)); not root and no passwordless sudo." >&2
    echo "sysdeps: run as root: apt-get install -y --no-install-recommends ${PACKAGES[*]}" >&2
    exit 1
fi

still=$(missing)
if [ -n "$still" ]; then
    echo "sysdeps: installed ${PACKAGES[*]} but these commands are still missing: $still" >&2
    exit 1
fi
