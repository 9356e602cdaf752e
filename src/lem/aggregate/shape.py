"""The fields of a result.json the aggregation computes with, and the JSON type each must have.

A result that parses but has a field of the wrong type (edited by hand, written by another tool)
must become one `corrupt` row naming that field, never a TypeError that stops the whole study:
pooled sums, percentiles and plots would otherwise meet a string or a list where a number goes.
Null is always allowed (lem writes null for what it could not measure, and says why). Only what
the aggregation reads is checked: other fields are copied to the runs table as they are.
"""

from __future__ import annotations

from typing import Any, Optional

from lem.result.decode import KIND_NAMES, NUMBER, TEXT, json_spec, json_type
from lem.result.schema import CycleStats, Result, Summary, Window

# what lem.aggregate.groups pools: (metric, numerator, denominator, bootstrap CI?), pooled =
# sum(numerator) / sum(denominator) of the summaries; the per-run metric and its statistics bootstrapped
RATIOS = (("j_per_output_token", "energy_j", "output_tokens", True),
          ("dynamic_j_per_output_token", "dynamic_energy_j", "output_tokens", False),
          ("output_tokens_per_s", "output_tokens", "duration_s", True))
STAT_KEYS = ("n", "mean", "std", "ci95_low", "ci95_high")
SUMMARY_NUMBERS = ("cycles", *dict.fromkeys(c for r in RATIOS for c in r[:3]))
REQUEST_NUMBERS = ("ttft_s", "tpot_s", "e2e_s")

# What must be what, nested as in result.json: a tuple of types is a value's type, a dict an object
# whose named fields are checked ("*": every field), a list of one spec an array whose every
# element is checked. Fields not named may be anything.
# The types are the result schema's own (lem.result.decode.json_spec reads the annotations that
# Result.read checks), so a field's type is written down once. Aggregation does not build the
# typed Result itself: over 10,000 results that adds ~0.15 ms a file, a third more than the whole
# reading of a run today (benchmarks/aggregate_speed.py), for objects it would turn back into
# flat rows; it checks the parsed JSON against the same table instead. Only the blocks the schema
# leaves free-form (config, environment, requests: dict[str, Any]) get their types here.
FREE_FORM = {
    "config": {"repeat": NUMBER, "backend": {"name": TEXT}},
    "environment": {"gpus": [{"name": TEXT}], "libraries": (dict,), "git": (dict,)},
    "requests": [{**dict.fromkeys(REQUEST_NUMBERS, NUMBER), "token_times_s": [NUMBER]}],
}


def merged(spec: dict, more: dict) -> dict:
    """`spec` with `more`'s fields added; where both name a field, both specs hold (an object's
    fields merged; otherwise `more`'s spec, which is the narrower: a dict or [spec] for OBJECT or ARRAY)."""
    out = dict(spec)
    for key, sub in more.items():
        have = out.get(key)
        out[key] = merged(have, sub) if type(have) is dict and type(sub) is dict else sub
    return out


# SHAPE, checked in every result: values that reading copies as they are and that later
# arithmetic (pooled sums, bootstrap, plots of the windows) would fail on.
SHAPE = {
    **json_spec(Result, only={"status": None}),
    "config": {"repeat": FREE_FORM["config"]["repeat"]},
    "summary": json_spec(Summary, only=dict.fromkeys(SUMMARY_NUMBERS)),
    # the pooled ratios' statistics only: every metric's (~20 a result) would double this check's time
    "statistics": dict.fromkeys((r[0] for r in RATIOS), json_spec(CycleStats, only=dict.fromkeys(STAT_KEYS))),
    "windows": json_spec(list[Window], only={"start_ns": None, "end_ns": None}),
}
# DEEP, checked only when reading a result that fits SHAPE failed (it would fail on each of these:
# numpy's conversion of thousands of token times is the fast check), to say which value it was:
# every typed field of the schema, and the free-form values reading uses
DEEP = merged(json_spec(Result), FREE_FORM)


def wrong_type(data: dict[str, Any], deep: bool = False) -> Optional[str]:
    """Why `data` (a parsed result, an object) does not have the shape the aggregation needs: the
    first field of a wrong type, its JSON type and value, what it should be; None when it fits."""
    bad = _misfit(data, DEEP if deep else SHAPE)
    if bad is None:
        return None
    name, value, expected = bad
    return f"{name.lstrip('.')} is {json_type(value)}, expected {expected} or null"


def _misfit(value: Any, spec) -> Optional[tuple[str, Any, str]]:
    """(where below `value`, the value there, what it should be) of the first value that does
    not fit `spec`; None when all fit. Nulls fit anything."""
    if type(spec) is tuple:
        return None if type(value) in spec else ("", value, KIND_NAMES[spec])
    if type(spec) is list:
        if type(value) is not list:
            return "", value, "an array"
        return _first(enumerate(value), lambda key: spec[0], "[{}]")
    if type(value) is not dict:
        return "", value, "an object"
    bad = _first(value.items(), lambda key: spec["*"], ".{}") if "*" in spec else None
    return bad or _first(((k, value.get(k)) for k in spec if k != "*"), spec.get, ".{}")


def _first(items, spec_of, name: str) -> Optional[tuple[str, Any, str]]:
    """The first misfit among (key, value) items, each against spec_of(key), named `name` (a
    format) followed by where below it."""
    for key, item in items:
        if item is None:
            continue
        spec = spec_of(key)
        if type(spec) is tuple and type(item) in spec:
            continue  # a leaf that fits: no call for it
        bad = _misfit(item, spec)
        if bad:
            return name.format(key) + bad[0], bad[1], bad[2]
    return None
