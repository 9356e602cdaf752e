"""Workload: config -> list of requests (prompt token ids + output length) -> batches.

Prompts are token ids from the start: lengths are exact, and no backend re-tokenises text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

SAMPLE_PROMPTS = Path(__file__).parents[1] / "data" / "sample_prompts.jsonl"


@dataclass
class Request:
    index: int
    prompt_ids: list[int]
    output_len: int  # forced length, or the cap when lengths are natural

    @property
    def input_len(self) -> int:
        return len(self.prompt_ids)


class WorkloadError(ValueError):
    """A dataset that cannot be read; the message names the file/line or key and the fix."""


def build_requests(d, vocab_size: int, tokenizer=None) -> list[Request]:
    """Requests for dataset config `d`; `tokenizer` is needed for text datasets only."""
    if d.kind == "synthetic":
        return synthetic_requests(d, vocab_size, _special_ids(tokenizer))
    if tokenizer is None:
        raise WorkloadError(f"dataset={d.name} holds text and the model has no tokenizer; "
                            f"use dataset=synthetic or a model with a tokenizer (model=tiny)")
    records = read_jsonl(Path(d.path) if d.path else SAMPLE_PROMPTS, d.text_field) \
        if d.kind == "jsonl" else read_hf(d)
    return _tokenize(records[: d.num_requests], tokenizer, d.output_len)


def synthetic_requests(d, vocab_size: int, special_ids: set[int]) -> list[Request]:
    rng = np.random.default_rng(d.seed)
    in_lens = _lengths(rng, d.num_requests, d.input_len, d.input_len_dist, d.input_len_spread)
    out_lens = _lengths(rng, d.num_requests, d.output_len, d.output_len_dist, d.output_len_spread)
    allowed = np.setdiff1d(np.arange(vocab_size), np.fromiter(special_ids, int, len(special_ids)))
    return [Request(i, rng.choice(allowed, size=n).tolist(), int(m))
            for i, (n, m) in enumerate(zip(in_lens, out_lens))]


def _lengths(rng, n: int, mean: int, dist: str, spread: int) -> np.ndarray:
    if dist == "fixed" or spread == 0:
        return np.full(n, mean, dtype=int)
    if dist == "uniform":
        values = rng.integers(mean - spread, mean + spread + 1, size=n)
    else:  # normal
        values = np.rint(rng.normal(mean, spread, size=n)).astype(int)
    return np.clip(values, 1, None)


def _special_ids(tokenizer) -> set[int]:
    return set(tokenizer.all_special_ids) if tokenizer is not None else set()


def read_jsonl(path: Path, text_field: str) -> list[dict]:
    """Records of a JSON-lines file; a malformed line is an error naming the file and line."""
    if not path.is_file():
        raise WorkloadError(f"dataset.path={path} does not exist; point it at a .jsonl file")
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            records.append(_parse_line(path, lineno, line, text_field))
    if not records:
        raise WorkloadError(f"dataset.path={path} holds no records")
    return records


def _parse_line(path: Path, lineno: int, line: str, text_field: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise WorkloadError(f"{path}:{lineno}: not valid JSON ({exc.msg}); "
                            f"each line must be one JSON object") from exc
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        raise WorkloadError(f"{path}:{lineno}: no string field '{text_field}'; "
                            f"set dataset.text_field to the field holding the prompt")
    out = record.get("output_len")
    if out is not None and (isinstance(out, bool) or not isinstance(out, int) or out < 1):
        raise WorkloadError(f"{path}:{lineno}: output_len={out!r} must be a positive integer")
    return {"text": record[text_field], "output_len": out}


def read_hf(d) -> list[dict]:
    """Records of a `datasets` source from the local cache or a save_to_disk directory."""
    import datasets

    try:
        if Path(d.path).is_dir():
            ds = datasets.load_from_disk(d.path)
            ds = ds[d.split] if isinstance(ds, datasets.DatasetDict) else ds
        else:
            ds = datasets.load_dataset(d.path, d.hf_name, split=d.split)
    except Exception as exc:
        raise WorkloadError(
            f"dataset.path={d.path} (split={d.split}) could not be loaded from the local cache "
            f"({type(exc).__name__}: {exc}). Fix: download it on a connected machine with "
            f"datasets.load_dataset(...) and copy HF_DATASETS_CACHE, or save_to_disk and point "
            f"dataset.path at that directory") from exc
    if d.text_field not in ds.column_names:
        raise WorkloadError(f"dataset.text_field={d.text_field} is not a column of {d.path} "
                            f"(columns: {ds.column_names})")
    n = min(len(ds), d.num_requests)
    has_len = "output_len" in ds.column_names
    return [{"text": ds[i][d.text_field], "output_len": ds[i]["output_len"] if has_len else None}
            for i in range(n)]


def _tokenize(records: list[dict], tokenizer, default_output_len: Optional[int]) -> list[Request]:
    return [Request(i, tokenizer(r["text"])["input_ids"], r["output_len"] or default_output_len)
            for i, r in enumerate(records)]


def check_lengths(requests: list[Request], max_len: Optional[int], model_name: str) -> None:
    """Prompt + output must fit the model's context; the message names the longest request."""
    if not max_len:
        return
    worst = max(requests, key=lambda r: r.input_len + r.output_len)
    if worst.input_len + worst.output_len > max_len:
        raise WorkloadError(
            f"request {worst.index} needs {worst.input_len} prompt + {worst.output_len} output "
            f"tokens; model={model_name} accepts {max_len}. Lower dataset.output_len, use shorter "
            f"prompts, or narrow the length spread")


def make_batches(requests: list[Request], strategy: str, batch_size: int) -> list[list[Request]]:
    """static: dataset order; sorted: longest prompts first, so a batch pads little;
    continuous: the whole workload is one submission (the engine batches as requests arrive)."""
    if strategy == "continuous":
        return [list(requests)]
    ordered = sorted(requests, key=lambda r: -r.input_len) if strategy == "sorted" else requests
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
