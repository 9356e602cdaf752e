"""Greedy token ids from lem's vLLM backend on a checkpoint, as JSON on stdout (run in its own
process by tests/test_vllm_engine.py: python -m tests.vllm_greedy_ids <checkpoint dir>)."""

from __future__ import annotations

import json
import sys

import numpy as np

OUTPUT_LEN = 16
# eight prompts of 5-40 token ids, inside the tiny vocabulary, clear of its special ids (0-3)
_rng = np.random.default_rng(0)
PROMPTS = [_rng.integers(4, 500, size=n).tolist() for n in (5, 9, 13, 17, 21, 27, 33, 40)]


def main(checkpoint: str) -> None:
    from omegaconf import OmegaConf

    from lem.backends.vllm.backend import VLLMBackend
    from lem.models.source import ModelSource
    from lem.workload.requests import Request

    cfg = OmegaConf.load("conf/backend/vllm.yaml")
    cfg.pop("defaults")
    cfg.update(seed=0, in_process=True, enforce_eager=True, kv_cache_memory_bytes=2**26)
    backend = VLLMBackend(cfg, None)
    precision = OmegaConf.create({"name": "fp32", "dtype": "float32", "quantization": None})
    backend.load(ModelSource("tiny", "tiny", path=checkpoint), precision, [])
    rec = backend.generate([Request(i, p, OUTPUT_LEN) for i, p in enumerate(PROMPTS)], True)
    backend.close()
    print(json.dumps(rec.token_ids))


if __name__ == "__main__":
    main(sys.argv[1])
