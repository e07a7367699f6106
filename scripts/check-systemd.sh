#!/usr/bin/env bash
# Check systemd/sigproxy.service offline: `systemd-analyze verify` (syntax, known directives, ExecStart binary)
# and `systemd-analyze security --offline=true` (the hardening exposure score).
#
# Usage: scripts/check-systemd.sh [SIGPROXY_BINARY]
#   SIGPROXY_BINARY: what ExecStart runs in the checked copy (default: .venv/bin/sigproxy, else `sigproxy` on
#   PATH). The shipped unit points at /usr/local/bin/sigproxy, which usually does not exist where this runs;
#   verify would only complain about that, so a temporary copy of the unit points at a real binary instead.
# Env: SIGPROXY_SECURITY_THRESHOLD (default 2.0, on systemd-analyze's 0.0-10.0 scale): fail when the exposure
#   score is above it.
# Needs systemd-analyze (Debian: package `systemd`); installs it with apt-get when run as root, otherwise
# prints how to and exits 0. Does not need a running systemd.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UNIT="$ROOT/systemd/sigproxy.service"
THRESHOLD="${SIGPROXY_SECURITY_THRESHOLD:-2.0}"
# systemd-analyze takes the threshold in tenths (0-100) and only as an integer.
THRESHOLD_TENTHS="$(awk -v t="$THRESHOLD" 'BEGIN { printf "%d", t * 10 + 0.5 }')"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "check-systemd: installing systemd (for systemd-analyze)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
    else
        echo "check-systemd: systemd-analyze not found and cannot install it (needs root and apt-get);" >&2
        echo "check-systemd: NOT CHECKED. Install it with: apt-get install systemd" >&2
        exit 0
    fi
fi

BIN="${1:-}"
if [ -z "$BIN" ]; then
    if [ -x "$ROOT/.venv/bin/sigproxy" ]; then
        BIN="$ROOT/.venv/bin/sigproxy"
    else
        BIN="$(command -v sigproxy || true)"
    fi
fi
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
    echo "check-systemd: no sigproxy binary to point ExecStart at (run 'make setup', or pass one)" >&2
    exit 1
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# Same unit name, so the checked copy is reported as sigproxy.service.
CHECKED="$WORK/sigproxy.service"
sed "s|^ExecStart=/usr/local/bin/sigproxy |ExecStart=$BIN |" "$UNIT" >"$CHECKED"
if ! grep -q "^ExecStart=$BIN " "$CHECKED"; then
    echo "check-systemd: ExecStart in $UNIT is not '/usr/local/bin/sigproxy ...' any more; update this script" >&2
    exit 1
fi

systemd-analyze --version | head -n 1
echo "== systemd-analyze verify (ExecStart=$BIN)"
# verify prints problems and exits non-zero on errors. Without a running systemd it may also print notes
# about the host (no D-Bus, other units on this machine): those lines do not mention sigproxy and are kept
# only so nothing is hidden.
verify_out="$(systemd-analyze verify "$CHECKED" 2>&1)" && verify_rc=0 || verify_rc=$?
if [ -n "$verify_out" ]; then
    printf '%s\n' "$verify_out"
fi
own="$(printf '%s\n' "$verify_out" | grep -F "sigproxy" || true)"
if [ "$verify_rc" -ne 0 ] || [ -n "$own" ]; then
    echo "check-systemd: verify FAILED (exit $verify_rc)" >&2
    exit 1
fi
echo "verify: ok"

echo "== systemd-analyze security --offline=true"
# --offline (systemd >= 250) reads the unit file instead of asking a running manager; --threshold turns the
# score into the exit status.
security_out="$(systemd-analyze security --offline=true --threshold="$THRESHOLD_TENTHS" --no-pager "$CHECKED" 2>&1)" \
    && security_rc=0 || security_rc=$?
printf '%s\n' "$security_out"
score="$(printf '%s\n' "$security_out" | sed -n 's/.*Overall exposure level for sigproxy.service: \([0-9.]*\).*/\1/p')"
if [ -z "$score" ]; then
    echo "check-systemd: no exposure score in the output" >&2
    exit 1
fi
echo "exposure score: $score (threshold $THRESHOLD)"
if [ "$security_rc" -ne 0 ]; then
    echo "check-systemd: exposure $score is above $THRESHOLD" >&2
    exit 1
fi
echo "check-systemd: ok"
