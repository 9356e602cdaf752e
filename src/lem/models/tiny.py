"""The tiny model: a small Llama with random weights and a locally trained BPE tokenizer.

Built once per (seed, architecture) under `cache_dir` and reused; the same seed gives the same
bytes, so vLLM and transformers load the very same checkpoint. No network at any point.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
VOCAB_SIZE = 1024
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "ven", "dor", "pla", "qui", "zen",
              "ber", "tos", "ga", "fi", "mon", "ex", "al", "um", "or", "is", "an", "et"]


def tiny_model_dir(cache_dir: str | os.PathLike, seed: int, arch: dict) -> Path:
    """Path of the generated checkpoint, building it on first use (atomic: safe under sweeps)."""
    key = hashlib.sha256(json.dumps({"seed": seed, "arch": arch}, sort_keys=True).encode())
    target = Path(cache_dir).expanduser() / "models" / f"tiny-{key.hexdigest()[:12]}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
    try:
        _build(staging, seed, arch)
        os.replace(staging, target)  # another process may have won the race: fine, same bytes
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _build(out: Path, seed: int, arch: dict) -> None:
    tokenizer = build_tokenizer(seed)
    tokenizer.save_pretrained(out)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        **arch,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)


def build_tokenizer(seed: int):
    """A byte-level BPE trained on a seeded pseudo-language corpus (deterministic, offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", padding_side="left",
    )


def corpus(seed: int, lines: int = 2000) -> list[str]:
    """Seeded sentences of made-up words plus English glue, enough for 1k merges."""
    rng = random.Random(seed)
    words = ["".join(rng.choices(_SYLLABLES, k=rng.randint(1, 3))) for _ in range(400)]
    words += ["the", "of", "and", "a", "to", "in", "is", "energy", "token", "model", "joule"]
    return [" ".join(rng.choices(words, k=rng.randint(5, 20))) + "." for _ in range(lines)]
