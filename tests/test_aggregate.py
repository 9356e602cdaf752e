"""lem.aggregate: runs table, groups (late aggregation, CIs), honesty rules, plots, report, compare."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lem.aggregate import aggregate, collect, load
from lem.aggregate.__main__ import main
from lem.aggregate.groups import bootstrap_all, groups
from lem.analysis.stats import cycle_stats
from lem.result.schema import Result

H200 = {"name": "NVIDIA H200", "driver": "580.159.04", "power_limit_w": 700.0, "index": 0}


def result_dict(precision="bf16", bs=1, repeat=None, status="ok", valid=True, jpt=2.0, tps=100.0,
                gpu=H200, ttft=(0.1, 0.2), out_tokens=4, lem_version="3.0.0") -> dict:
    """A schema-2.0 result: the structure of Result().to_dict(), the values filled in."""
    r = Result(status=status).to_dict()
    r["config"] = {"backend": {"name": "pytorch"}, "model": {"name": "tiny"},
                   "precision": {"name": precision}, "batching": {"batch_size": bs}, "seed": 0,
                   "progress": False, **({"repeat": repeat} if repeat is not None else {})}
    r["config_hash"] = f"{precision}-{bs}-{repeat}"
    r["environment"] = {"lem_version": lem_version, "gpus": [gpu],
                        "libraries": {"torch": "2.6", "transformers": "4.5"}}
    r["validity"] = {"valid": valid, "reasons": [] if valid else ["thermal throttling (fail)"], "checks": []}
    if status != "ok":
        r["error"] = {"type": "OutOfMemoryError", "message": "CUDA out of memory", "traceback": ""}
        return r
    n_tok = out_tokens * len(ttft)
    s = r["summary"]
    s.update(cycles=2, num_requests=len(ttft), output_tokens=n_tok, duration_s=n_tok / tps,
             output_tokens_per_s=tps,
             energy_j=jpt * n_tok, j_per_output_token=jpt, dynamic_energy_j=jpt * n_tok / 2,
             dynamic_j_per_output_token=jpt / 2)
    r["statistics"] = {"j_per_output_token": vars(cycle_stats([jpt * 0.9, jpt * 1.1], n_resamples=99)),
                       "output_tokens_per_s": vars(cycle_stats([tps * 0.9, tps * 1.1], n_resamples=99))}
    r["requests"] = [{"cycle": 0, "index": i, "ttft_s": t, "tpot_s": 0.01, "e2e_s": t + 0.03, "submit_s": 0.0,
                      "token_times_s": [t + 0.01 * k for k in range(out_tokens)]} for i, t in enumerate(ttft)]
    return r


def write(root: Path, name: str, data) -> Path:
    job = root / name
    (job / ".hydra").mkdir(parents=True, exist_ok=True)
    (job / "result.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return job


@pytest.fixture
def study(tmp_path) -> Path:
    root = tmp_path / "sweep"
    for rep, (jpt, tps, ttft) in enumerate([(2.0, 100.0, (0.1, 0.2)), (2.2, 90.0, (0.3, 0.4)),
                                            (1.9, 110.0, (0.5, 0.6))]):
        write(root, f"{rep}_bf16_bs1", result_dict("bf16", 1, rep, jpt=jpt, tps=tps, ttft=ttft))
        write(root, f"{rep}_fp32_bs1", result_dict("fp32", 1, rep, jpt=jpt * 2, tps=tps / 2, ttft=ttft))
    write(root, "3_bf16_bs4", result_dict("bf16", 4, 0, jpt=0.7, tps=300.0))
    write(root, "4_failed", result_dict("bf16", 16, 0, status="failed"))
    write(root, "5_skipped", result_dict("int8", 1, 0, status="skipped"))
    write(root, "6_interrupted", result_dict("bf16", 8, 0, status="interrupted"))
    write(root, "7_invalid", result_dict("bf16", 1, 5, valid=False, jpt=99.0))
    write(root, "8_corrupt", '{"schema_version": "2.0", "status": "ok", "summ')
    write(root, "9_partial", {**result_dict("bf16", 32, 0), "status": "running"})
    (root / "10_missing" / ".hydra").mkdir(parents=True)
    write(root, "11_other_gpu", result_dict("bf16", 1, 0, gpu={**H200, "power_limit_w": 500.0}, jpt=1.5))
    return root


def test_table_has_one_row_per_job_with_axes_summary_status_and_environment(study):
    df = load(study)
    assert len(df) == 15
    assert dict(df["status"].value_counts()) == {"ok": 9, "failed": 1, "skipped": 1, "interrupted": 1,
                                                 "corrupt": 1, "partial": 1, "missing": 1}
    for col in ("precision.name", "batching.batch_size", "repeat", "summary.ttft_s.p99", "summary.energy_j",
                "summary.j_per_output_token", "valid", "config_hash", "env.gpu", "env.driver",
                "env.power_limit_w", "env.lem_version", "env.torch", "env.transformers", "env.engine"):
        assert col in df.columns, col
    assert "seed" not in df.columns and "progress" not in df.columns  # not swept / not semantic
    assert str(df["batching.batch_size"].dtype) == "Int64"
    row = df[df["path"].str.endswith("0_bf16_bs1")].iloc[0]
    assert row["env.gpu"] == "1x NVIDIA H200" and row["summary.j_per_output_token"] == 2.0 and row["valid"]
    assert "out of memory" in df[df["status"] == "failed"]["reason"].iloc[0]
    assert "running" in df[df["status"] == "partial"]["reason"].iloc[0]


def test_groups_pool_repeats_late_and_never_across_environments(study):
    s = collect(study)
    g = groups(s, n_resamples=999)
    bf16 = g[(g["precision.name"] == "bf16") & (g["batching.batch_size"] == 1)]
    assert len(bf16) == 2  # the 500 W power limit run is its own group, never pooled
    main_env = bf16[bf16["n_runs"] == 3].iloc[0]
    # J/token = total energy / total tokens (equal token counts here: the mean of 2.0, 2.2, 1.9)
    assert main_env["j_per_output_token"] == pytest.approx((2.0 + 2.2 + 1.9) / 3)
    # tokens/s = total tokens / total time, not the mean of the per-run rates
    assert main_env["output_tokens_per_s"] == pytest.approx(24 / (8 / 100 + 8 / 90 + 8 / 110))
    ref = cycle_stats([2.0, 2.2, 1.9], n_resamples=999)
    assert main_env["j_per_output_token.ci95_low"] == pytest.approx(ref.ci95_low)
    assert main_env["j_per_output_token.ci_unit"] == "runs"
    # latency percentiles from the pooled raw values, not an average of per-run percentiles
    assert main_env["ttft_s.p50"] == pytest.approx(np.percentile([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 50))
    assert main_env["ttft_s.n"] == 6 and main_env["itl_s.n"] == 6 * 3
    one = g[g["batching.batch_size"] == 4].iloc[0]
    assert one["n_runs"] == 1 and one["j_per_output_token.ci_unit"] == "cycles"
    assert set(s.headline["status"]) == {"ok"} and 99.0 not in set(s.headline["summary.j_per_output_token"])


def test_vectorised_bootstrap_equals_cycle_stats():
    rng = np.random.default_rng(3)
    values = [list(rng.normal(5, 0.5, 4)) for _ in range(5)]
    values += [[1.0, 2.0], [1.0, 1.0, 1.0], [2.0], [None, 1.0, 3.0]]
    for got, v in zip(bootstrap_all(values, 999), values):
        assert vars(got) == vars(cycle_stats(v, n_resamples=999))


def test_report_lists_exclusions_environments_and_writes_tables(study, tmp_path):
    out = tmp_path / "out"
    assert main([str(study), "--out", str(out), "--resamples", "999"]) == 0
    report = (out / "report.md").read_text()
    for name in ("4_failed", "5_skipped", "6_interrupted", "7_invalid", "8_corrupt", "9_partial", "10_missing"):
        assert f"`{name}`" in report, name
    assert "thermal throttling" in report and "CUDA out of memory" in report
    assert "2 different environments: results are never pooled" in report
    for name in ("runs", "groups"):
        assert len(pd.read_parquet(out / f"{name}.parquet")) == len(pd.read_csv(out / f"{name}.csv"))
    pngs = {p.name for p in (out / "plots").glob("*.png")}
    assert {"energy_vs_throughput.png", "energy_vs_batch.png", "latency.png"} <= pngs
    assert "no timeseries.parquet" in report and "![" in report


def test_power_series_plot_when_timeseries_present(tmp_path):
    r = result_dict()
    r["windows"] = [{"name": "cycle_0", "start_ns": 1_000_000_000, "end_ns": 3_000_000_000}]
    r["timeseries"] = {"file": "timeseries.parquet"}
    job = write(tmp_path / "s", "0_run", r)
    pd.DataFrame({"t_ns": np.arange(0, 4_000_000_000, 100_000_000), "gpu": 0, "power_w": 300.0}).to_parquet(
        job / "timeseries.parquet")
    report = aggregate(tmp_path / "s", n_resamples=99).read_text()
    assert (tmp_path / "s" / "plots" / "power.png").stat().st_size > 1000
    assert "plots/power.png" in report


def test_compare_matches_by_config_ignoring_repeat_and_flags_ci_overlap(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for rep in range(3):
        write(a, f"{rep}_bf16", result_dict("bf16", 1, rep, jpt=2.0 + 0.01 * rep))
        write(b, f"{rep}_bf16", result_dict("bf16", 1, rep + 10, jpt=1.0 + 0.01 * rep))  # other repeat ids
        write(a, f"{rep}_fp32", result_dict("fp32", 1, rep, jpt=4.0 + 0.1 * rep))
        write(b, f"{rep}_fp32", result_dict("fp32", 1, rep, jpt=4.05 + 0.1 * rep))
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c"), "--resamples", "999"]) == 0
    df = pd.read_csv(tmp_path / "c" / "compare.csv")
    bf16 = df[df["precision.name"] == "bf16"].iloc[0]
    assert bf16["matched"] == "both" and bf16["j_per_output_token.change"] == pytest.approx(-0.4975, abs=1e-3)
    assert bool(bf16["j_per_output_token.beyond_ci"])
    assert not bool(df[df["precision.name"] == "fp32"].iloc[0]["j_per_output_token.beyond_ci"])
    md = (tmp_path / "c" / "compare.md").read_text()
    assert "precision=bf16, batch_size=1 | 3 / 3 | 2.01 | 1.01 | -49.8% | yes" in md


def test_empty_and_missing_inputs_are_not_fatal(tmp_path):
    (tmp_path / "empty").mkdir()
    assert len(load(tmp_path / "empty")) == 0
    assert "No ok and valid result" in aggregate(tmp_path / "empty", n_resamples=99).read_text()


def test_aggregation_never_imports_torch():
    code = ("import sys, lem.aggregate, lem.aggregate.groups, lem.aggregate.plots, lem.aggregate.compare, "
            "lem.aggregate.__main__; assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parsing_workers_give_the_same_study_as_one_process(study, monkeypatch):
    import lem.aggregate.table as table

    one = collect(study, jobs=1)
    monkeypatch.setattr(table, "PARALLEL_MIN_FILES", 0)  # workers even for this small tree
    monkeypatch.setattr(table, "CHUNK_FILES", 4)  # several chunks, dealt to both workers
    two = collect(study, jobs=2)
    pd.testing.assert_frame_equal(one.table, two.table)
    assert one.axes == two.axes and one.configs == two.configs and one.windows == two.windows
    for name in one.latencies.values:
        np.testing.assert_array_equal(one.latencies.values[name], two.latencies.values[name])
        np.testing.assert_array_equal(one.latencies.start[name], two.latencies.start[name])
    g1, g2 = groups(one, n_resamples=99), groups(two, n_resamples=99)
    pd.testing.assert_frame_equal(g1, g2)
    assert g1["itl_s.n"].sum() > 0


def test_cli_says_each_phase_and_how_far_reading_has_got(study, tmp_path, capsys, monkeypatch):
    import lem.aggregate as agg
    import lem.aggregate.table as table

    monkeypatch.setattr(table, "CHUNK_FILES", 4)
    monkeypatch.setattr(agg, "PROGRESS_EVERY_S", 0.0)  # every chunk but the last
    assert main([str(study), "--out", str(tmp_path / "o"), "--resamples", "99", "--no-plots"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "reading:" in line] == [
        f"lem aggregate: reading: {n} of 14 result files (0 s)" for n in (4, 8, 12)]
    assert any(line.startswith("lem aggregate: read 15 job dirs (9 ok, ") for line in err)
    assert any(" configurations (from 8 ok and valid runs; CIs from 99 bootstrap resamples)" in line
               for line in err)


def test_plots_are_drawn_in_a_child_process_and_the_main_one_never_imports_matplotlib(study, tmp_path):
    code = (f"import sys; from lem.aggregate import aggregate; aggregate({str(study)!r}, "
            f"out={str(tmp_path / 'o')!r}, n_resamples=99, jobs=2); "
            "assert 'matplotlib' not in sys.modules, 'the main process imported matplotlib'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert {"energy_vs_throughput.png", "energy_vs_batch.png", "latency.png"} <= {
        p.name for p in (tmp_path / "o" / "plots").glob("*.png")}


def test_plots_are_drawn_inline_when_the_plot_process_dies(study, tmp_path, monkeypatch):
    import os

    import lem.aggregate as agg

    monkeypatch.setattr(agg, "_plot_child", lambda *a: os._exit(3))  # the forked child inherits it
    report = aggregate(study, out=tmp_path / "o", n_resamples=99, jobs=2).read_text()
    assert (tmp_path / "o" / "plots" / "latency.png").stat().st_size > 1000
    assert "plots/latency.png" in report


@pytest.mark.slow
def test_real_tiny_sweep_to_report(run_lem, tmp_path):
    proc = run_lem("-m", "precision=fp32,bf16", "dataset.num_requests=2", "measurement.cycles=2",
                   "progress=false", "hydra.sweep.dir=sweep", "hydra/callbacks=aggregate")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the end-of-sweep callback already aggregated; the CLI below writes the same files again
    assert "lem aggregate: " in proc.stdout and (tmp_path / "sweep" / "report.md").is_file()
    (tmp_path / "sweep" / "report.md").unlink()
    agg = subprocess.run([sys.executable, "-m", "lem.aggregate", "sweep"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert agg.returncode == 0, agg.stderr[-2000:]
    df = pd.read_csv(tmp_path / "sweep" / "runs.csv")
    assert len(df) == 2 and set(df["status"]) == {"ok"} and set(df["precision.name"]) == {"fp32", "bf16"}
    assert (df["summary.output_tokens"] > 0).all() and df["summary.ttft_s.p99"].notna().all()
    g = pd.read_parquet(tmp_path / "sweep" / "groups.parquet")
    assert len(g) == 2 and (g["ttft_s.n"] == 4).all()  # 2 requests x 2 cycles, pooled
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "| g0 | fp32" in report or "| g0 | bf16" in report
    assert "no configuration has measured energy" in report  # CPU: said, not plotted
    assert (tmp_path / "sweep" / "plots" / "latency.png").stat().st_size > 1000
    # a job that never started leaves no directory: multirun.yaml's plan still names it
    shutil.rmtree(next((tmp_path / "sweep").glob("*precision=bf16*")))
    study = collect(tmp_path / "sweep")
    never = study.table[study.table["reason"].fillna("").str.startswith("never started")]
    assert len(never) == 1 and never.iloc[0]["status"] == "missing"
    assert "precision=bf16" in never.iloc[0]["reason"] and "hydra.sweep.dir=" in never.iloc[0]["reason"]
    # a sweeper that picks points as it goes has no plan: said, not guessed
    plan = tmp_path / "sweep" / "multirun.yaml"
    plan.write_text(plan.read_text().replace("basic_sweeper.BasicSweeper", "optuna_sweeper.OptunaSweeper"))
    study = collect(tmp_path / "sweep")
    assert not study.table["reason"].fillna("").str.startswith("never started").any()
    assert study.notes and "OptunaSweeper" in study.notes[0]


def test_a_sweep_without_batch_sizes_gets_bars_per_configuration_not_a_stacked_batch_plot(tmp_path):
    from lem.aggregate.plots import energy_per_config, energy_vs_batch

    g = pd.DataFrame({"group": ["g0", "g1", "g2"], "precision.name": ["bf16", "fp16", "fp8"],
                      "batching.batch_size": [4, 4, 4], "env_key": ["E1"] * 3,
                      "j_per_output_token": [0.715, 0.748, 0.434],
                      "j_per_output_token.ci95_low": [0.668, 0.736, 0.398],
                      "j_per_output_token.ci95_high": [0.740, 0.755, 0.454]})
    note = energy_vs_batch(g, tmp_path / "b.png")
    assert isinstance(note, str) and "batch size was not swept (every configuration at 4)" in note
    assert not (tmp_path / "b.png").exists()
    bars = energy_per_config(g, ["precision.name"], tmp_path / "c.png")
    assert bars == tmp_path / "c.png" and bars.stat().st_size > 1000
    g["batching.batch_size"] = [1, 8, 64]
    assert energy_vs_batch(g, tmp_path / "b.png") == tmp_path / "b.png"


def test_warnings_of_headline_runs_are_counted_and_named_in_the_report(tmp_path):
    """A batch the engine never ran whole is still ok and valid, but a 200-point sweep's reader
    must see it: the report counts each warning check over the headline runs and names the jobs."""
    root = tmp_path / "sweep"
    warned = result_dict("bf16", 512, 0)
    warned["validity"]["checks"] = [{"name": "batch_runs_whole", "verdict": "warn", "detail": "peaked at 128"},
                                    {"name": "tokens", "verdict": "pass", "detail": ""}]
    write(root, "0_bs512", warned)
    write(root, "1_bs1", result_dict("bf16", 1, 0))
    hidden = result_dict("bf16", 8, 0, valid=False)  # not a headline run: its warnings are not counted
    hidden["validity"]["checks"] = [{"name": "throttling", "verdict": "warn", "detail": ""}]
    write(root, "2_invalid", hidden)
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out), "--resamples", "99"]) == 0
    report = (out / "report.md").read_text()
    assert "## Warnings in the headline results" in report
    assert "- `batch_runs_whole`: 1 of 2 runs (`0_bs512`)" in report and "`throttling`" not in report
    runs = pd.read_csv(out / "runs.csv")
    assert runs.set_index("path")["warnings"].dropna().tolist() == ["batch_runs_whole", "throttling"]
