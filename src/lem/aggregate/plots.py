"""PNG plots (matplotlib, Agg): each function returns the file it wrote, or a note why not."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lem.aggregate.table import Study  # noqa: E402

Outcome = Union[Path, str]  # the file written, or the note saying why there is none
MAX_LATENCY_CONFIGS = 40


def _save(fig, path: Path, tight: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:  # measures every label: a third of the time of a many-panel figure
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def label(row: pd.Series, axes: list[str]) -> str:
    keys = [a for a in axes if a != "repeat"] or ["backend.name", "precision.name", "batching.batch_size"]
    return ", ".join(f"{short(k)}={_value(row.get(k))}" for k in keys)


def _value(v) -> str:
    """An axis value as the report's tables write it: an unset one (None, NaN) is '-', not 'nan'."""
    return "-" if v is None or (isinstance(v, float) and v != v) else str(v)


def short(key: str) -> str:
    """precision.name -> precision; batching.batch_size -> batch_size."""
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def pareto(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not dominated: no other point has more tokens/s (x) and fewer J/token (y)."""
    front, best = [], float("inf")
    for _, p in points.sort_values([x, y], ascending=[False, True]).iterrows():
        if p[y] < best:
            front.append(p)
            best = p[y]
    return pd.DataFrame(front)


def energy_vs_throughput(g: pd.DataFrame, path: Path) -> Outcome:
    data = g.dropna(subset=["j_per_output_token", "output_tokens_per_s"])
    if data.empty:
        return "no configuration has measured energy (e.g. CPU runs): no J per token vs tokens/s plot"
    fig, ax = plt.subplots(figsize=(7, 5))
    for backend, part in data.groupby("backend.name"):
        dots = ax.scatter(part["output_tokens_per_s"], part["j_per_output_token"], label=str(backend))
        for _, p in part.iterrows():  # the group ids of report.md's table: which point is which
            ax.annotate(str(p["group"]), (p["output_tokens_per_s"], p["j_per_output_token"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = pareto(part, "output_tokens_per_s", "j_per_output_token").sort_values("output_tokens_per_s")
        # markers too: a front of one point (one configuration dominating the rest) stays visible
        ax.plot(front["output_tokens_per_s"], front["j_per_output_token"], "--x", color=dots.get_facecolor()[0],
                label=f"{backend} Pareto front")
    ax.set(xlabel="output tokens / s", ylabel="J per output token", title="Energy vs throughput")
    ax.legend()
    return _save(fig, path)


def energy_vs_batch(g: pd.DataFrame, path: Path) -> Outcome:
    data = g.dropna(subset=["j_per_output_token", "batching.batch_size"])
    if data.empty:
        return "no configuration has measured energy: no J per token vs batch size plot"
    sizes = sorted(data["batching.batch_size"].unique())
    if len(sizes) < 2:  # every point on one x value, stacked: say so and draw nothing misleading
        return (f"batch size was not swept (every configuration at {sizes[0]}): no J per token vs "
                "batch size plot; see J per output token per configuration")
    fig, ax = plt.subplots(figsize=(7, 5))
    for (precision, env), part in data.groupby(["precision.name", "env_key"]):
        part = part.sort_values("batching.batch_size")
        y = part["j_per_output_token"]
        low, high = part["j_per_output_token.ci95_low"], part["j_per_output_token.ci95_high"]
        err = [y - low.astype(float).fillna(y), high.astype(float).fillna(y) - y]
        name = str(precision) if data["env_key"].nunique() == 1 else f"{precision} [{env[:40]}]"
        ax.errorbar(part["batching.batch_size"], part["j_per_output_token"], yerr=err, marker="o",
                    capsize=3, label=name)
    ax.set(xscale="log", xlabel="batch size", ylabel="J per output token", title="J per token vs batch size")
    j = data["j_per_output_token"].astype(float)
    if j.min() > 0 and j.max() / j.min() > 10:  # batch sweeps span decades: small values stay readable
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    return _save(fig, path)


def energy_per_config(g: pd.DataFrame, axes: list[str], path: Path) -> Outcome:
    """One bar per configuration with its 95% CI: the plot for any sweep, whatever its axes
    (a precision sweep at one batch size has no x axis to draw against)."""
    data = g.dropna(subset=["j_per_output_token"]).head(MAX_LATENCY_CONFIGS)
    if data.empty:
        return "no configuration has measured energy (e.g. CPU runs): no J per token per configuration plot"
    y = data["j_per_output_token"].astype(float)
    low = data["j_per_output_token.ci95_low"].astype(float).fillna(y)
    high = data["j_per_output_token.ci95_high"].astype(float).fillna(y)
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.35 * len(data)))
    pos = list(range(len(data)))
    ax.barh(pos, y, xerr=[y - low, high - y], capsize=3, color="C0")
    ax.set_yticks(pos, [f"{r['group']}: {label(r, axes)}" for _, r in data.iterrows()], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="J per output token (95% CI)", title="J per output token per configuration")
    return _save(fig, path)


def latency_percentiles(g: pd.DataFrame, axes: list[str], path: Path) -> Outcome:
    data = g.dropna(subset=["ttft_s.p50"]).head(MAX_LATENCY_CONFIGS)
    if data.empty:
        return "no configuration has latency values: no latency plot"
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 1.5 + 0.35 * len(data)), sharey=True)
    labels = [f"{r['group']}: {label(r, axes)}" for _, r in data.iterrows()]
    pos = range(len(data))
    for ax, metric in ((a1, "ttft_s"), (a2, "itl_s")):
        for i, q in enumerate(("p50", "p90", "p99")):
            ax.barh([p + (i - 1) * 0.27 for p in pos], data[f"{metric}.{q}"], height=0.27, label=q)
        ax.set(xlabel=f"{metric[:-2].upper()} (s), pooled over every request", xscale="log")
        ax.legend(fontsize=7)
    a1.set_yticks(list(pos), labels, fontsize=7)
    a1.invert_yaxis()
    fig.suptitle("Latency percentiles per configuration (late aggregation)")
    return _save(fig, path)


def power_series(study: Study, paths: list[str], path: Path) -> list[Outcome]:
    """One panel per run (power over time per GPU, its windows shaded), all in one PNG: one
    figure to lay out and encode instead of one per run (~0.25 s each on the 2-core machine)."""
    series, outcomes = [], []
    for p in paths:
        got = _read_series(study, p)
        (series if isinstance(got, tuple) else outcomes).append(got)
    if not series:
        return outcomes
    cols = 2 if len(series) > 1 else 1
    rows = -(-len(series) // cols)
    height = 2.6 * rows  # inches; fixed margins in inches, not tight_layout (see _save)
    fig, axs = plt.subplots(rows, cols, figsize=(7 * cols, height), squeeze=False,
                            gridspec_kw={"left": 0.06, "right": 0.98, "bottom": 0.6 / height,
                                         "top": 1 - 0.9 / height, "hspace": 0.55, "wspace": 0.18})
    for ax, (run, ts) in zip(axs.flat, series):
        _draw_series(ax, run, ts)
    for ax in axs.flat[len(series):]:
        ax.set_axis_off()
    fig.suptitle("GPU power per run, measurement windows shaded", y=1 - 0.2 / height)
    return [_save(fig, path, tight=False), *outcomes]


def _read_series(study: Study, path_of_run: str):
    rows = study.table.loc[study.table["path"] == path_of_run, "timeseries_file"]
    file = rows.iloc[0] if len(rows) else None
    if not isinstance(file, str) or not Path(file).is_file():  # NaN: a row that has none
        return f"{path_of_run}: no timeseries.parquet (CPU run or no sampler): no power plot"
    ts = pd.read_parquet(file, columns=["t_ns", "gpu", "power_w"])
    if ts.empty:
        return f"{path_of_run}: timeseries.parquet is empty"
    return (path_of_run, study.windows.get(path_of_run, [])), ts


def _draw_series(ax, run: tuple[str, list], ts: pd.DataFrame) -> None:
    """`run`: its job path and its windows."""
    job, windows = run
    t0 = ts["t_ns"].min()
    for gpu, part in ts.groupby("gpu"):
        ax.plot((part["t_ns"] - t0) / 1e9, part["power_w"], lw=0.8, label=f"GPU {gpu}")
    for i, (name, start, end) in enumerate(w for w in windows if w[1] is not None and w[2] is not None):
        ax.axvspan((start - t0) / 1e9, (end - t0) / 1e9, alpha=0.15, color=f"C{(i % 8) + 1}")
        ax.text((start - t0) / 1e9, ax.get_ylim()[1], str(name), fontsize=6, va="top", rotation=90)
    ax.set_xlabel("s", fontsize=7)
    ax.set_ylabel("power (W)", fontsize=7)
    ax.set_title(Path(job).name[:80], fontsize=7)
    ax.tick_params(labelsize=6)
    if ts["gpu"].nunique() > 1:
        ax.legend(fontsize=6)


def all_plots(study: Study, g: pd.DataFrame, out: Path, series: list[Outcome]) -> dict[str, list[Outcome]]:
    """The summary plots, plus `series`: what series_plots() drew (it needs no groups, so the
    caller may draw it alongside)."""
    plots = out / "plots"
    if g.empty:
        return {"Plots": ["no ok and valid result: nothing to plot"]}
    made: dict[str, list[Outcome]] = {
        "J per output token vs output tokens/s (Pareto front per backend)":
            [energy_vs_throughput(g, plots / "energy_vs_throughput.png")],
        "J per output token per configuration":
            [energy_per_config(g, study.axes, plots / "energy_per_config.png")],
        "J per output token vs batch size, per precision": [energy_vs_batch(g, plots / "energy_vs_batch.png")],
        "Latency percentiles per configuration": [latency_percentiles(g, study.axes, plots / "latency.png")],
    }
    if len(g) > MAX_LATENCY_CONFIGS:
        made["Latency percentiles per configuration"].append(
            f"only the first {MAX_LATENCY_CONFIGS} of {len(g)} configurations are plotted")
    made["Power per run, windows shaded"] = series
    return made


def series_plots(study: Study, plots: Path, max_series: int) -> list[Outcome]:
    ok = list(study.headline["path"])
    outcomes = power_series(study, ok[:max_series], plots / "power.png") if ok[:max_series] else []
    if len(ok) > max_series:
        outcomes.append(f"power series of the first {max_series} of {len(ok)} headline runs only")
    return outcomes
