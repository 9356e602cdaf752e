"""lem installed from a wheel (not editable) still finds its config groups."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("hatchling", reason="the test extra installs hatchling to build the wheel")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(REPO)], check=True, capture_output=True, timeout=300)
    return next(out.glob("lem-*.whl"))


def test_wheel_contains_every_config_group(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for yaml in (REPO / "conf").rglob("*.yaml"):
        assert f"lem/conf/{yaml.relative_to(REPO / 'conf')}" in names
    assert "lem/data/sample_prompts.jsonl" in names


def test_installed_wheel_composes_from_its_own_conf(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import lem.paths; print(lem.paths.conf_dir())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip() == str(site / "lem" / "conf")
    proc = subprocess.run([sys.executable, "-m", "lem", "model=qwen2.5-7b-random", "--cfg", "job"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "hidden_size: 3584" in proc.stdout
