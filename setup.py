"""Builds the modules in ``sigproxy.compiled.MODULES`` with mypyc; everything else about the package is in
pyproject.toml. ``SIGPROXY_PURE_PYTHON=1`` builds none (sigproxy then runs as plain Python)."""

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
    extensions = mypycify([*flags, *compiled["SOURCES"]], opt_level="3", group_name="sigproxy")
    for extension in extensions:
        # Without a C compiler or Python's headers nothing is compiled and sigproxy runs as plain Python, slower;
        # `sigproxy version` says which.
        extension.optional = True
    return extensions


setup(ext_modules=extensions())
