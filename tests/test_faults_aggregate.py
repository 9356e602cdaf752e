"""Faults of `python -m lem.aggregate` on real files: inputs with nothing to aggregate, a report
replaced by a poorer one, and result.json files with wrong-typed fields, invalid or cut short.

The results are copies of real H100 vLLM results (tests/data/h100_vllm_results, from
benchmarks/results/2026-12-07_h100_vllm), written into tmp_path as a sweep's job directories are."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lem.aggregate import Refused, aggregate
from lem.aggregate.__main__ import main
from test_aggregate import write

REAL = Path(__file__).resolve().parent / "data" / "h100_vllm_results"
FAST = ["--no-plots", "--resamples", "99", "--jobs", "1"]


def real(name: str = "bs1") -> dict:
    return json.loads((REAL / f"{name}.result.json").read_text())


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Three ok jobs (two repeats of batch size 1, one of 8) as a sweep dir holds them."""
    root = tmp_path / "sweep"
    for name, source in (("0_bs1", "bs1"), ("1_bs1", "bs1"), ("2_bs8", "bs8")):
        write(root, name, (REAL / f"{source}.result.json").read_text())
    return root


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lem.aggregate", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def outputs(root: Path) -> dict[str, bytes]:
    names = ("report.md", "runs.csv", "groups.csv", "aggregate.json")
    return {name: (root / name).read_bytes() for name in names}


def aggregated(sweep: Path) -> dict[str, bytes]:
    assert main([str(sweep), *FAST]) == 0
    return outputs(sweep)


# 1. nothing to aggregate, and a report never replaced by a poorer one

def test_mistyped_path_under_a_sweep_is_exit_2_and_leaves_the_report(sweep):
    before = aggregated(sweep)
    proc = cli("sweep/typo", *FAST, cwd=sweep.parent)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "lem aggregate: sweep/typo does not exist: nothing to aggregate, nothing written; check the path "
        "(the nearest existing directory is sweep)"]
    assert outputs(sweep) == before and not (sweep / "typo").exists()


@pytest.mark.parametrize("layout", ["empty", "killed_jobs", "hidden_only"])
def test_dir_without_any_result_json_is_exit_2_and_writes_nothing(sweep, layout):
    before = aggregated(sweep)
    target = sweep / "plots"
    target.mkdir()
    if layout == "killed_jobs":  # job dirs Hydra made, every job killed before its result.json
        (target / "0_job" / ".hydra").mkdir(parents=True)
    if layout == "hidden_only":  # read.find_jobs never looks in hidden dirs: neither does the check
        write(target, ".cache", real())
    proc = cli("sweep/plots", *FAST, cwd=sweep.parent)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("lem aggregate: no result.json found under sweep/plots: nothing to aggregate, "
                           "nothing written; pass a sweep dir")
    assert outputs(sweep) == before and not (target / "report.md").exists()


def test_compare_with_a_mistyped_study_is_exit_2_and_creates_nothing(sweep, capsys):
    assert main(["compare", str(sweep), str(sweep / "typo")]) == 2
    assert "sweep/typo does not exist" in capsys.readouterr().err
    assert not (sweep / "typo").exists()


def test_poorer_report_is_refused_naming_it_and_force_replaces_it(sweep):
    before = aggregated(sweep)  # 3 ok results
    # a file that is not a result (0 ok) would be written next to it, over the study's report
    proc = cli("sweep/report.md", *FAST, cwd=sweep.parent)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "lem aggregate: sweep/report.md covers 3 ok results, this aggregation of sweep/report.md only 0: "
        "not replaced, nothing written; check the inputs, or pass --out DIR to write elsewhere or --force to "
        "replace it (force=True in Python)")
    one_job = cli("sweep/0_bs1", "--out", "sweep", *FAST, cwd=sweep.parent)
    assert one_job.returncode == 2 and "only 1: not replaced" in one_job.stderr
    assert outputs(sweep) == before
    with pytest.raises(Refused, match="covers 3 ok results"):
        aggregate(sweep / "0_bs1", out=sweep, plots=False, n_resamples=99)
    assert outputs(sweep) == before
    forced = cli("sweep/0_bs1", "--out", "sweep", "--force", *FAST, cwd=sweep.parent)
    assert forced.returncode == 0, forced.stderr
    assert len(pd.read_csv(sweep / "runs.csv")) == 1
    assert json.loads((sweep / "aggregate.json").read_text())["ok"] == 1


def test_report_written_before_aggregate_json_is_protected_through_runs_csv(sweep):
    aggregated(sweep)
    (sweep / "aggregate.json").unlink()  # as outputs of lem before aggregate.json
    before = {n: (sweep / n).read_bytes() for n in ("report.md", "runs.csv")}
    proc = cli("sweep/0_bs1", "--out", "sweep", *FAST, cwd=sweep.parent)
    assert proc.returncode == 2 and "sweep/report.md covers 3 ok results" in proc.stderr
    assert {n: (sweep / n).read_bytes() for n in ("report.md", "runs.csv")} == before


