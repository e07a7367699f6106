"""Builds the modules in ``sigproxy.compiled.MODULES`` with mypyc; everything else about the package is in
pyproject.toml. ``SIGPROXY_PURE_PYTHON=1`` builds none (sigproxy then runs as plain Python).
``SIGPROXY_OPT_LEVEL`` sets the C compiler's optimisation level (``0``-``3``, default ``3``): ``0`` builds in a
fraction of the time, for a build whose speed does not matter (the packaging test checks what a wheel holds)."""

import os
import runpy
from pathlib import Path

from setuptools import setup

compiled = runpy.run_path(str(Path(__file__).parent / "sigproxy" / "compiled.py"))


def extensions() -> list:
    if compiled["pure_python"]():
        return []
    from mypyc.build import mypycify  # noqa: PLC0415 -- a build requirement, not needed for a pure build

    # The build environment holds mypy and setuptools only: the libraries sigproxy imports are not installed
    # there, so mypy sees them as untyped (`make typecheck` checks them with their types).
    flags = ["--ignore-missing-imports", "--allow-subclassing-any", "--no-warn-return-any", "--no-warn-unused-ignores"]
    level = os.environ.get("SIGPROXY_OPT_LEVEL", "3")
    if level not in ("0", "1", "2", "3"):
        raise SystemExit(f"SIGPROXY_OPT_LEVEL={level!r}: give 0, 1, 2 or 3")
    extensions = mypycify([*flags, *compiled["SOURCES"]], opt_level=level, group_name="sigproxy")
    for extension in extensions:
        # Without a C compiler or Python's headers nothing is compiled and sigproxy runs as plain Python, slower;
        # `sigproxy version` says which.
        extension.optional = True
    return extensions


setup(ext_modules=extensions())
