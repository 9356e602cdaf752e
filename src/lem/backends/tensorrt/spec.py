"""backend=tensorrt: TensorRT-LLM's LLM API, PyTorch or engine workflow (conf/backend/tensorrt.yaml)."""

from lem.backends.spec import BackendSpec
from lem.backends.tensorrt import validate
from lem.backends.tensorrt.config import TensorRTConfig


def _preflight(cfg, host) -> list:
    from lem.backends.tensorrt.preflight import check_tensorrt_arch, check_tensorrt_import

    return [check_tensorrt_arch("tensorrt", list(cfg.gpus), host), check_tensorrt_import("tensorrt")]


SPEC = BackendSpec(
    name="tensorrt",
    schema=TensorRTConfig,
    backend="lem.backends.tensorrt.backend:TensorRTBackend",
    batching=("static", "sorted", "continuous"),
    quantizations=validate.TENSORRT_QUANTIZATIONS,  # while the engine is built (engine workflow)
    validate=validate.tensorrt_problems,
    validate_precision=validate.tensorrt_precision_problems,
    unsupported_precision=validate.unsupported_precision,
    owned_keys={},  # its own keys live in backend.llm_args, checked by validate.tensorrt_problems
    packages=("tensorrt_llm",),
    engines=(("tensorrt", "tensorrt_llm", "tensorrt-llm"),),
    version_keys=("tensorrt-llm",),
    provenance=("tensorrt-llm",),
    worker_processes=True,  # MPI workers exchange data through /dev/shm
    preflight=_preflight,
)