def test_as_rich_or_richer_aggregations_replace_the_report(sweep):
    aggregated(sweep)
    assert main([str(sweep), *FAST]) == 0  # the same results again
    write(sweep, "3_bs1", real())
    assert main([str(sweep), *FAST]) == 0
    cover = json.loads((sweep / "aggregate.json").read_text())
    assert cover["ok"] == cover["ok_and_valid"] == cover["job_dirs"] == 4
    assert cover["statuses"] == {"ok": 4} and cover["inputs"] == [str(sweep)]


# 2. one bad result.json is one corrupt row; the rest is aggregated

def _set(data: dict, path: tuple, value) -> dict:
    data = copy.deepcopy(data)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return data


WRONG_TYPED = [
    (("summary", "duration_s"), "fast", "summary.duration_s is a string ('fast'), expected a number or null"),
    (("summary",), [1, 2], "summary is an array, expected an object or null"),
    (("summary", "j_per_output_token"), "2.8", "summary.j_per_output_token is a string ('2.8'), expected a "
     "number"),
    (("summary", "energy_j"), True, "summary.energy_j is a boolean (true), expected a number or null"),
    (("statistics", "j_per_output_token", "ci95_low"), [2.7], "statistics.j_per_output_token.ci95_low is an "
     "array, expected a number or null"),
    (("statistics", "output_tokens_per_s"), 154.0, "statistics.output_tokens_per_s is a number (154.0), "
     "expected an object or null"),
    (("requests", 3, "ttft_s"), {"s": 1}, "requests[3].ttft_s is an object, expected a number or null"),
    (("requests", 5, "token_times_s", 7), "x", "requests[5].token_times_s[7] is a string ('x'), expected a "
     "number"),
    (("windows", 0, "start_ns"), "0", "windows[0].start_ns is a string ('0'), expected a number or null"),
    (("environment", "gpus", 0, "name"), 100, "environment.gpus[0].name is a number (100), expected a string"),
    (("config", "repeat"), [0], "config.repeat is an array, expected a number or null"),
    (("status",), {"ok": True}, "status is an object, expected a string or null"),
]


@pytest.mark.parametrize("path,value,reason", WRONG_TYPED, ids=[".".join(map(str, w[0])) for w in WRONG_TYPED])
def test_wrong_typed_field_is_listed_corrupt_naming_it_and_the_rest_is_aggregated(sweep, path, value, reason):
    write(sweep, "3_bad", _set(real(), path, value))
    assert main([str(sweep), *FAST]) == 0  # as for any excluded result
    runs = pd.read_csv(sweep / "runs.csv")
    bad = runs[runs["path"].str.endswith("3_bad")].iloc[0]
    assert bad["status"] == "corrupt" and reason in bad["reason"], bad["reason"]
    assert "fix the field or rerun the job" in bad["reason"]
    assert (runs["status"] == "ok").sum() == 3
    groups = pd.read_csv(sweep / "groups.csv")
    assert sorted(groups["n_runs"]) == [1, 2]  # batch size 1 pooled over its two repeats, 8 alone
    report = (sweep / "report.md").read_text()
    excluded = report[report.index("## Excluded results"):]
    assert f"| `3_bad` | corrupt | result.json: {reason}" in excluded


def test_reported_case_through_the_cli_with_plots(sweep):
    write(sweep, "3_bad", _set(real(), ("summary", "duration_s"), "fast"))
    proc = cli("sweep", "--resamples", "99", cwd=sweep.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "read 4 job dirs (3 ok, 1 corrupt)" in proc.stderr
    assert "summary.duration_s is a string ('fast')" in (sweep / "report.md").read_text()
    assert (sweep / "plots" / "energy_vs_batch.png").stat().st_size > 1000


@pytest.mark.parametrize("name,content,reason", [
    ("invalid_json", '{"schema_version": "2.0", "status": "ok",, }', "result.json unreadable: JSONDecodeError"),
    ("truncated", None, "result.json unreadable: JSONDecodeError"),
    ("empty", "", "result.json unreadable: JSONDecodeError"),
    ("not_json", b"\x89PNG\r\n\x1a\n\x00\xff", "result.json unreadable: JSONDecodeError"),
    ("not_an_object", "[1, 2]", "not a lem result of schema 2.x"),
])
def test_unreadable_result_is_listed_corrupt_and_the_rest_is_aggregated(sweep, name, content, reason):
    job = write(sweep, "3_bad", "")
    if content is None:  # a copy cut short mid-file, as a full disk leaves it
        text = (REAL / "bs1.result.json").read_text()
        content = text[: len(text) // 2]
    (job / "result.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main([str(sweep), *FAST]) == 0
    runs = pd.read_csv(sweep / "runs.csv")
    bad = runs[runs["path"].str.endswith("3_bad")].iloc[0]
    assert bad["status"] == "corrupt" and bad["reason"].startswith(reason), bad["reason"]
    assert (runs["status"] == "ok").sum() == 3
    assert "| `3_bad` | corrupt | " in (sweep / "report.md").read_text()
