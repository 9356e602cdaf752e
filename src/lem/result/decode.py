"""JSON -> the result's dataclass tree, typed and checked: the one field/type table of result.json.

The table is the dataclasses' own annotations (lem.result.schema and the types it holds), read
once per type: `decoder(tp)` turns an annotation into a function that checks a parsed JSON value
and builds the typed value from it, and `json_spec(tp)` turns it into the plain nested spec that
lem.aggregate.shape checks without building anything (see there why). Both read the same
annotations, so a field's type is written down once.

A value that does not fit raises Misfit, which names the key (`summary.duration_s`,
`windows[0].gpus[1].energy_j`), the JSON type found and the one expected. The key is built on the
way out (each level adds its own name as the error passes it), so reading a result that fits
costs no string formatting at all.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Optional, Union

# JSON kinds as Python types after json/orjson parsing. bool is not a number here: `type(v) in
# NUMBER` excludes True/False (isinstance would not)
NUMBER = (int, float)
TEXT = (str,)
BOOL = (bool,)
OBJECT = (dict,)
ARRAY = (list,)
KIND_NAMES = {NUMBER: "a number", TEXT: "a string", BOOL: "a boolean", OBJECT: "an object",
              ARRAY: "an array"}
LEAVES = {int: NUMBER, float: NUMBER, str: TEXT, bool: BOOL}

Decoder = Callable[[Any], Any]


class Misfit(ValueError):
    """A JSON value that does not fit its field. `key` is where (dotted, [i] for list elements),
    `what` the whole sentence: "summary.duration_s is a string ('fast'), expected a number"."""

    def __init__(self, value: Any = None, expected: str = "", problem: Optional[str] = None):
        super().__init__()
        self.parts: list[str] = []  # innermost first: each level appends its own name on the way out
        self.value, self.expected, self.problem = value, expected, problem

    @property
    def key(self) -> str:
        return "".join(reversed(self.parts)).lstrip(".")

    @property
    def what(self) -> str:
        if self.problem is not None:
            return f"{self.key} {self.problem}"
        return f"{self.key or 'the file'} is {json_type(self.value)}, expected {self.expected}"

    def __str__(self) -> str:
        return self.what


def json_type(value: Any) -> str:
    """The JSON type of a parsed value, with the value itself for scalars (shortened)."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if value is None:
        return "null"
    return {dict: "an object", list: "an array"}.get(type(value), type(value).__name__)


def optional_of(tp) -> Optional[Any]:
    """X for Optional[X] (and X | None), else None."""
    if typing.get_origin(tp) not in (Union, types.UnionType):
        return None
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) != 1:
        raise TypeError(f"result schema: unions other than Optional[X] are not supported: {tp}")
    return args[0]


_DECODERS: dict[Any, Decoder] = {}


def decoder(tp) -> Decoder:
    """The checking builder of annotation `tp`, made once per annotation."""
    found = _DECODERS.get(tp)
    if found is None:
        found = _DECODERS[tp] = _make(tp)
    return found


