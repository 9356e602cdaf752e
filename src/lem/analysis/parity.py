"""Cross-backend token-count parity: do backends given the same work produce the same number of
output tokens per request?

Results are grouped by the hash of their config without the `backend` block, so the points of a
sweep over `backend=pytorch,vllm` that differ only in the backend land in one group. Within a
group, each backend's per-request output token counts (by request index, each cycle) are compared.
With forced lengths this checks that every backend honoured them; with natural lengths
(dataset.force_output_len=false, greedy) it checks that the backends stop at the same EOS.

    python -m lem -m backend=pytorch,vllm dataset.force_output_len=false parity=true
    python -m lem.analysis.parity <dirs with result.json files>    # the same report for finished runs

Writes parity.json next to the results and prints one line. Light: no torch, no engine.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from lem.config.schema import config_hash
from lem.paths import RESULT_FILE
from lem.result.schema import Result

PARITY_FILE = "parity.json"
MAX_LISTED = 20  # mismatching requests listed per group


def _counts(result: Result) -> dict[str, int]:
    return {f"{q['cycle']}:{q['index']}": q["output_tokens"] for q in result.requests}


def compare(results: list[Result]) -> list[dict[str, Any]]:
    """One entry per group holding ok results of two or more backends."""
    groups: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if r.status == "ok" and r.config:
            groups[config_hash({k: v for k, v in r.config.items() if k != "backend"})].append(r)
    out = []
    for key, rs in sorted(groups.items()):
        by_backend = {r.config["backend"]["name"]: _counts(r) for r in rs}
        if len(by_backend) < 2:
            continue
        requests = sorted(set().union(*by_backend.values()))
        differ = [{"request": q, "output_tokens": {b: c.get(q) for b, c in by_backend.items()}}
                  for q in requests if len({c.get(q) for c in by_backend.values()}) > 1]
        out.append({"group": key, "backends": sorted(by_backend), "requests": len(requests),
                    "equal": not differ, "mismatches": len(differ), "first_mismatches": differ[:MAX_LISTED]})
    return out


def read_results(dirs: list[Path]) -> list[Result]:
    """Every readable result below `dirs`; one that is not (not JSON, not of this schema: ResultError
    is a ValueError) compares nothing, as a failed run would not."""
    results = []
    for d in dirs:
        for path in sorted(Path(d).rglob(RESULT_FILE)):
            try:
                results.append(Result.read(path))
            except (OSError, ValueError):
                continue
    return results


def write_report(dirs: list[Path], out_dir: Path) -> str:
    groups = compare(read_results(dirs))
    path = Path(out_dir) / PARITY_FILE
    path.write_text(json.dumps({"groups": groups}, indent=2))
    equal = sum(g["equal"] for g in groups)
    if not groups:
        return f"lem parity: no configuration ran on two or more backends ({path})"
    return (f"lem parity: {len(groups)} configuration(s) on several backends, {equal} with equal "
            f"output token counts per request, {len(groups) - equal} differing ({path})")


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m lem.analysis.parity DIR [DIR ...]  (writes DIR/parity.json)", file=sys.stderr)
        return 2
    print(write_report([Path(a) for a in argv], Path(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
