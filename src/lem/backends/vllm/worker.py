"""Code that runs inside vLLM's worker processes. vLLM imports this module there, before it loads
the model, because lem names `LemWorkerExtension` as `worker_extension_cls`; its methods are then
reached by name through `collective_rpc`, so nothing lem holds is pickled across.

Random-weight models load with vLLM's dummy loader, which draws floating-point tensors in
[-1e-3, 1e-3] but leaves integer ones as `torch.empty` (whatever the allocator hands out, often
zeros). An int8 model measured with zero weights switches fewer bits per multiply than a real one,
so its joules would read low. The loader below draws them too, before vLLM repacks the weights for
its kernels (the CPU build packs int8 weights into oneDNN handles, out of reach afterwards), and
records what the model holds as loaded.
"""

from __future__ import annotations

from typing import Any

INT8_SCALE = 1e-3 / 127  # weight = int8 x scale spans [-1e-3, 1e-3], as the dummy floats do
_LOADED: dict[str, Any] = {}  # this worker's model as loaded: filled by LemDummyLoader


def _fill_int8(model, seed: int) -> dict[str, int]:
    """Uniform int8 in [-127, 127] for integer weights; INT8_SCALE for their per-channel scales."""
    import torch

    filled = {"int8_tensors": 0, "int8_elements": 0, "scales": 0}
    gen = None
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dtype == torch.int8:
                gen = gen or torch.Generator(device=p.device).manual_seed(seed)
                p.random_(-127, 128, generator=gen)
                filled["int8_tensors"] += 1
                filled["int8_elements"] += p.numel()
            elif name.endswith("weight_scale"):
                p.fill_(INT8_SCALE)
                filled["scales"] += 1
    return filled


def _held(model) -> dict[str, Any]:
    """Elements and bytes per dtype of this worker's parameters (its tensor-parallel shard), and
    the linear kernels vLLM chose for quantized layers (e.g. CutlassInt8ScaledMMLinearKernel)."""
    elements: dict[str, int] = {}
    nbytes = 0
    for p in model.parameters():
        key = str(p.dtype).removeprefix("torch.")
        elements[key] = elements.get(key, 0) + p.numel()
        nbytes += p.numel() * p.element_size()
    kernels = {type(k).__name__ for m in model.modules()
               if (k := getattr(getattr(m, "scheme", None), "kernel", None)) is not None}
    return {"elements": elements, "bytes": nbytes, "kernels": sorted(kernels)}


def _register_loader() -> None:
    from vllm.model_executor.model_loader import register_model_loader
    from vllm.model_executor.model_loader.dummy_loader import DummyModelLoader

    class LemDummyLoader(DummyModelLoader):
        """vLLM's dummy loader, plus random int8 weights and a record of what was loaded."""

        def load_weights(self, model, model_config) -> None:
            super().load_weights(model, model_config)
            _LOADED["fill"] = _fill_int8(model, getattr(model_config, "seed", None) or 0)
            _LOADED["held"] = _held(model)

    register_model_loader("dummy")(LemDummyLoader)


_register_loader()


class LemWorkerExtension:
    """Mixed into vLLM's Worker class by vLLM (`self` is the worker)."""

    def lem_loaded(self) -> dict[str, Any]:
        """What this worker's model held when loaded ({} when weights came from a checkpoint:
        then `held` is read now, after vLLM's own processing)."""
        if _LOADED:
            return dict(_LOADED)
        return {"held": _held(self.model_runner.get_model())}
