"""The fields of a result.json the aggregation computes with, and the JSON type each must have.

A result that parses but has a field of the wrong type (edited by hand, written by another tool)
must become one `corrupt` row naming that field, never a TypeError that stops the whole study:
pooled sums, percentiles and plots would otherwise meet a string or a list where a number goes.
Null is always allowed (lem writes null for what it could not measure, and says why). Only what
the aggregation reads is checked: other fields are copied to the runs table as they are.
"""

from __future__ import annotations

from typing import Any, Optional

NUMBER = (int, float)  # bool is a JSON true/false, not a number: `type(v) in NUMBER` excludes it
TEXT = (str,)
OBJECT = (dict,)
ARRAY = (list,)
KIND_NAMES = {NUMBER: "a number", TEXT: "a string", OBJECT: "an object", ARRAY: "an array"}
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
# SHAPE, checked in every result: values that reading copies as they are and that later
# arithmetic (pooled sums, bootstrap, plots of the windows) would fail on.
SHAPE = {
    "status": TEXT,
    "config": {"repeat": NUMBER},
    "summary": dict.fromkeys(SUMMARY_NUMBERS, NUMBER),
    "statistics": {r[0]: dict.fromkeys(STAT_KEYS, NUMBER) for r in RATIOS},
    "windows": [{"start_ns": NUMBER, "end_ns": NUMBER}],
}
# DEEP, checked only when reading a result that fits SHAPE failed (it would fail on each of these:
# numpy's conversion of thousands of token times is the fast check), to say which value it was
DEEP = {
    "config": {"backend": {"name": TEXT}},
    "environment": {"gpus": [{"name": TEXT}], "libraries": OBJECT, "git": OBJECT},
    "validity": {"reasons": [TEXT]},
    "error": OBJECT,
    "summary": OBJECT,
    "statistics": {"*": OBJECT},
    "timeseries": {"file": TEXT},
    "windows": [OBJECT],
    "requests": [{**dict.fromkeys(REQUEST_NUMBERS, NUMBER), "token_times_s": [NUMBER]}],
}


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


def json_type(value: Any) -> str:
    """The JSON type of a parsed value, with the value itself for scalars (shortened)."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    return {dict: "an object", list: "an array"}.get(type(value), type(value).__name__)
