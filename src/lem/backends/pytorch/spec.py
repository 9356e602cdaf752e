"""backend=pytorch: transformers `from_pretrained` + `generate` (conf/backend/pytorch.yaml)."""

from lem.backends.pytorch import validate
from lem.backends.pytorch.config import PyTorchConfig
from lem.backends.spec import BackendSpec


def _make(backend_cfg, run=None):
    """backend.parallel=data|tensor: worker processes hold the model (lem.backends.pytorch.parallel)."""
    if backend_cfg.get("parallel"):
        from lem.backends.pytorch.parallel import ParallelBackend

        return ParallelBackend(backend_cfg, run)
    from lem.backends.pytorch.backend import PyTorchBackend

    return PyTorchBackend(backend_cfg, run)


SPEC = BackendSpec(
    name="pytorch",
    schema=PyTorchConfig,
    backend="lem.backends.pytorch.backend:PyTorchBackend",
    make=_make,
    batching=("static", "sorted"),
    quantizations=(None, "bnb-int8", "bnb-int4"),  # bitsandbytes while loading
    validate=validate.problems,
    validate_precision=validate.precision_problems,
    unsupported_precision=validate.unsupported_precision,
    packages=("bitsandbytes", "flash_attn"),
    engines=(("pytorch", "torch", "torch"), ("transformers", "transformers", "transformers")),
    version_keys=("torch", "transformers"),
    provenance=("torch", "transformers", "tokenizers", "accelerate", "bitsandbytes", "flash-attn"),
)
