"""lem's own greedy decoding loop (`backend.decode_loop=lem`): transformers' model, lem's loop.

Why: `generate` reads `unfinished_sequences.max() == 0` on the host after every step (transformers
defers that read only on Apple's MPS), so the host waits for the device each step and the device
then waits for the host to prepare and launch the next one. With a compiled, CUDA-graphed decode
step the device work per step is a few milliseconds and that host time is a large share of it.
With forced output lengths (lem's default) the number of steps is known before the first one, so
this loop never reads anything back until the batch is done: the host queues steps ahead while the
device runs them.

What stays the same as `generate(do_sample=False, cache_implementation="static")`: the model's own
forward, the StaticCache sized prompt + max_new_tokens, the compiled call
(`model.get_compiled_call`, the one `generate` uses), uncompiled prefill, position ids from the
attention mask, EOS masked while lengths are forced, padding after a row's EOS otherwise. The same
ids come out (tests/test_pytorch_decode.py checks it against `generate`).
With natural lengths (EOS ends a row) the loop reads whether every row is done after each step,
as `generate` does: the same host wait, no extra step.

One more read-back lives in transformers, not here: building the attention mask eagerly, its SDPA
path asks whether the padding mask is all ones (`fast_all`, a host read). `generate` builds the
mask outside its compiled call, so it pays that read every step even when compiled; this loop
hands the 2-D mask to the compiled call, where the check is traced, not read. Eager
(`torch_compile=false`), both pay it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional


def decode_greedy(model, input_ids, attention_mask, targets: list[int], forced: bool,
                  eos_ids: set[int], pad_id: int, mark: Callable[[], None],
                  compiled_call: Optional[Callable] = None):
    """Greedy ids [batch, max(targets)], calling `mark()` once per step after its token exists
    (on the device's stream: no wait). Rows stop at their target (forced) or their EOS."""
    import inspect

    import torch
    from transformers import StaticCache

    batch, prompt_len = input_ids.shape
    steps = max(targets)
    device = input_ids.device
    cache = StaticCache(config=model.config, max_cache_len=prompt_len + steps)
    positions = attention_mask.long().cumsum(-1) - 1
    positions = positions.masked_fill(attention_mask == 0, 0)
    # future slots are hidden by causality, so one fixed-shape mask serves every decode step
    full_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, steps)], dim=-1)
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=device)
    state = _RowState(torch.tensor(targets, device=device), eos, forced, pad_id)
    out_ids = torch.full((batch, steps), pad_id, dtype=torch.long, device=device)

    params = set(inspect.signature(model.forward).parameters)  # once per batch, not per step
    slots = _CacheSlots("cache_position" in params, prompt_len, steps, device)
    # the LM head for the last position only, where the model allows it (as generate does)
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                   past_key_values=cache, use_cache=True, **slots.prefill(), **last_only).logits
    forward = compiled_call or model.__call__
    next_pos = positions[:, -1:] + 1
    for step in range(steps):
        token = state.choose(logits[:, -1], step)
        logits = None  # dropped before the next call: a CUDA-graphed call reuses its outputs
        out_ids[:, step] = token
        mark()
        if step + 1 == steps or (not forced and state.all_done()):
            break
        logits = forward(input_ids=token[:, None], attention_mask=full_mask,
                         position_ids=next_pos + step, past_key_values=cache, use_cache=True,
                         **slots.decode(step)).logits
    return out_ids


class _CacheSlots:
    """`cache_position` for models that take it (transformers 4.x; 5.x caches count their own
    length). Made on the device once: a host-built tensor per step would be a copy per step."""

    def __init__(self, takes_it: bool, prompt_len: int, steps: int, device):
        import torch

        self.slots = None
        if takes_it:
            self.slots = torch.arange(prompt_len + steps, device=device)
        self.prompt_len = prompt_len

    def prefill(self) -> dict[str, Any]:
        return {} if self.slots is None else {"cache_position": self.slots[:self.prompt_len]}

    def decode(self, step: int) -> dict[str, Any]:
        at = self.prompt_len + step
        return {} if self.slots is None else {"cache_position": self.slots[at:at + 1]}


class _RowState:
    """Token choice and which rows are done, all on the device."""

    def __init__(self, targets, eos, forced: bool, pad_id: int):
        self.targets, self.eos, self.forced, self.pad_id = targets, eos, forced, pad_id
        self.done = None

    def choose(self, logits, step: int):
        import torch

        scores = logits.float()
        if self.forced and self.eos.numel():  # as generate's min_new_tokens: EOS never chosen
            scores.index_fill_(1, self.eos, -float("inf"))
        token = torch.argmax(scores, dim=-1)
        if not self.forced:
            if self.done is not None:  # a finished row gets padding, as in generate
                token = torch.where(self.done, torch.full_like(token, self.pad_id), token)
            ended = torch.isin(token, self.eos) | (step + 1 >= self.targets)
            self.done = ended if self.done is None else self.done | ended
        return token

    def all_done(self) -> bool:
        return bool(self.done.all())  # the host waits here, once per step, like generate

