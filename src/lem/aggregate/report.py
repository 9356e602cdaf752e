"""report.md: the summary table, the plots, the environments and every excluded result."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pandas as pd

from lem.aggregate.table import Study

MAX_ROWS = 200  # of the Markdown tables; the CSV/Parquet files hold every row


def fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def with_ci(row: pd.Series, metric: str) -> str:
    low, high = row.get(f"{metric}.ci95_low"), row.get(f"{metric}.ci95_high")
    text = fmt(row.get(metric))
    if low is not None and low == low and high is not None and high == high:
        text += f" [{fmt(low)}, {fmt(high)}]"
    return text


def env_ids(g: pd.DataFrame) -> dict[str, str]:
    return {key: f"E{i + 1}" for i, key in enumerate(dict.fromkeys(g.get("env_key", [])))}


def summary_table(g: pd.DataFrame, axes: list[str]) -> list[str]:
    keys = [a for a in axes if a != "repeat"] or ["precision.name", "batching.batch_size"]
    ids = env_ids(g)
    head = ["group", *keys, "env", "runs", "CI over", "J/output token [95% CI]", "output tokens/s [95% CI]",
            "TTFT p50 / p99 (s)", "ITL p50 / p99 (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in g.head(MAX_ROWS).iterrows():
        cells = [r["group"], *[fmt(r.get(k)) for k in keys], ids[r["env_key"]], str(r["n_runs"]),
                 r["j_per_output_token.ci_unit"], with_ci(r, "j_per_output_token"),
                 with_ci(r, "output_tokens_per_s"), f"{fmt(r['ttft_s.p50'])} / {fmt(r['ttft_s.p99'])}",
                 f"{fmt(r['itl_s.p50'])} / {fmt(r['itl_s.p99'])}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if len(g) > MAX_ROWS:
        lines.append(f"\n{MAX_ROWS} of {len(g)} configurations shown; groups.csv has all of them.")
    return lines


def environments(study: Study, g: pd.DataFrame) -> list[str]:
    ids = env_ids(g)
    lines = ["## Environments", ""]
    for key, eid in ids.items():
        lines.append(f"- **{eid}**: {key} ({int((g['env_key'] == key).sum())} configurations)")
    if len(ids) > 1:
        split = g.groupby("group_hash")["env_key"].nunique()
        lines += ["", f"**{len(ids)} different environments: results are never pooled across them.** "
                  "Each configuration is a separate row per environment"
                  + (f"; {int((split > 1).sum())} configurations were measured in more than one "
                     "environment and appear once per environment." if (split > 1).any() else ".")]
    if not ids:
        lines.append("- none: no headline result")
    return lines + [""]


def excluded(study: Study, base: Path) -> list[str]:
    ex = study.excluded
    lines = ["## Excluded results", ""]
    if ex.empty:
        return lines + ["None: every result is ok and valid.", ""] + unchecked(study)
    lines += [f"{len(ex)} results are not in the headline numbers (non-ok status, invalid, missing, "
              "partial or corrupt):", "", "| job | status | reason |", "|---|---|---|"]
    for _, r in ex.head(MAX_ROWS).iterrows():
        reason = str(r.get("reason") or "").replace("|", "/").replace("\n", " ")[:300]
        lines.append(f"| `{os.path.relpath(r['path'], base)}` | {r['status']} | {reason} |")
    if len(ex) > MAX_ROWS:
        lines.append(f"\n{MAX_ROWS} of {len(ex)} shown; runs.csv has all (status, reason columns).")
    return lines + [""] + unchecked(study)


def warnings(study: Study, base: Path) -> list[str]:
    """Headline runs whose validity checks warned: counted per check, a few jobs named."""
    h = study.headline
    if h.empty or "warnings" not in h:
        return []
    jobs: dict[str, list[str]] = {}
    for path, names in zip(h["path"], h["warnings"]):
        for name in str(names).split(",") if isinstance(names, str) and names else []:
            jobs.setdefault(name, []).append(os.path.relpath(path, base))
    if not jobs:
        return []
    lines = ["## Warnings in the headline results", "",
             "Still ok and valid, but worth knowing (each result's `validity.checks` says why):", ""]
    for name, paths in sorted(jobs.items()):
        shown = ", ".join(f"`{p}`" for p in paths[:5]) + (", ..." if len(paths) > 5 else "")
        lines.append(f"- `{name}`: {len(paths)} of {len(h)} runs ({shown})")
    return lines + [""]


def unchecked(study: Study) -> list[str]:
    return [f"- not checked: {note}" for note in study.notes] + [""] * bool(study.notes)


def plots_section(plots: dict, out: Path) -> list[str]:
    lines = ["## Plots", ""]
    for title, outcomes in plots.items():
        lines.append(f"### {title}\n")
        notes = Counter()
        for o in outcomes:
            if isinstance(o, Path):
                lines.append(f"![{title}]({os.path.relpath(o, out)})\n")
            else:
                notes[o.split(": ", 1)[-1] if o.startswith("/") else o] += 1
        lines += [f"- {note}" + (f" ({n} runs)" if n > 1 else "") for note, n in notes.items()]
        lines.append("")
    return lines


def write_report(study: Study, g: pd.DataFrame, plots: dict, out: Path, inputs) -> Path:
    counts = Counter(study.table["status"])
    n_valid = len(study.headline)
    lines = ["# lem study report", "", "Inputs: " + ", ".join(f"`{p}`" for p in inputs), "",
             f"{len(study.table)} job directories: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
             + f"; {n_valid} ok and valid count in the headline numbers.", "",
             "Swept axes: " + (", ".join(f"`{a}`" for a in study.axes) or "none"), "",
             "## Summary per configuration", "",
             "Pooled over the runs of a configuration (repeats share one row): J/output token = total energy / "
             "total output tokens; tokens/s = total output tokens / total measured time; latency percentiles "
             "over every request of every run. The 95% CI is a bootstrap CI of the mean of the per-run values "
             "(`CI over` = runs), or, for a single run, across its cycles (`cycles`).", ""]
    lines += summary_table(g, study.axes) if not g.empty else ["No ok and valid result."]
    lines += ["", *environments(study, g), *warnings(study, _base(inputs)), *plots_section(plots, out),
              *excluded(study, _base(inputs))]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _base(inputs) -> Path:
    """Job paths in the report are relative to the (first) input directory."""
    first = Path(inputs[0])
    return first if first.is_dir() else first.parent
