"""Cross-backend token-count parity (lem.analysis.parity): grouping by config without the backend, and
what counts as a mismatch."""

from __future__ import annotations

import json

import pytest

from lem.analysis.parity import compare, main
from lem.result.schema import Result


def _result(backend: str, counts: list[int], seed: int = 0, status: str = "ok") -> Result:
    return Result(status=status,
                  config={"backend": {"name": backend}, "seed": seed, "dataset": {"output_len": 8}},
                  requests=[{"cycle": 0, "index": i, "output_tokens": n} for i, n in enumerate(counts)])


def test_equal_counts_across_backends_are_parity():
    groups = compare([_result("pytorch", [8, 8, 3]), _result("vllm", [8, 8, 3])])
    assert len(groups) == 1 and groups[0]["equal"] and groups[0]["backends"] == ["pytorch", "vllm"]
    assert groups[0]["requests"] == 3


def test_a_request_stopping_elsewhere_is_a_mismatch_naming_it():
    groups = compare([_result("pytorch", [8, 5, 3]), _result("vllm", [8, 8, 3])])
    g = groups[0]
    assert not g["equal"] and g["mismatches"] == 1
    assert g["first_mismatches"] == [{"request": "0:1", "output_tokens": {"pytorch": 5, "vllm": 8}}]


def test_other_configs_single_backends_and_failed_runs_are_not_compared():
    groups = compare([_result("pytorch", [8]), _result("vllm", [7], seed=1),
                      _result("vllm", [1], status="failed")])
    assert groups == []


def test_cli_writes_parity_json(tmp_path, capsys):
    for name, counts in (("a", [4, 4]), ("b", [4, 2])):
        (tmp_path / name).mkdir()
        backend = name.replace("a", "pytorch").replace("b", "vllm")
        (tmp_path / name / "result.json").write_text(json.dumps(_result(backend, counts).to_dict()))
    assert main([str(tmp_path)]) == 0
    assert "0 with equal output token counts per request, 1 differing" in capsys.readouterr().out
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["groups"][0]["mismatches"] == 1


@pytest.mark.slow
def test_a_sweep_with_parity_true_writes_the_report(run_lem, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_lem("-m", "backend=pytorch", "parity=true", "gpus=[]", "progress=false",
                   "dataset.num_requests=2", "dataset.output_len=4", "measurement.cycles=1",
                   "measurement.warmup_max_batches=1", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "lem parity: no configuration ran on two or more backends" in proc.stdout
    assert json.loads((sweep / "parity.json").read_text()) == {"groups": []}
