"""Two studies side by side per configuration (config hash ignoring `repeat`).

Relative change of J per output token and output tokens/s (B vs A), and whether it exceeds the
confidence intervals: `beyond_ci` is true only when both CIs exist and do not overlap.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lem.aggregate.groups import groups
from lem.aggregate.plots import short
from lem.aggregate.report import fmt
from lem.aggregate.table import LABELS, collect

METRICS = ("j_per_output_token", "output_tokens_per_s")


def compare_groups(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    keep = ["group_hash", "env_key", *[c for c in LABELS if c in a.columns]]
    cols = [f"{m}{s}" for m in METRICS for s in ("", ".ci95_low", ".ci95_high")] + ["n_runs"]
    left = a[[*keep, *cols]].rename(columns={c: f"A.{c}" for c in cols + ["env_key"]})
    right = b[["group_hash", "env_key", *cols]].rename(columns={c: f"B.{c}" for c in cols + ["env_key"]})
    df = left.merge(right, on="group_hash", how="outer", indicator=True)
    df["matched"] = df.pop("_merge").map({"both": "both", "left_only": "A only", "right_only": "B only"})
    df["same_environment"] = df["A.env_key"] == df["B.env_key"]
    for m in METRICS:
        df[f"{m}.change"] = (df[f"B.{m}"] - df[f"A.{m}"]) / df[f"A.{m}"]
        df[f"{m}.beyond_ci"] = (df[f"B.{m}.ci95_low"] > df[f"A.{m}.ci95_high"]) | (
            df[f"B.{m}.ci95_high"] < df[f"A.{m}.ci95_low"])
    return df


def compare(path_a, path_b, out: Path, n_resamples: int = 9999) -> tuple[pd.DataFrame, Path]:
    ga, gb = groups(collect(path_a), n_resamples), groups(collect(path_b), n_resamples)
    df = compare_groups(ga, gb)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "compare.csv", index=False)
    lines = [f"# lem comparison\n\nA: `{path_a}`  \nB: `{path_b}`\n",
             "Per configuration (config hash ignoring `repeat`): change = (B - A) / A; `beyond CI` = the two "
             "95% CIs do not overlap (no CI on either side: not shown as beyond).\n",
             "| configuration | runs A / B | J/token A | J/token B | change | beyond CI | tok/s A | tok/s B "
             "| change | beyond CI | same env |", "|" + "---|" * 11]
    for _, r in df.iterrows():
        name = ", ".join(f"{short(c)}={r.get(c)}" for c in LABELS if c in df.columns) or r["group_hash"]
        cells = [name, f"{fmt(r['A.n_runs'])} / {fmt(r['B.n_runs'])}"]
        for m in METRICS:
            change = r[f"{m}.change"]
            cells += [fmt(r[f"A.{m}"]), fmt(r[f"B.{m}"]), "-" if change != change else f"{change:+.1%}",
                      "yes" if r[f"{m}.beyond_ci"] else "no"]
        cells.append("yes" if r["same_environment"] else f"no ({r['matched']})" if r["matched"] != "both"
                     else "**no**")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if (~df["same_environment"] & (df["matched"] == "both")).any():
        lines.append("\nSome configurations ran in different environments in A and B (GPU, driver, power "
                     "limit, engine or lem version): their change includes the environment's.")
    path = out / "compare.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return df, path
