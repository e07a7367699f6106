"""The layering rule: pure modules import no I/O libraries, and each module's public names import."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import sigproxy

PACKAGE = Path(sigproxy.__file__).parent
PURE = ["signing", "endpoints", "routing", "prepare", "config", "configtable", "errors", "users", "certs", "hostglobs",
        "headerrules", "records"]
FORBIDDEN = {"aiohttp", "asyncio", "aiobotocore", "botocore", "socket", "ssl", "subprocess", "uvloop"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    """The pure modules (PURE: signing, routing, prepare, certs, ...) import no network or async library."""
    assert not imported_roots(PACKAGE / f"{module}.py") & FORBIDDEN


def test_errors_imports_nothing_of_ours() -> None:
    """errors.py sits at the bottom: it imports no other sigproxy module."""
    tree = ast.parse((PACKAGE / "errors.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]


def test_public_names_import() -> None:
    """Every module declares __all__ and every name in it exists."""
    for info in pkgutil.walk_packages(sigproxy.__path__, "sigproxy."):
        if info.name == "sigproxy.__main__":
            continue
        module = importlib.import_module(info.name)
        if info.ispkg:
            continue
        assert hasattr(module, "__all__"), info.name
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.{name}"
