"""``@record``: frozen to the type checker, a slotted dataclass compared and hashed by value at run time."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sigproxy.handler import Exchange
from sigproxy.inbound import ClientAuthorization, ReceivedRequest
from sigproxy.prepare import SignedRequest
from sigproxy.routing import ClientScope, Selection, Target
from sigproxy.signing import CanonicalInput, Signature


@pytest.mark.parametrize("cls", [Target, ClientScope, Selection, CanonicalInput, Signature, SignedRequest, Exchange,
                                 ClientAuthorization, ReceivedRequest])
def test_per_request_classes_are_slotted_value_records(cls: type) -> None:
    assert dataclasses.is_dataclass(cls)
    assert "__slots__" in cls.__dict__
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    assert params.eq and params.unsafe_hash


def test_compared_hashed_and_replaced_by_value() -> None:
    a = Target("https", "s3.amazonaws.com", 443, "/b/k", "")
    b = Target("https", "s3.amazonaws.com", 443, "/b/k", "")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    c = dataclasses.replace(a, query="x=1")
    assert c.query == "x=1" and a.query == "" and c != a
    with pytest.raises(AttributeError):
        a.other = 1  # type: ignore[attr-defined]  # slots: no new attributes


def test_mypy_refuses_assigning_a_field(tmp_path: Path) -> None:
    snippet = tmp_path / "assign.py"
    snippet.write_text(textwrap.dedent("""
        from sigproxy.routing import Target
        t = Target("https", "h", 443, "/", "")
        t.host = "other"
    """))
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent",
                           str(snippet)], check=False, capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'Property "host" defined in "Target" is read-only' in done.stdout
