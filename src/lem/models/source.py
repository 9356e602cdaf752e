"""Resolve `model` config to where weights come from, without loading them.

tiny -> a generated checkpoint on disk; random -> an architecture config (weights built on the
GPU by the backend); hub -> a snapshot in the local Hugging Face cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from lem.models.tiny import tiny_model_dir


@dataclass
class ModelSource:
    name: str
    kind: str  # tiny | random | hub
    path: Optional[str] = None  # checkpoint directory (tiny, hub)
    config: dict = field(default_factory=dict)  # architecture (random)
    revision: Optional[str] = None
    seed: int = 0

    def tokenizer(self, trust_remote_code: bool = False):
        """The checkpoint's tokenizer; None for random-weight models (synthetic ids only)."""
        if self.path is None:
            return None
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path, trust_remote_code=trust_remote_code)

    def vocab_size(self) -> int:
        if self.path is None:
            return int(self.config["vocab_size"])
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(self.path).vocab_size)


    def max_len(self) -> Optional[int]:
        """Context length from the checkpoint's config (hub presets may not state it)."""
        if self.path is None:
            return self.config.get("max_position_embeddings")
        from transformers import AutoConfig

        return getattr(AutoConfig.from_pretrained(self.path), "max_position_embeddings", None)


class ModelNotAvailable(RuntimeError):
    """Weights that cannot be had here; the message says how to get them."""


def resolve_model(m, cache_dir: str) -> ModelSource:
    if m.source == "tiny":
        path = tiny_model_dir(cache_dir, m.seed, dict(m.config))
        return ModelSource(m.name, "tiny", path=str(path), seed=m.seed)
    if m.source == "random":
        return ModelSource(m.name, "random", config=dict(m.config), seed=m.seed)
    return ModelSource(m.name, "hub", path=hub_snapshot(m.hf_id, m.revision), revision=m.revision)


def hub_snapshot(hf_id: str, revision: Optional[str]) -> str:
    """Local snapshot of a hub checkpoint: the cache first, then the hub; a clear error if neither."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(hf_id, revision=revision, local_files_only=True)
    except Exception as cached_exc:
        try:
            return snapshot_download(hf_id, revision=revision)
        except Exception as hub_exc:
            raise ModelNotAvailable(
                f"model.hf_id={hf_id} is not in the local Hugging Face cache "
                f"({type(cached_exc).__name__}) and the hub could not be reached "
                f"({type(hub_exc).__name__}: {str(hub_exc)[:200]}). Fix: on a connected machine run "
                f"`hf download {hf_id}` (with HF_TOKEN for gated models) and copy the "
                f"cache to HF_HOME here, or use a *-random model preset") from hub_exc
