"""PyTorch backend: transformers `from_pretrained` + `generate`, every YAML option passed through.

Per-token timestamps come from a streamer: `generate` hands it each step's tokens after copying
them to the host, which synchronises the device, so a timestamp marks a token that exists.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from lem.backends.base import BatchRecord, GpuMemory, PrecisionInfo
from lem.models.source import ModelSource
from lem.workload import Request

log = logging.getLogger(__name__)

_BNB = {"bnb-int8": ("int8", "LLM.int8 (bitsandbytes)"), "bnb-int4": ("int4-nf4", "NF4 (bitsandbytes)")}


class PyTorchBackend:
    def __init__(self, backend_cfg, run_cfg):
        self.cfg = backend_cfg
        self.gpus: list[int] = []
        self.model = None
        self.pad_id = 0
        self.eos_ids: set[int] = set()

    # -- loading ---------------------------------------------------------------------------
    def load(self, source: ModelSource, precision, gpus: list[int],
             tensor_parallel: bool = False) -> PrecisionInfo:
        """`tensor_parallel`: this process is one rank of a torch.distributed group
        (lem.backends.parallel) and loads its shard through transformers' tp_plan="auto"."""
        import os

        import torch

        self.gpus = list(gpus)
        self.tensor_parallel = tensor_parallel
        rank = int(os.environ.get("LOCAL_RANK", 0)) if tensor_parallel else 0
        self.device = torch.device(f"cuda:{rank}" if gpus else "cpu")
        if gpus:
            torch.cuda.set_device(self.device)
        dtype = getattr(torch, precision.dtype)
        if source.path is not None:
            model = self._from_pretrained(source, precision, dtype)
        else:
            model = self._from_config(source, dtype)
        model.eval()
        self.model = model
        self._read_special_ids(model)
        if self.cfg.torch_compile:
            model.forward = torch.compile(model.forward)
        return _precision_info(model, precision)

    def from_pretrained_kwargs(self, source: ModelSource, precision, dtype) -> dict[str, Any]:
        """Everything from the backend YAML and the precision group that reaches from_pretrained."""
        c = self.cfg
        kwargs: dict[str, Any] = {
            "dtype": dtype,
            "low_cpu_mem_usage": c.low_cpu_mem_usage,
            "trust_remote_code": c.trust_remote_code,
            "device_map": _plain(c.device_map) if c.device_map is not None else self.device,
        }
        optional = {"attn_implementation": c.attn_implementation, "revision": source.revision,
                    "max_memory": _max_memory(c.max_memory)}
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        if getattr(self, "tensor_parallel", False):  # every rank places its own shard
            del kwargs["device_map"]
            kwargs.update(_tp_plan_kwargs())
        if precision.quantization:
            kwargs["quantization_config"] = _bnb_config(precision.quantization, dtype)
        return kwargs

    def _from_pretrained(self, source: ModelSource, precision, dtype):
        from transformers import AutoModelForCausalLM

        kwargs = self.from_pretrained_kwargs(source, precision, dtype)
        log.info("from_pretrained(%s, %s)", source.path, kwargs)
        return AutoModelForCausalLM.from_pretrained(source.path, **kwargs)

    def _from_config(self, source: ModelSource, dtype):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.for_model(**source.config)
        kwargs = {"dtype": dtype, "trust_remote_code": self.cfg.trust_remote_code}
        if self.cfg.attn_implementation is not None:
            kwargs["attn_implementation"] = self.cfg.attn_implementation
        torch.manual_seed(source.seed)
        # Build on the device without transformers' per-module init (14.7 s for 8B on an H200),
        # then draw the weights in one pass with the same distribution that init uses.
        with self.device, _no_init_weights():
            model = AutoModelForCausalLM.from_config(config, **kwargs)
        _fill_random(model, getattr(config, "initializer_range", 0.02), source.seed)
        return model

    def _read_special_ids(self, model) -> None:
        gen = model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else model.config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        pad = gen.pad_token_id if gen.pad_token_id is not None else model.config.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids, default=0)

    # -- generation ------------------------------------------------------------------------
    def generate_kwargs(self, targets: list[int], force_output_len: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": max(targets), "do_sample": False,
                                  "pad_token_id": self.pad_id}
        if force_output_len:
            kwargs["min_new_tokens"] = max(targets)  # EOS masked; each row stops at its target
        if self.cfg.cache_implementation is not None:
            kwargs["cache_implementation"] = self.cfg.cache_implementation
        return kwargs

    def generate(self, batch: list[Request], force_output_len: bool) -> BatchRecord:
        import torch
        from transformers import StoppingCriteriaList

        input_ids, attention_mask = self._pad_left(batch)
        targets = [r.output_len for r in batch]
        clock = _TokenClock()
        stop = _RowLengths(input_ids.shape[1], torch.tensor(targets, device=self.device))
        kwargs = self.generate_kwargs(targets, force_output_len)
        submit_s = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                      streamer=clock, stopping_criteria=StoppingCriteriaList([stop]),
                                      **kwargs)
        generated = out[:, input_ids.shape[1]:].tolist()
        counts = self._count_outputs(generated, targets, force_output_len, len(clock.times_s))
        return BatchRecord(submit_s, counts, [clock.times_s[:n] for n in counts],
                           token_ids=[ids[:n] for ids, n in zip(generated, counts)])

    def _pad_left(self, batch: list[Request]):
        import torch

        width = max(r.input_len for r in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, r in enumerate(batch):
            ids[row, width - r.input_len:] = torch.tensor(r.prompt_ids)
            mask[row, width - r.input_len:] = 1
        return ids.to(self.device), mask.to(self.device)

    def _count_outputs(self, generated: list[list[int]], targets: list[int], forced: bool,
                       steps: int) -> list[int]:
        """Tokens each request produced, from the ids: its target, or up to and with its EOS."""
        counts = []
        for ids, target in zip(generated, targets):
            n = min(target, steps, len(ids))
            if not forced:
                eos_at = next((i for i, t in enumerate(ids[:n]) if t in self.eos_ids), None)
                n = n if eos_at is None else eos_at + 1
            counts.append(n)
        return counts

    def model_info(self) -> dict[str, Any]:
        """Parameter count and bytes as loaded (quantized weights count as stored), and the
        architecture config, for roofline figures."""
        params = list(self.model.parameters())
        return {"num_params": sum(p.numel() for p in params),
                "param_bytes": sum(p.numel() * p.element_size() for p in params),
                # what this process holds: less than num_params when tensor parallel shards it
                "local_param_elements": sum(_local(p).numel() for p in params),
                "arch": self.model.config.to_dict()}

    # -- memory and teardown ---------------------------------------------------------------
    def _devices(self) -> list[tuple[int, int]]:
        """(torch index, physical index) of the GPUs this process drives: a tensor-parallel rank
        drives only its own (touching the others would create CUDA contexts there)."""
        if getattr(self, "tensor_parallel", False) and self.gpus:
            return [(self.device.index, self.gpus[self.device.index])]
        return list(enumerate(self.gpus))

    def reset_peak_memory(self) -> None:
        import torch

        for i, _ in self._devices():
            torch.cuda.reset_peak_memory_stats(i)

    def peak_memory(self) -> list[GpuMemory]:
        import torch

        return [GpuMemory(phys, torch.cuda.max_memory_allocated(i) / 2**20,
                          torch.cuda.max_memory_reserved(i) / 2**20)
                for i, phys in self._devices()]

    def close(self) -> None:
        import gc

        import torch

        self.model = None
        gc.collect()
        if self.gpus:
            torch.cuda.empty_cache()


class _TokenClock:
    """A generate() streamer that timestamps each decoding step (the first put is the prompt)."""

    def __init__(self):
        self.times_s: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if self._prompt_seen:
            self.times_s.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        pass


class _RowLengths:
    """Stopping criterion: each row stops once it has its own target number of new tokens."""

    def __init__(self, prompt_len: int, targets):
        self.prompt_len = prompt_len
        self.targets = targets

    def __call__(self, input_ids, scores, **kwargs):
        return (input_ids.shape[1] - self.prompt_len) >= self.targets


def _no_init_weights():
    """transformers' context that skips weight init (its module moved between 4.x and 5.x)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:  # neither: keep transformers' own (slower) init
            import contextlib

            return contextlib.nullcontext()
    return no_init_weights()


def _fill_random(model, std: float, seed: int) -> None:
    """Weights (>= 2-D) ~ N(0, std) and biases 0, as transformers' default init; norm weights
    keep the ones their constructors set. Seeded, on the parameters' own device."""
    import torch

    gen = None
    with torch.no_grad():
        for name, p in model.named_parameters():
            if gen is None or gen.device != p.device:
                gen = torch.Generator(device=p.device).manual_seed(seed)
            if p.dim() >= 2:
                p.normal_(0.0, std, generator=gen)
            elif name.endswith("bias"):
                p.zero_()


def _local(p):
    """A DTensor's shard on this rank (tensor parallel), else the parameter itself."""
    return p.to_local() if hasattr(p, "to_local") else p


def _tp_plan_kwargs() -> dict[str, Any]:
    """tp_plan="auto": through DistributedConfig where transformers has it (passing tp_plan
    directly is deprecated there), else the plain keyword (transformers <= 5.17)."""
    try:
        from transformers import DistributedConfig
    except ImportError:
        return {"tp_plan": "auto"}
    return {"distributed_config": DistributedConfig(tp_plan="auto")}


def _bnb_config(quantization: str, dtype):
    from transformers import BitsAndBytesConfig

    if quantization == "bnb-int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=dtype)


def _precision_info(model, precision) -> PrecisionInfo:
    counts: Counter = Counter()
    for p in model.parameters():
        counts[str(p.dtype).replace("torch.", "")] += p.numel()
    total = sum(counts.values()) or 1
    shares = {k: round(v / total, 6) for k, v in counts.most_common()}
    weight = _BNB[precision.quantization][0] if precision.quantization else next(iter(shares), None)
    method = _BNB[precision.quantization][1] if precision.quantization else None
    return PrecisionInfo(weight_dtype=weight, activation_dtype=precision.dtype,
                         compute_dtype=precision.dtype, quantization=method, param_dtypes=shares)


def _max_memory(value):
    """YAML keys are strings; transformers wants GPU keys as ints ("0" -> 0, "cpu" stays)."""
    if value is None:
        return None
    return {int(k) if str(k).isdigit() else k: v for k, v in _plain(value).items()}


def _plain(value):
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


BACKEND = PyTorchBackend
