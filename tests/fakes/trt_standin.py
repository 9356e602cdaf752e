"""Put the TensorRT-LLM stand-in (tests/fakes/tensorrt_llm) in place for one test, and take it
away after, so no other test of the session finds a `tensorrt_llm` module imported."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

FAKES = Path(__file__).parent


def _drop() -> None:
    for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
        del sys.modules[name]


@contextmanager
def standin(monkeypatch):
    """Yields the stand-in's llm module (CALLS, BUILDS, STEP_S, the LLM classes), logs emptied."""
    _drop()
    monkeypatch.syspath_prepend(str(FAKES))
    from tensorrt_llm.llmapi import llm as fake

    monkeypatch.setattr(fake, "CALLS", [])
    monkeypatch.setattr(fake, "BUILDS", [])
    try:
        yield fake
    finally:
        _drop()
