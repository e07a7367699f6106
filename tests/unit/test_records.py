"""``Record``: per-request value objects, compared and hashed by value, read-only to mypy and, compiled, at run
time too."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sigproxy.compiled import MODULES, SOURCES, pure_python
from sigproxy.handler import Exchange
from sigproxy.inbound import ClientAuthorization, ReceivedRequest
from sigproxy.prepare import SignedRequest
from sigproxy.records import Record
from sigproxy.routing import ClientScope, Selection, Target
from sigproxy.signing import CanonicalInput, Signature

_CLASSES = [Target, ClientScope, Selection, CanonicalInput, Signature, SignedRequest, Exchange, ClientAuthorization,
            ReceivedRequest]
_ROOT = Path(__file__).resolve().parents[2]


def _parameters(cls: type[Record]) -> list[tuple[str, str]]:
    """``cls.__init__``'s parameters after ``self``: (name, annotation), from its source (a compiled
    ``__init__`` has no signature to inspect)."""
    tree = ast.parse((_ROOT / dict(zip(MODULES, SOURCES, strict=True))[cls.__module__]).read_text())
    body = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__).body
    init = next(n for n in body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    return [(a.arg, ast.unparse(a.annotation) if a.annotation else "") for a in init.args.args[1:]]


def _value(name: str, annotation: str, salt: str) -> object:
    """A value of ``annotation``'s type, distinct by ``name`` and ``salt`` (compiled, a record checks the types
    of its fields that are records, ints, strings or tuples)."""
    if annotation == "int":
        return len(name) * 1000 + len(salt)
    if annotation in ("Target", "Signature"):
        return _sample(Target if annotation == "Target" else Signature, salt)
    if annotation.startswith(("tuple", "Sequence")):
        return ((name, salt),)
    if annotation.startswith("Subject"):
        return frozenset({(name, salt)})
    return f"{name}{salt}"


def _sample(cls: type[Record], salt: str = "") -> Record:
    """An instance of ``cls`` with a distinct value in each field (what the fields hold doesn't matter here)."""
    return cls(*[_value(name, annotation, salt) for name, annotation in _parameters(cls)])


@pytest.mark.parametrize("cls", _CLASSES)
def test_fields_are_the_constructors_parameters_in_order(cls: type[Record]) -> None:
    params = _parameters(cls)
    assert cls.__match_args__ == tuple(name for name, _ in params)
    record = _sample(cls)
    assert [getattr(record, name) for name in cls.__match_args__] == [_value(*p, "") for p in params]


@pytest.mark.parametrize("cls", _CLASSES)
def test_compared_hashed_and_shown_by_value(cls: type[Record]) -> None:
    a, b, other = _sample(cls), _sample(cls), _sample(cls, "x")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != other and len({a, other}) == 2
    assert a != object() and a != tuple(a.__match_args__)
    name = cls.__match_args__[0]
    assert repr(a).startswith(f"{cls.__qualname__}({name}={getattr(a, name)!r}, ")


def test_records_of_different_classes_never_compare_equal() -> None:
    """Equality asks the class first: a record of another class is not compared field by field at all."""
    scope = ClientScope("GET", "/", "")
    assert scope.__eq__(ReceivedRequest("GET", "/", "", ())) is NotImplemented
    assert scope.__eq__(Record()) is NotImplemented and Record().__eq__(scope) is NotImplemented
    assert scope.__eq__(ClientScope("GET", "/", "")) is True


def test_the_copies_with_one_part_changed() -> None:
    a = Target("https", "s3.amazonaws.com", 443, "/b/k", "x=1")
    assert a.at("127.0.0.1", 9000) == Target("https", "127.0.0.1", 9000, "/b/k", "x=1")
    exchange = Exchange(a, None, "Basic eA==", None)
    assert exchange.with_target(a.at("h", 1)) == Exchange(Target("https", "h", 1, "/b/k", "x=1"), None, "Basic eA==")


@pytest.mark.skipif(pure_python(), reason="only the compiled class enforces Final at run time")
@pytest.mark.parametrize("cls", _CLASSES)
def test_compiled_fields_are_read_only_and_no_field_can_be_added(cls: type[Record]) -> None:
    record, name = _sample(cls), cls.__match_args__[0]
    before = getattr(record, name)
    with pytest.raises(AttributeError):
        setattr(record, name, before)
    with pytest.raises(AttributeError):
        record.other = 1  # type: ignore[attr-defined]
    assert getattr(record, name) is before


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
    assert 'Cannot assign to final attribute "host"' in done.stdout
