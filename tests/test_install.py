"""The project installs as a package: pip install -e . into a fresh environment, then the packages
import and the console scripts run from a folder outside the repository, with PYTHONPATH cleared.

The fresh environment is a venv whose site-packages holds a .pth that adds this interpreter's
site-packages (torch, numpy, pip, setuptools, ...), so nothing is downloaded and the shared .venv
is only read. The install is offline: --no-index, --no-deps, --no-build-isolation.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIP_OFFLINE = ["--no-index", "--no-deps", "--no-build-isolation", "--no-cache-dir", "--disable-pip-version-check"]

pytestmark = pytest.mark.slow


def _run(command: list, cwd: Path) -> subprocess.CompletedProcess:
    """Run outside the repository with PYTHONPATH cleared, so only the installed package can be found."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True)


def _paths(python: Path, cwd: Path) -> tuple[Path, Path]:
    """The purelib (site-packages) and scripts folders of an interpreter."""
    code = "import sysconfig; print(sysconfig.get_path('purelib')); print(sysconfig.get_path('scripts'))"
    purelib, scripts = _run([python, "-c", code], cwd).stdout.split()
    return Path(purelib), Path(scripts)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> dict[str, Path]:
    """A fresh venv that sees this interpreter's packages, with the project installed editable into it."""
    base = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base / "venv")], check=True)
    python = base / "venv" / "bin" / "python"
    purelib, scripts = _paths(python, base)
    dependencies = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    # addsitedir, not a bare path: the .pth files in there (e.g. setuptools' distutils hook) must run too.
    (purelib / "_dependencies.pth").write_text(
        "".join(f"import site; site.addsitedir({path!r})\n" for path in dict.fromkeys(dependencies))
    )
    installed = _run([python, "-m", "pip", "install", *PIP_OFFLINE, "-e", ROOT], base)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return {"python": python, "scripts": scripts}


def test_packages_import_from_outside_the_repository(venv, tmp_path):
    snippet = (
        "import importlib.util, runtime, data_factory, model, evaluation, commands\n"
        "from data_factory import load_dataset\n"
        "d = load_dataset('SYNTH')\n"
        "print(d.train.shape)\n"
        "print(data_factory.__file__)\n"
        "print(importlib.util.find_spec('tests'))\n"
    )
    completed = _run([venv["python"], "-c", snippet], tmp_path)
    assert completed.returncode == 0, completed.stderr
    shape, location, tests = completed.stdout.splitlines()
    assert shape == "(10000, 12)"
    assert Path(location) == ROOT / "data_factory" / "__init__.py"  # the editable install points at this tree
    assert tests == "None"  # the repository itself is not on sys.path: the import went through the install


def test_console_script_runs_and_every_entry_point_loads(venv, tmp_path):
    completed = _run([venv["scripts"] / "anomaly-inspect", "--help"], tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("usage:")
    # The other three in one process: each entry point resolves to the main() of its CLI module.
    snippet = (
        "from importlib.metadata import distribution\n"
        "for point in distribution('anomaly-transformer').entry_points:\n"
        "    main = point.load()\n"
        "    print(point.group, point.name, main.__module__, main.__name__)\n"
    )
    completed = _run([venv["python"], "-c", snippet], tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert sorted(completed.stdout.splitlines()) == [
        "console_scripts anomaly-detect detect main",
        "console_scripts anomaly-evaluate evaluate main",
        "console_scripts anomaly-inspect inspect_checkpoint main",
        "console_scripts anomaly-train train main",
    ]
    assert all((venv["scripts"] / name).is_file() for name in ("anomaly-train", "anomaly-evaluate", "anomaly-detect"))


def test_wheel_holds_the_packages_their_data_and_the_cli_modules(tmp_path):
    """A regular (non-editable) build, from a copy so that build/ and *.egg-info stay out of the tree."""
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", ".bench-venvs", "artifacts", "__pycache__", ".*_cache"),
    )
    built = _run([sys.executable, "-m", "pip", "wheel", *PIP_OFFLINE, "-w", tmp_path / "dist", source], tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("anomaly_transformer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"data_factory/telemanom_manifest.json", "evaluation/templates/report.html"} <= names
    assert {"train.py", "evaluate.py", "detect.py", "inspect_checkpoint.py"} <= names
    for package in ("runtime", "data_factory", "model", "evaluation", "commands"):
        expected = {f"{package}/{path.name}" for path in (ROOT / package).glob("*.py")}
        assert expected <= names, expected - names
    assert not any(name.startswith(("tests/", "bench/")) for name in names)