def _make(tp) -> Decoder:
    inner = optional_of(tp)
    if inner is not None:
        return _nullable(decoder(inner))
    if tp is Any:
        return _as_is
    if tp in LEAVES:
        return _LEAF_DECODERS[tp]
    if dataclasses.is_dataclass(tp):
        return _lazy_dataclass(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list and len(args) == 1:
        return _list(decoder(args[0]), args[0] is Any)
    if origin is dict and len(args) == 2 and args[0] is str:
        return _dict(decoder(args[1]), args[1] is Any)
    raise TypeError(f"result schema: no JSON reading for the annotation {tp!r}; use a dataclass, "
                    "Optional, list[X], dict[str, X], int, float, str, bool or Any")


def _as_is(value):
    return value


def _nullable(inner: Decoder) -> Decoder:
    def decode(value):
        if value is None:
            return None
        try:
            return inner(value)
        except Misfit as e:
            if not e.parts and e.problem is None:  # this very value: null would have fitted too
                e.expected += " or null"
            raise

    return decode


def _int(value):
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():  # 3.0 from a writer that knows only floats
        return int(value)
    raise Misfit(value, "a whole number" if type(value) is float else "a number")


def _float(value):
    # an int is kept as it is: a float to type checkers (PEP 484), and a result read and written
    # again keeps its JSON text (NVML's whole degrees stay 39, not 39.0)
    if type(value) is float or type(value) is int:
        return value
    raise Misfit(value, "a number")


def _leaf(kind: type, expected: str) -> Decoder:
    def decode(value):
        if type(value) is kind:
            return value
        raise Misfit(value, expected)

    return decode


_LEAF_DECODERS = {int: _int, float: _float, str: _leaf(str, "a string"), bool: _leaf(bool, "a boolean")}


def _list(item: Decoder, untyped: bool) -> Decoder:
    def decode(value):
        if type(value) is not list:
            raise Misfit(value, "an array")
        if untyped:
            return value
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except Misfit as e:
                e.parts.append(f"[{i}]")
                raise
        return out

    return decode


def _dict(item: Decoder, untyped: bool) -> Decoder:
    def decode(value):
        if type(value) is not dict:
            raise Misfit(value, "an object")
        if untyped:
            return value
        out = {}
        for k, v in value.items():
            try:
                out[k] = item(v)
            except Misfit as e:
                e.parts.append(f".{k}")
                raise
        return out

    return decode


def _lazy_dataclass(cls) -> Decoder:
    """Built on first use: the annotations of a dataclass may name types defined after it."""
    built: list[Decoder] = []

    def decode(value):
        if not built:
            built.append(_dataclass(cls))
        return built[0](value)

    return decode


def _dataclass(cls) -> Decoder:
    """An object -> cls(**fields): every key a field, each value decoded as its annotation says; a
    missing key takes the field's default (results of an older 2.x lack fields added since)."""
    hints = typing.get_type_hints(cls)
    fields = [(f.name, decoder(hints[f.name]), _default(f)) for f in dataclasses.fields(cls) if f.init]
    names = frozenset(name for name, _, _ in fields)

    def decode(value):
        if type(value) is not dict:
            raise Misfit(value, "an object")
        if not names.issuperset(value):
            raise _unknown(cls, sorted(set(value) - names)[0])
        kwargs = {}
        for name, field_decoder, default in fields:
            try:
                kwargs[name] = field_decoder(value[name]) if name in value else default()
            except Misfit as e:
                e.parts.append(f".{name}")
                raise
        return cls(**kwargs)

    return decode


def _unknown(cls, key: str) -> Misfit:
    e = Misfit(problem=f"is not a field of the result schema ({cls.__name__} has no {key!r})")
    e.parts.append(f".{key}")
    return e


def _default(f: dataclasses.Field) -> Callable[[], Any]:
    if f.default is not dataclasses.MISSING:
        value = f.default
        return lambda: value
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory

    def missing():
        raise Misfit(problem="is missing, and the field has no default")

    return missing


def json_spec(tp, only: Optional[dict] = None):
    """The JSON shape of annotation `tp` as lem.aggregate.shape checks it (null always fits): a
    tuple of types for a value, a dict for an object (its fields' specs; "*": every field's), a
    one-element list for an array of like elements; None where anything goes (Any). `only` picks
    fields of a dataclass ({name: None} for the whole field, {name: {...}} to pick below it)."""
    tp = optional_of(tp) or tp
    if tp is Any:
        return None
    if tp in LEAVES:
        return LEAVES[tp]
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = only if only is not None else dict.fromkeys(f.name for f in dataclasses.fields(tp))
        specs = {name: json_spec(hints[name], sub) for name, sub in names.items()}
        return {name: spec for name, spec in specs.items() if spec is not None}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        item = json_spec(args[0], only)
        return ARRAY if item is None else [item]
    if origin is dict:
        item = json_spec(args[1], only)
        return OBJECT if item is None else {"*": item}
    raise TypeError(f"result schema: no JSON shape for the annotation {tp!r}")
