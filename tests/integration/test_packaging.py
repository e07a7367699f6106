"""`python -m build` makes an sdist and a wheel that hold what sigproxy needs (the wheel its compiled
modules, sigproxy/compiled.py), and the wheel installs and runs (`sigproxy version`) in a clean virtualenv.
Needs PyPI (or pip's cache) for the build backend and the dependencies."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

from sigproxy import __version__
from sigproxy.compiled import MODULES
from tests.conftest import ROOT


def _run(*args: str | Path, cwd: Path = ROOT, timeout: float = 300,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                       check=False, env=env)
    assert r.returncode == 0, f"{args}: {r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _package_files() -> set[str]:
    """Every file of the package in the checkout (git's list: no caches or build leftovers)."""
    listed = _run("git", "ls-files", "sigproxy").stdout.split()
    return {name for name in listed if (ROOT / name).is_file()}


def test_build_install_and_run(tmp_path: Path) -> None:
    """The sdist has LICENSE, README.md, config.example.toml and every package file; the wheel every package
    file (templates, static files, the OpenAPI document, migrations) and the license; installed from the
    wheel into a fresh venv, `sigproxy version` prints this checkout's version."""
    dist = tmp_path / "dist"
    # C compiled without optimisation: what the wheel holds is the same, built in a fraction of the time (the
    # suite's own compiled modules are built optimised, by `make`).
    _run(sys.executable, "-m", "build", "--outdir", dist, ".", env={**os.environ, "SIGPROXY_OPT_LEVEL": "0"})
    sdist, = dist.glob(f"sigproxy-{__version__}.tar.gz")
    wheel, = dist.glob(f"sigproxy-{__version__}-cp3*.whl")  # with the modules compiled for this interpreter
    package = _package_files()
    assert {"sigproxy/api/openapi.json", "sigproxy/connectpage/templates/page.html"} <= package

    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"LICENSE", "README.md", "config.example.toml", "pyproject.toml"} <= in_sdist
    assert package <= in_sdist, sorted(package - in_sdist)
    with zipfile.ZipFile(wheel) as whl:
        in_wheel = set(whl.namelist())
        metadata = whl.read(f"sigproxy-{__version__}.dist-info/METADATA").decode()
    assert package <= in_wheel, sorted(package - in_wheel)
    extensions = {name.split(".")[0] for name in in_wheel if name.endswith(".so")}
    assert extensions == {name.replace(".", "/") for name in MODULES} | {"sigproxy__mypyc"}, sorted(extensions)
    assert f"sigproxy-{__version__}.dist-info/licenses/LICENSE" in in_wheel
    assert "License-Expression: Apache-2.0" in metadata
    assert "Requires-Python: >=3.11" in metadata

    # A venv without pip of its own (quicker to make); this interpreter's pip installs into it.
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    _run(sys.executable, "-m", "pip", "--python", target / "bin/python", "install", "-q",
         "--disable-pip-version-check", wheel)
    version = _run(target / "bin/sigproxy", "version")
    assert version.stdout.strip() == f"sigproxy {__version__}, compiled (mypyc, {len(MODULES)} modules)"
    # From the venv, not this checkout (cwd elsewhere): the files sigproxy loads at runtime came with the wheel.
    # The head as Alembic reads it from the installed migrations/versions (migrate.head() is a constant).
    code = ("import importlib.resources as res, sigproxy.api.routes as api, sigproxy.store.migrate as migrate\n"
            "from alembic.script import ScriptDirectory\n"
            "page = res.files('sigproxy.connectpage')\n"
            "print(api.__file__, len(api.openapi_document()['paths']) > 0,"
            " ScriptDirectory.from_config(migrate.alembic_config()).get_current_head(),"
            " page.joinpath('templates', 'page.html').is_file(), page.joinpath('static', 'copy.js').is_file())")
    where = _run(target / "bin/python", "-c", code, cwd=tmp_path).stdout.split()
    assert where[0].startswith(str(target)), where
    assert where[1:] == ["True", migrate_head(), "True", "True"], where


def migrate_head() -> str:
    from sigproxy.store.migrate import head

    return head()
