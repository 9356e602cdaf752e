"""PyTorch backend: transformers `from_pretrained` + `generate`, every YAML option passed through.

Per-token timestamps cost no host sync: `generate` calls its stopping criteria once per decoding
step, after the step's token is appended, and lem's criterion records a CUDA event there (on the
CPU, where work is synchronous, the host clock). The events are resolved to the runner's clock
after the batch, so a timestamp marks when the token existed on the device. (A streamer, lem's
earlier clock, copies every step's tokens to the host: one more device sync per step.)

`backend.torch_compile=true` compiles the decode step the way transformers does it for a static
cache (`compile_config`: CUDA graphs under mode reduce-overhead); `false` runs it eagerly even with
a static cache (transformers would otherwise compile it on its own, unasked).

`backend.decode_loop=lem` replaces `generate`'s loop with lem's greedy one (decode.py) over the
same model, cache and compiled call; the step clock is the same (`StepClock.mark`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Optional

from lem.backends.base import NO_RUN, BatchRecord, GpuMemory, PrecisionInfo, RunContext
from lem.backends.pytorch.decode import decode_greedy
from lem.config.plain import plain
from lem.models.source import ModelSource
from lem.workload.requests import Request

log = logging.getLogger(__name__)

_BNB = {"bnb-int8": ("int8", "LLM.int8 (bitsandbytes)"), "bnb-int4": ("int4-nf4", "NF4 (bitsandbytes)")}


class PyTorchBackend:
    def __init__(self, backend_cfg, run: Optional[RunContext] = None):
        self.cfg = backend_cfg
        run = run or NO_RUN
        # a random-weight model quantized by bitsandbytes is written here once as a checkpoint
        self.cache_dir = run.cache_dir
        # one rank of a torch.distributed group (lem.backends.pytorch.parallel): load() places
        # this rank's shard through transformers' tp_plan="auto"
        self.tensor_parallel = run.tensor_parallel
        self.gpus: list[int] = []
        self.model = None
        self.pad_id = 0
        self.eos_ids: set[int] = set()

    # -- loading ---------------------------------------------------------------------------
    def load(self, source: ModelSource, precision, gpus: list[int]) -> PrecisionInfo:
        import os

        import torch

        self.gpus = list(gpus)
        rank = int(os.environ.get("LOCAL_RANK", 0)) if self.tensor_parallel else 0
        self.device = torch.device(f"cuda:{rank}" if gpus else "cpu")
        if gpus:
            torch.cuda.set_device(self.device)
        dtype = getattr(torch, precision.dtype)
        if source.path is None and precision.quantization:
            source = self._random_checkpoint(source, precision)
        if source.path is not None:
            model = self._from_pretrained(source, precision, dtype)
        else:
            model = self._from_config(source, dtype)
        model.eval()
        self.model = model
        self._read_special_ids(model)
        return _precision_info(model, precision)

    def from_pretrained_kwargs(self, source: ModelSource, precision, dtype) -> dict[str, Any]:
        """Everything from the backend YAML and the precision group that reaches from_pretrained."""
        c = self.cfg
        kwargs: dict[str, Any] = {
            "dtype": dtype,
            "low_cpu_mem_usage": c.low_cpu_mem_usage,
            "trust_remote_code": c.trust_remote_code,
            "device_map": plain(c.device_map) if c.device_map is not None else self.device,
        }
        optional = {"attn_implementation": c.attn_implementation, "revision": source.revision,
                    "max_memory": _max_memory(c.max_memory)}
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        if self.tensor_parallel:  # every rank places its own shard
            del kwargs["device_map"]
            kwargs.update(_tp_plan_kwargs())
        if precision.quantization:
            kwargs["quantization_config"] = _bnb_config(precision.quantization, dtype)
        return kwargs

    def _random_checkpoint(self, source: ModelSource, precision) -> ModelSource:
        """bitsandbytes quantizes weights as from_pretrained loads them, so a random-weight model
        is written once as a checkpoint (same init distribution, seeded; cached by architecture,
        seed and dtype under cache_dir) and loaded from there."""
        from dataclasses import replace

        from lem.models.random_checkpoint import ensure_random_checkpoint

        path, _ = ensure_random_checkpoint(self.cache_dir, source.config, source.seed,
                                           precision.dtype, device=str(self.device))
        return replace(source, path=str(path))

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
        kwargs.update(self._compile_kwargs())
        return kwargs

    def _compile_kwargs(self) -> dict[str, Any]:
        """transformers compiles the decode step itself once the cache is static; lem makes that
        an explicit choice, so a run says whether it was compiled."""
        if not self.cfg.torch_compile:
            return {"disable_compile": True}
        from transformers import CompileConfig

        # dynamic=False: one specialised graph per batch shape, no dynamic-shape kernels
        config = CompileConfig(mode=self.cfg.compile_mode, dynamic=False)
        if self.device.type == "cpu":  # transformers compiles only on accelerators unless told
            config._compile_all_devices = True
        return {"compile_config": config}

    def _compiled_call(self):
        """For lem's loop: the compiled call generate would use, or None (eager) where the option
        is off or the quantizer cannot be compiled (generate skips compiling there too)."""
        quantizer = getattr(self.model, "hf_quantizer", None)
        if not self.cfg.torch_compile or (quantizer is not None and not quantizer.is_compileable):
            return None
        return self.model.get_compiled_call(self._compile_kwargs()["compile_config"])

    def generate(self, batch: list[Request], force_output_len: bool) -> BatchRecord:
        import torch
        from transformers import StoppingCriteriaList

        input_ids, attention_mask = self._pad_left(batch)
        targets = [r.output_len for r in batch]
        clock = StepClock(self.device, input_ids.shape[1], targets)
        with torch.inference_mode():
            if self.cfg.decode_loop == "lem":
                out = decode_greedy(self.model, input_ids, attention_mask, targets,
                                    force_output_len, self.eos_ids, self.pad_id, clock.mark,
                                    self._compiled_call())
            else:
                out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                          stopping_criteria=StoppingCriteriaList([clock]),
                                          **self.generate_kwargs(targets, force_output_len))
                out = out[:, input_ids.shape[1]:]
        generated = out.tolist()  # waits for the device
        times_s = clock.times_s()
        counts = self._count_outputs(generated, targets, force_output_len, len(times_s))
        return BatchRecord(clock.start_s, counts, [times_s[:n] for n in counts],
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

    def engine_info(self) -> dict[str, Any]:
        """How generate ran: the libraries, the cache, and whether the decode step was compiled,
        read off the model (transformers skips compiling where it cannot, e.g. some quantizers).
        Read again after the cycles, so `compiled` and the graph count cover the whole run."""
        import torch
        import transformers

        c = self.cfg
        compiled = getattr(self.model, "_compiled_call", None) is not None if self.model else None
        info = {"library": "transformers", "transformers": transformers.__version__,
                "torch": torch.__version__, "cache_implementation": c.cache_implementation or "dynamic",
                "torch_compile": bool(c.torch_compile),
                "compile_mode": c.compile_mode if c.torch_compile else None,
                "compiled": compiled if c.torch_compile else False,
                "decode_loop": c.decode_loop,
                "token_clock": "cuda_events" if self.device.type == "cuda" else "host_clock"}
        info.update(_dynamo_stats() if c.torch_compile else {})
        return info

    # -- memory and teardown ---------------------------------------------------------------
    def _devices(self) -> list[tuple[int, int]]:
        """(torch index, physical index) of the GPUs this process drives: a tensor-parallel rank
        drives only its own (touching the others would create CUDA contexts there)."""
        if self.tensor_parallel and self.gpus:
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


class StepClock:
    """A stopping criterion that marks each decoding step without waiting for it, and stops each
    row at its own target length.

    On a GPU each call records a CUDA event on the current stream (asynchronous); `times_s()`
    resolves them after the batch against one anchor event whose host time was read once, at the
    start, on an idle device. On the CPU the host clock is read directly (work is synchronous).
    Times are time.perf_counter() seconds, the runner's clock."""

    def __init__(self, device, prompt_len: int, targets: list[int]):
        import torch

        self._cuda = device.type == "cuda"
        self.prompt_len = prompt_len
        self.targets = torch.tensor(targets, device=device)
        self._marks: list = []
        self._anchor = None
        if self._cuda:
            torch.cuda.synchronize(device)  # idle device: the anchor runs as soon as recorded
            self._anchor = torch.cuda.Event(enable_timing=True)
            self._anchor.record()
            self._anchor.synchronize()
        self.start_s = time.perf_counter()

    def __call__(self, input_ids, scores, **kwargs):
        """As generate's stopping criterion: mark the step, say which rows reached their target."""
        self.mark()
        return (input_ids.shape[1] - self.prompt_len) >= self.targets

    def mark(self) -> None:
        if self._cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append(event)
        else:
            self._marks.append(time.perf_counter())

    def times_s(self) -> list[float]:
        if not self._cuda:
            return list(self._marks)
        if self._marks:
            self._marks[-1].synchronize()
        return [self.start_s + self._anchor.elapsed_time(m) / 1e3 for m in self._marks]


def _dynamo_stats() -> dict[str, Any]:
    """Graphs torch.compile built in this process and the seconds dynamo spent compiling them
    (its own metric, summed over every compile so far; None where this torch lacks it)."""
    from torch._dynamo import utils

    graphs = utils.counters["stats"].get("unique_graphs")
    times = getattr(utils, "compilation_time_metrics", {}).get("_compile.compile_inner")
    return {"compiled_graphs": graphs, "compile_s": round(sum(times), 3) if times else None}


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
    return {int(k) if str(k).isdigit() else k: v for k, v in plain(value).items()}
