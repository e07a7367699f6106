"""scripts/check-systemd.sh against the real systemd-analyze: a short report (the score, then only the checks
that differ from systemd/security-baseline.txt), a failure when a check gets worse than the baseline or the
score rises above the threshold, and the hint that updates the baseline."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts/check-systemd.sh"
BASELINE = ROOT / "systemd/security-baseline.txt"
BINARY = Path(sys.executable).parent / "sigproxy"  # the venv's entry point: ExecStart must name a real binary

if shutil.which("systemd-analyze") is None:
    if os.environ.get("CI"):
        pytest.fail("systemd-analyze is missing (apt-get install systemd; `make check-systemd` does it as root)",
                    pytrace=False)
    pytest.skip("systemd-analyze is missing: apt-get install systemd", allow_module_level=True)


def check(baseline: Path = BASELINE, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), str(BINARY)], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "SIGPROXY_SECURITY_BASELINE": str(baseline), **env})


def altered(tmp_path: Path, check_name: str, exposure: str) -> Path:
    """A copy of the baseline with ``check_name``'s exposure replaced (the line must exist)."""
    lines = BASELINE.read_text(encoding="utf-8").splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.split()[1:2] == [check_name]]
    assert len(hits) == 1, f"{check_name} is not in the baseline once"
    mark, name, _, description = lines[hits[0]].split(None, 3)
    lines[hits[0]] = f"{mark} {name} {exposure}  {description}"
    path = tmp_path / "baseline.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_the_report_is_the_score_and_nothing_else_when_nothing_changed() -> None:
    result = check()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"^exposure score: \d+\.\d+ \(threshold 2\.0\)$", out, re.M), out
    assert re.search(r"^security: \d+ checks as in the baseline$", out, re.M), out
    assert "SystemCallFilter" not in out and "Overall exposure" not in out  # the table is not printed
    assert len(out.splitlines()) <= 8, out
    assert out.rstrip().endswith("check-systemd: ok")


def test_a_check_worse_than_the_baseline_fails_and_is_named(tmp_path: Path) -> None:
    # The unit scores 0.5 on PrivateNetwork= (a proxy needs the network); a baseline saying 0.2 makes it worse.
    result = check(altered(tmp_path, "PrivateNetwork=", "0.2"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^  WORSE   PrivateNetwork=: ✗ 0\.5  Service has access to the host's network "
                     r"\(baseline: ✗ 0\.2 ", result.stdout, re.M), result.stdout
    assert "1 of " in result.stdout and "scripts/check-systemd.sh --update-baseline" in result.stdout
    assert "got worse than the baseline" in result.stderr
    assert len(result.stdout.splitlines()) <= 10, result.stdout


def test_a_check_better_than_the_baseline_passes_with_the_update_hint(tmp_path: Path) -> None:
    result = check(altered(tmp_path, "IPAddressDeny=", "0.9"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^  better  IPAddressDeny=: ✗ 0\.2 .*\(baseline: ✗ 0\.9 ", result.stdout, re.M), result.stdout
    assert "update it with: scripts/check-systemd.sh --update-baseline" in result.stdout


def test_the_score_threshold_still_fails() -> None:
    result = check(SIGPROXY_SECURITY_THRESHOLD="0.5")
    assert result.returncode == 1
    assert re.search(r"exposure \d+\.\d+ is above 0\.5", result.stderr), result.stderr


def test_a_malformed_baseline_says_which_line(tmp_path: Path) -> None:
    bad = tmp_path / "baseline.txt"
    bad.write_text("# comment\nPrivateNetwork= 0.5\n", encoding="utf-8")
    result = check(bad)
    assert result.returncode == 1
    assert f"{bad}:2: expected 'MARK CHECK EXPOSURE DESCRIPTION'" in result.stderr
    assert "cannot compare with the baseline" in result.stderr and "got worse" not in result.stderr


def test_update_baseline_writes_what_the_check_then_accepts(tmp_path: Path) -> None:
    path = tmp_path / "fresh.txt"
    result = subprocess.run(["bash", str(SCRIPT), "--update-baseline", str(BINARY)], capture_output=True,
                            text=True, timeout=60, check=False,
                            env={**os.environ, "SIGPROXY_SECURITY_BASELINE": str(path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checks as in the baseline" in result.stdout
    assert path.read_text(encoding="utf-8") == BASELINE.read_text(encoding="utf-8")  # the committed one is current
