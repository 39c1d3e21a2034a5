"""The package as a user installs it: a wheel built from this repository, not the editable install the suite runs.

The README tells users to ``pip install "/path/to/payi-otel[...]"``, which builds a wheel from ``pyproject.toml``'s
package list. A subpackage left out of that list works in the editable install and is missing for them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy of the sources alone: setuptools reuses a build/ folder, which would hide a missing package.
    source = tmp_path_factory.mktemp("source") / "payi-otel"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "tests"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("payi_otel-*.whl")
    return built


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    into = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(into)
    return into


def source_files() -> set[str]:
    """Every file the package is made of, at its installed path (exporters/ installs as payi_otel/exporters)."""
    found = set()
    for folder, installed in ((ROOT / "src" / "payi_otel", "payi_otel"), (ROOT / "exporters", "payi_otel/exporters")):
        for path in folder.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".md", ".yaml"):
                found.add(f"{installed}/{path.relative_to(folder).as_posix()}")
    return found


def test_the_wheel_holds_every_module_and_every_static_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        packaged = {name for name in archive.namelist() if name.startswith("payi_otel/")}
    missing = sorted(source_files() - packaged)
    assert not missing, f"left out of the wheel (add the package to [tool.setuptools] packages): {missing}"


def test_every_module_imports_from_the_wheel_alone(unpacked: Path) -> None:
    """Each module imported from the unpacked wheel (ahead of the editable install on the path) finds every
    module it needs there: the CLI's ``serve`` path, which once failed only when installed this way, included."""
    script = (
        "import importlib, pkgutil, sys, payi_otel\n"
        f"assert payi_otel.__file__.startswith({str(unpacked)!r}), payi_otel.__file__\n"
        "names = [m.name for m in pkgutil.walk_packages(payi_otel.__path__, 'payi_otel.')]\n"
        "for name in names:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(unpacked)!r}), module.__file__\n"
        "print(len(names))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) >= 150  # every module was walked, not an empty package


def test_the_command_knows_which_extra_installs_each_module_of_the_extras() -> None:
    """``payi-otel`` names the extra to install from a missing module's name (payi_otel.extras): every module the
    ``service`` and ``replay`` extras' distributions install must be known there, or a missing one is a traceback."""
    import tomllib
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from payi_otel.extras import missing_extra

    modules_of: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(canonicalize_name(dist), set()).add(module)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    checked = 0
    for extra in ("service", "replay"):
        for spec in extras[extra]:
            requirement = Requirement(spec)
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            modules = {m for m in modules_of[canonicalize_name(requirement.name)] if not m.startswith("_")}
            assert modules, requirement.name
            for module in modules:
                assert missing_extra(ModuleNotFoundError(name=module)) == extra, (requirement.name, module)
                checked += 1
    assert checked >= 12


USER_CODE = """\
from payi_otel import instrument, track, track_context

instrument(use_case_name="typed")


@track(use_case_name="summarize", user_id="jane")
def summarize(doc: str) -> int:
    with track_context(use_case_step="draft"):
        return len(doc)


@track
async def answer() -> str:
    return ""


count: str = summarize("text")  # the one error mypy must report: track keeps the function's type
"""


def test_a_users_code_type_checks_against_the_installed_package(unpacked: Path, tmp_path: Path) -> None:
    """The wheel carries ``py.typed`` and ``track`` is typed: a user's ``mypy --strict`` sees the package's types
    (no ``import-untyped``, no ``untyped-decorator``) and catches a wrong use of a tracked function."""
    (tmp_path / "app.py").write_text(USER_CODE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--no-error-summary", "app.py"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},  # the package as installed, nothing else
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = result.stdout.splitlines()
    assert errors == [
        'app.py:17: error: Incompatible types in assignment (expression has type "int", variable has type "str")'
        "  [assignment]"
    ], result.stdout + result.stderr
