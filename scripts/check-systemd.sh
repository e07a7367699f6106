#!/usr/bin/env bash
# Check systemd/sigproxy.service offline: `systemd-analyze verify` (syntax, known directives, ExecStart binary)
# and `systemd-analyze security --offline=true` (the hardening exposure score).
#
# Usage: scripts/check-systemd.sh [--update-baseline] [SIGPROXY_BINARY]
#   SIGPROXY_BINARY: what ExecStart runs in the checked copy (default: .venv/bin/sigproxy, else `sigproxy` on
#   PATH). The shipped unit points at /usr/local/bin/sigproxy, which usually does not exist where this runs;
#   verify would only complain about that, so a temporary copy of the unit points at a real binary instead.
#   --update-baseline: write the security checks as they are now to the baseline file, then check.
# Env: SIGPROXY_SECURITY_THRESHOLD (default 2.0, on systemd-analyze's 0.0-10.0 scale): fail when the exposure
#   score is above it.
#   SIGPROXY_SECURITY_BASELINE (default systemd/security-baseline.txt): the security checks as last reviewed,
#   one line each: mark (✓ set, ✗ not), the check's name, its exposure (- for none), its description.
# Prints the exposure score in one line and only the checks that differ from the baseline: a check whose
# exposure rose (or that is new with an exposure) fails; one that improved or changed otherwise is shown
# with the command that updates the baseline.
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

UPDATE=0
if [ "${1:-}" = "--update-baseline" ]; then
    UPDATE=1
    shift
fi
BASELINE="${SIGPROXY_SECURITY_BASELINE:-$ROOT/systemd/security-baseline.txt}"
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

# --offline (systemd >= 250) reads the unit file instead of asking a running manager; --threshold turns the
# score into the exit status. The table itself is compared as JSON (its rows; the score is only in the text).
security_out="$(systemd-analyze security --offline=true --threshold="$THRESHOLD_TENTHS" --no-pager "$CHECKED" 2>&1)" \
    && security_rc=0 || security_rc=$?
score="$(printf '%s\n' "$security_out" | sed -n 's/.*Overall exposure level for sigproxy.service: \([0-9.]*\).*/\1/p')"
if [ -z "$score" ]; then
    printf '%s\n' "$security_out"
    echo "check-systemd: no exposure score in the output" >&2
    exit 1
fi
systemd-analyze security --offline=true --json=short --no-pager "$CHECKED" >"$WORK/security.json"
if [ "$UPDATE" -eq 1 ]; then
    python3 - "$WORK/security.json" >"$BASELINE" <<'PY'
"""The baseline file: one line per check, as the JSON rows of `systemd-analyze security` give it."""
import json
import sys

print("# systemd-analyze security --offline=true for systemd/sigproxy.service, as last reviewed.")
print("# Update with: scripts/check-systemd.sh --update-baseline  (mark, check, exposure, description)")
for row in json.load(open(sys.argv[1], encoding="utf-8")):
    exposure = "-" if row["exposure"] is None else f"{float(row['exposure']):g}"
    print(f"{'✓' if row['set'] else '✗'} {row['name']:<45} {exposure:>4}  {row['description']}")
PY
    echo "check-systemd: baseline written to $BASELINE"
fi
if [ ! -f "$BASELINE" ]; then
    echo "check-systemd: no baseline $BASELINE; write it with: scripts/check-systemd.sh --update-baseline" >&2
    exit 1
fi
echo "exposure score: $score (threshold $THRESHOLD)"
diff_rc=0
python3 - "$WORK/security.json" "$BASELINE" <<'PY' || diff_rc=$?
"""Compare the security checks with the baseline: print the ones that differ; exit 1 if one got worse."""
import json
import sys

now = {}
for row in json.load(open(sys.argv[1], encoding="utf-8")):
    exposure = 0.0 if row["exposure"] is None else float(row["exposure"])
    now[row["name"]] = (bool(row["set"]), exposure, row["description"])
base = {}
for number, line in enumerate(open(sys.argv[2], encoding="utf-8"), 1):
    if not line.strip() or line.startswith("#"):
        continue
    parts = line.rstrip("\n").split(None, 3)
    if len(parts) < 3 or parts[0] not in ("✓", "✗"):
        print(f"check-systemd: {sys.argv[2]}:{number}: expected 'MARK CHECK EXPOSURE DESCRIPTION', got {line!r}",
              file=sys.stderr)
        sys.exit(2)
    try:
        exposure = 0.0 if parts[2] == "-" else float(parts[2])
    except ValueError:
        print(f"check-systemd: {sys.argv[2]}:{number}: exposure {parts[2]!r} is not a number or -", file=sys.stderr)
        sys.exit(2)
    base[parts[1]] = (parts[0] == "✓", exposure, parts[3] if len(parts) > 3 else "")


def show(check):
    set_, exposure, description = check
    return f"{'✓' if set_ else '✗'} {exposure:g}  {description}"


worse = better = 0
for name in sorted(now.keys() | base.keys()):
    was, new = base.get(name), now.get(name)
    if was == new:
        continue
    if new is None:
        print(f"  gone    {name}: was {show(was)}")
        better += 1
    elif was is None:
        kind = "WORSE" if new[1] > 0 else "new"
        print(f"  {kind:<7} {name}: {show(new)} (not in the baseline)")
        worse += new[1] > 0
        better += new[1] <= 0
    elif new[1] > was[1] or (was[0] and not new[0]):
        print(f"  WORSE   {name}: {show(new)} (baseline: {show(was)})")
        worse += 1
    else:
        kind = "better" if new[1] < was[1] else "changed"
        print(f"  {kind:<7} {name}: {show(new)} (baseline: {show(was)})")
        better += 1
if worse or better:
    print(f"check-systemd: {worse + better} of {len(now)} checks differ from {sys.argv[2]}; if that is intended, "
          "update it with: scripts/check-systemd.sh --update-baseline")
else:
    print(f"security: {len(now)} checks as in the baseline")
sys.exit(1 if worse else 0)
PY
failed=0
if [ "$security_rc" -ne 0 ]; then
    echo "check-systemd: exposure $score is above $THRESHOLD (full table: systemd-analyze security --offline=true)" >&2
    failed=1
fi
if [ "$diff_rc" -eq 1 ]; then
    echo "check-systemd: security checks got worse than the baseline (above)" >&2
    failed=1
elif [ "$diff_rc" -ne 0 ]; then
    echo "check-systemd: cannot compare with the baseline $BASELINE (above)" >&2
    failed=1
fi
if [ "$failed" -ne 0 ]; then
    exit 1
fi
echo "check-systemd: ok"
