"""Which of sigproxy's modules are compiled to C with mypyc (the compiler for typed Python that ships with mypy,
used by mypy and black), and the switch back to their source.

``setup.py`` compiles :data:`MODULES` when sigproxy is installed (``pip install``, ``make``): the modules every
proxied request runs through, where the interpreter was three quarters of the CPU a request costs (issue 15).
Compiled, a small GET costs about 28 % fewer instructions. The source stays the one definition: the compiled
module is built from it, type-checked by mypy as it always is, and tested by the whole suite (CI runs it
compiled).

What compiled code must not do, beyond what mypy checks (``tests/unit/test_compiled.py`` holds the rules):

* a coroutine must not suspend while it handles an exception (an ``await`` in an ``except`` or ``finally``
  block, or an ``async with`` whose exit awaits): mypyc then leaves that exception set as the thread's current
  one, where every later exception raised in the event loop takes it as its ``__context__``;
* nothing may depend on the thread's exception state: the HTTP parsers' callbacks keep the error they raise
  (``_stopped``) rather than read it back from httptools' error, which carries it only as its ``__context__``
  (which Python replaces with the thread's current exception, if any, as httptools raises it);
* nothing may rely on a module attribute being replaced at run time (compiled calls within a module are bound
  when it is built), and a class of these modules takes no attribute it does not declare;
* a module's constants are declared ``Final``: mypyc keeps them in C variables (literals it inlines), where any
  other module-level name is a lookup in the module's dictionary at every use. A value a test needs to change
  is a parameter (``Upstream(keepalive=...)``), not a module attribute to replace.

``SIGPROXY_PURE_PYTHON=1`` in the environment runs the source instead of the compiled modules beside it (to
debug, profile or measure coverage); set when sigproxy is installed, it builds nothing.
Pure: no import but the standard library's, so that ``setup.py`` can read it before anything is installed.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import BYTECODE_SUFFIXES, SOURCE_SUFFIXES, FileFinder, SourceFileLoader, SourcelessFileLoader
from importlib.util import find_spec
from pathlib import Path

__all__ = ["MODULES", "PURE_ENV", "SOURCES", "describe", "pure_python", "use_source"]

MODULES = (
    "sigproxy.accesslog",
    "sigproxy.authlimit",
    "sigproxy.bodyplan",
    "sigproxy.egress",
    "sigproxy.endpoints",
    "sigproxy.fieldnames",
    "sigproxy.forwarding",
    "sigproxy.h1conn",
    "sigproxy.h1response",
    "sigproxy.h1wire",
    "sigproxy.handler",
    "sigproxy.headerrules",
    "sigproxy.hostglobs",
    "sigproxy.http1",
    "sigproxy.inbound",
    "sigproxy.jsonlines",
    "sigproxy.intake.entry",
    "sigproxy.intake.forward",
    "sigproxy.intake.h1flow",
    "sigproxy.intake.h1rest",
    "sigproxy.intake.h1server",
    "sigproxy.intake.reverse",
    "sigproxy.metrics",
    "sigproxy.prepare",
    "sigproxy.records",
    "sigproxy.routing",
    "sigproxy.signing",
    "sigproxy.urlparts",
)
"""The compiled modules, by name."""

SOURCES = tuple(name.replace(".", "/") + ".py" for name in MODULES)
"""Their source files, relative to the project's root, in :data:`MODULES`' order."""

PURE_ENV = "SIGPROXY_PURE_PYTHON"


def pure_python() -> bool:
    """Whether ``SIGPROXY_PURE_PYTHON`` asks for the source (any value but empty and ``0``)."""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def use_source() -> None:
    """Make every later import of a sigproxy module load its source (or bytecode), never a compiled extension
    beside it: each package folder gets a finder without the extension loader in ``sys.path_importer_cache``,
    where the import system looks first (the standard library's own :class:`FileFinder`). Called by
    ``sigproxy/__init__.py`` before any submodule is imported."""
    root = Path(__file__).resolve().parent
    for folder in {str(root), *(str(root / name.split(".")[1]) for name in MODULES if name.count(".") == 2)}:
        sys.path_importer_cache[folder] = FileFinder(folder, (SourceFileLoader, SOURCE_SUFFIXES),
                                                     (SourcelessFileLoader, BYTECODE_SUFFIXES))


def describe() -> str:
    """How this sigproxy runs, for ``sigproxy version``: ``compiled (mypyc, 28 modules)``, ``pure Python``, or
    ``partly compiled (...)`` naming the modules that are not (an install without a C compiler builds none).
    Found as an import would find them, without importing them."""
    source = [name for name in MODULES if not str(getattr(find_spec(name), "origin", "")).endswith(".so")]
    if not source:
        return f"compiled (mypyc, {len(MODULES)} modules)"
    if len(source) == len(MODULES):
        return "pure Python" + (f" ({PURE_ENV} is set)" if pure_python() else "")
    return f"partly compiled (source: {', '.join(source)})"
