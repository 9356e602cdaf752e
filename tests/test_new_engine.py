"""Adding an engine is one package + one YAML: a fourth engine, written into a copy of lem's
source tree and nowhere else, runs end to end through `python -m lem`, is validated from its spec,
and is listed by `--help`. No generic module is touched (the copy differs from src/ only by it)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parents[1]

FILES = {
    "conf/backend/echo.yaml": """
        defaults:
          - echo_schema
        name: echo
        step_s: 0.001
    """,
    "src/lem/backends/echo/__init__.py": '"""A test engine that echoes: one token per step."""\n',
    "src/lem/backends/echo/config.py": """
        from dataclasses import dataclass

        from lem.backends.spec import BackendConfig


        @dataclass
        class EchoConfig(BackendConfig):
            name: str = "echo"
            step_s: float = 0.001
    """,
    "src/lem/backends/echo/validate.py": """
        def problems(cfg, host):
            b = cfg.backend
            return [] if b.step_s > 0 else [f"backend.step_s={b.step_s} must be > 0"]
    """,
    "src/lem/backends/echo/backend.py": """
        import time

        from lem.backends.base import BatchRecord, PrecisionInfo


        class EchoBackend:
            def __init__(self, backend_cfg, run=None):
                self.cfg = backend_cfg

            def load(self, source, precision, gpus):
                return PrecisionInfo(precision.dtype, precision.dtype, precision.dtype, None, {})

            def generate(self, batch, force_output_len):
                submit, times = time.perf_counter(), []
                for _ in range(max(r.output_len for r in batch)):
                    time.sleep(self.cfg.step_s)
                    times.append(time.perf_counter())
                return BatchRecord(submit, [r.output_len for r in batch],
                                   [times[:r.output_len] for r in batch],
                                   token_ids=[r.prompt_ids[:1] * r.output_len for r in batch])

            def model_info(self):
                return {"num_params": 0, "param_bytes": 0, "arch": {}}

            def engine_info(self):
                return {"library": "echo", "step_s": self.cfg.step_s}

            def close(self):
                pass
    """,
    "src/lem/backends/echo/spec.py": """
        from lem.backends.echo import validate
        from lem.backends.echo.config import EchoConfig
        from lem.backends.spec import BackendSpec

        SPEC = BackendSpec(name="echo", schema=EchoConfig,
                           backend="lem.backends.echo.backend:EchoBackend",
                           batching=("static", "sorted"), quantizations=(None,),
                           validate=validate.problems)
    """,
}


def _tree_with_echo(tmp_path: Path) -> Path:
    root = tmp_path / "lem-copy"
    shutil.copytree(ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "conf", root / "conf")
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text).lstrip())
    return root


def _lem(root: Path, cwd: Path, lem_cache, *args):
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "LEM_CACHE_DIR": str(lem_cache)}
    return subprocess.run([sys.executable, "-m", "lem", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_fourth_engine_is_one_package_and_one_yaml(tmp_path, lem_cache):
    root = _tree_with_echo(tmp_path)
    added = sorted(str(p.relative_to(root)) for p in root.rglob("*echo*"))
    assert added == ["conf/backend/echo.yaml", "src/lem/backends/echo"]
    proc = _lem(root, tmp_path, lem_cache, "backend=echo", "gpus=[]", "measurement.cycles=2",
                "progress=false", f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    r = json.loads((tmp_path / "run" / "result.json").read_text())
    assert r["status"] == "ok" and r["config"]["backend"]["name"] == "echo"
    assert r["engine"] == {"library": "echo", "step_s": 0.001}  # its ReportsEngine capability
    assert r["summary"]["output_tokens"] == 2 * sum(q["output_tokens"] for q in r["requests"]
                                                    if q["cycle"] == 0)
    # validated from its spec: an unsupported strategy and its own key, both exit 2
    bad = _lem(root, tmp_path, lem_cache, "backend=echo", "gpus=[]", "batching=continuous",
               "backend.step_s=0")
    assert bad.returncode == 2
    assert "backend=echo" in bad.stderr + bad.stdout and "backend.step_s=0" in bad.stderr + bad.stdout
    listed = _lem(root, tmp_path, lem_cache, "--help")
    assert "backend: echo, pytorch, pytorch_fast, tensorrt, vllm" in listed.stdout
