"""Pure functions: roofline context of the decode phase, MBU and MFU against datasheet peaks.

A decode step reads every weight once and, for each sequence of the batch, the KV cache of its whole
context; it produces one token per sequence. Its achieved memory bandwidth over the GPU's peak is the
model bandwidth utilisation (MBU), its achieved FLOP/s over the dense peak the model FLOPs utilisation
(MFU). Both are estimates from the model's shape, not counters: what the kernels really moved or computed
(activations, cache hits, padding, recomputation) is not seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from lem.units import dtype_bytes, normalise_dtype


@dataclass(frozen=True)
class GpuPeak:
    """Datasheet peaks of one GPU model. FLOP/s are dense (without 2:4 sparsity), per dtype."""

    name: str
    match: tuple[str, ...]  # any of these, case-insensitive, as a substring of the NVML device name
    exclude: tuple[str, ...]  # ...and none of these
    bandwidth_bytes_per_s: float
    flops_per_s: dict[str, float] = field(default_factory=dict)  # "bf16" | "fp16" | "fp32" -> FLOP/s
    source: str = ""


# Most specific first: the first entry whose match hits and whose exclude misses is the GPU.
GPU_PEAKS: tuple[GpuPeak, ...] = (
    GpuPeak("H200 NVL", ("H200 NVL",), (), 4.8e12,
            {"bf16": 835.5e12, "fp16": 835.5e12, "fp32": 60e12},
            "NVIDIA H200 datasheet, H200 NVL: 4.8 TB/s HBM3e, 1,671 TFLOPS BF16/FP16 with sparsity "
            "(835.5 dense), 60 TFLOPS FP32"),
    GpuPeak("H200 SXM", ("H200",), ("NVL", "GH200"), 4.8e12,
            {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
            "NVIDIA H200 datasheet, H200 SXM: 4.8 TB/s HBM3e, 989 TFLOPS BF16/FP16 dense "
            "(1,979 with sparsity), 67 TFLOPS FP32"),
    GpuPeak("H100 SXM", ("H100 80GB HBM3", "H100 SXM"), (), 3.35e12,
            {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
            "NVIDIA H100 datasheet, H100 SXM: 3.35 TB/s HBM3, 989 TFLOPS BF16/FP16 dense "
            "(1,979 with sparsity), 67 TFLOPS FP32"),
    GpuPeak("H100 PCIe", ("H100 PCIe",), (), 2.0e12,
            {"bf16": 756e12, "fp16": 756e12, "fp32": 51e12},
            "NVIDIA H100 datasheet, H100 PCIe: 2.0 TB/s HBM2e, 756 TFLOPS BF16/FP16 dense "
            "(1,513 with sparsity), 51 TFLOPS FP32"),
    GpuPeak("A100 SXM4 80GB", ("A100-SXM4-80GB",), (), 2.039e12,
            {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
            "NVIDIA A100 datasheet, A100 80GB SXM: 2,039 GB/s HBM2e, 312 TFLOPS BF16/FP16 dense "
            "(624 with sparsity), 19.5 TFLOPS FP32"),
    GpuPeak("A100 SXM4 40GB", ("A100-SXM4-40GB",), (), 1.555e12,
            {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
            "NVIDIA A100 datasheet, A100 40GB SXM: 1,555 GB/s HBM2, 312 TFLOPS BF16/FP16 dense "
            "(624 with sparsity), 19.5 TFLOPS FP32"),
    GpuPeak("A100 PCIe 80GB", ("A100 80GB PCIe",), (), 1.935e12,
            {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
            "NVIDIA A100 datasheet, A100 80GB PCIe: 1,935 GB/s HBM2e, 312 TFLOPS BF16/FP16 dense "
            "(624 with sparsity), 19.5 TFLOPS FP32"),
    GpuPeak("A100 PCIe 40GB", ("A100-PCIE-40GB",), (), 1.555e12,
            {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
            "NVIDIA A100 datasheet, A100 40GB PCIe: 1,555 GB/s HBM2, 312 TFLOPS BF16/FP16 dense "
            "(624 with sparsity), 19.5 TFLOPS FP32"),
    GpuPeak("L40S", ("L40S",), (), 864e9,
            {"bf16": 362.05e12, "fp16": 362.05e12, "fp32": 91.6e12},
            "NVIDIA L40S datasheet: 864 GB/s GDDR6, 362.05 TFLOPS BF16/FP16 dense (733 with sparsity), "
            "91.6 TFLOPS FP32"),
    GpuPeak("A10G", ("A10G",), (), 600e9, {},
            "AWS/NVIDIA A10G (EC2 G5): 600 GB/s GDDR6; NVIDIA publishes no tensor FLOP/s datasheet for this "
            "AWS-only part (it differs from the A10's), so no FLOP/s peak"),
    GpuPeak("GeForce RTX 4090", ("RTX 4090",), ("Laptop", "4090 D"), 1008e9,
            {"bf16": 165.2e12, "fp16": 165.2e12, "fp32": 82.6e12},
            "NVIDIA Ada Lovelace architecture whitepaper, GeForce RTX 4090: 1,008 GB/s GDDR6X, 165.2 TFLOPS "
            "BF16/FP16 tensor with FP32 accumulate dense (330.4 with sparsity; FP16 with FP16 accumulate 330.3 "
            "dense, not what PyTorch GEMMs use), 82.6 TFLOPS FP32"),
)

def gpu_peak(gpu_name: Optional[str]) -> Optional[GpuPeak]:
    """The peak table's entry for an NVML device name, e.g. "NVIDIA H200"; None if not in the table."""
    if not gpu_name:
        return None
    name = gpu_name.lower()
    for peak in GPU_PEAKS:
        if any(m.lower() in name for m in peak.match) and not any(x.lower() in name for x in peak.exclude):
            return peak
    return None


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """KV cache bytes of one token of one sequence: a K and a V vector per layer and KV head."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


def decode_bytes_per_step(weight_bytes: float, kv_bytes_per_token: int, batch_size: int,
                          context_len: float) -> int:
    """HBM bytes one decode step reads: the weights it uses, once (shared by the batch), plus the KV cache of
    every sequence's context (`context_len` tokens each, a mean is fine). Activations and the one new KV
    entry written per sequence are negligible and left out."""
    return int(round(weight_bytes + kv_bytes_per_token * batch_size * context_len))


def untied_embedding_elements(arch: dict) -> int:
    """Elements of the input embedding table when it is its own tensor (`tie_word_embeddings`
    false): a decode step reads only its tokens' rows of it, not the table. A tied table is the LM
    head's weight too, read whole every step, so it stays counted; unknown (no key) counts it, as
    before."""
    if arch.get("tie_word_embeddings") is not False:
        return 0
    try:
        return int(arch["vocab_size"]) * int(arch["hidden_size"])
    except (KeyError, TypeError, ValueError):
        return 0


def flops_per_token(num_params: int, num_layers: int, hidden_size: int, context_len: float) -> float:
    """Approximate FLOPs to decode one token at `context_len` tokens of context.

    2 * num_params: one multiply-add per matmul weight (the usual 2N rule; the caller leaves an
    untied input embedding out, a lookup, not a matmul), plus
    2 * 2 * num_layers * context_len * hidden_size: the attention score (q.K) and value (p.V) matmuls over
    the context, `hidden_size` being the width of the query heads (num_attention_heads * head_dim).
    Softmax, norms, activations and rotary embeddings are left out.
    """
    return 2.0 * num_params + 4.0 * num_layers * context_len * hidden_size


@dataclass
class Roofline:
    mbu: Optional[float] = None  # model bandwidth utilisation, 0..1
    mfu: Optional[float] = None  # model FLOPs utilisation, 0..1
    achieved_bandwidth_bytes_per_s: Optional[float] = None  # all GPUs together
    achieved_flops_per_s: Optional[float] = None  # all GPUs together
    peak_bandwidth_bytes_per_s: Optional[float] = None  # one GPU
    peak_flops_per_s: Optional[float] = None  # one GPU, dense, of the run's dtype
    peak_source: Optional[str] = None
    method: str = ""
    reason: Optional[str] = None  # why any of the above is None
    bytes_per_step: Optional[int] = None
    flops_per_step: Optional[float] = None
    num_gpus: int = 1


METHOD = ("decode step bytes = weight bytes (less an untied input embedding table, of which a step "
          "reads only its tokens' rows; at the model's mean bytes per parameter) + KV cache bytes per "
          "token (2 * layers * kv_heads * head_dim * dtype bytes) * batch_size * mean context length; "
          "MBU = step bytes / step time / (peak bandwidth * num_gpus). Step FLOPs = batch_size * "
          "(2 * matmul parameters + 4 * layers * mean context length * query width); MFU = step FLOPs "
          "/ step time / (dense peak FLOP/s of the dtype * num_gpus). Step time is the measured mean "
          "inter-token latency of a decode step (one token per sequence). Peaks are datasheet "
          "figures; num_gpus assumes the GPUs work concurrently (tensor parallel), not pipelined.")


def _shape(arch: dict) -> tuple[int, int, int, int]:
    """(layers, kv_heads, head_dim, query width) from a Hugging Face style config dict."""
    layers = int(arch["num_hidden_layers"])
    heads = int(arch["num_attention_heads"])
    kv_heads = int(arch.get("num_key_value_heads") or heads)
    head_dim = int(arch.get("head_dim") or arch["hidden_size"] // heads)
    return layers, kv_heads, head_dim, heads * head_dim


def _peak_figures(gpu_name: Optional[str], dtype_key: Optional[str], dtype: str,
                  ) -> tuple[Optional[GpuPeak], Optional[float], list[str]]:
    """The GPU's peak entry, its dense FLOP/s for the dtype, and the reasons for what is missing."""
    if gpu_name is None:
        return None, None, ["no GPU (CPU run): no peak bandwidth or FLOP/s, MBU and MFU not computed"]
    peak = gpu_peak(gpu_name)
    if peak is None:
        return None, None, [f"GPU {gpu_name!r} is not in the peak table (lem.analysis.roofline.GPU_PEAKS): "
                            "MBU and MFU not computed"]
    flops = peak.flops_per_s.get(dtype_key) if dtype_key else None
    if flops is None:
        return peak, None, [f"no dense peak FLOP/s for dtype {dtype!r} on {peak.name}: MFU not computed"]
    return peak, flops, []


def decode_roofline(gpu_name: Optional[str], dtype: str, param_bytes: int, num_params: Optional[int],
                    arch: dict, batch_size: int, mean_context_len: float, decode_step_s: Optional[float],
                    num_gpus: int = 1, kv_dtype_bytes: Optional[int] = None) -> Roofline:
    """MBU and MFU of the decode phase from the measured mean decode step time.

    `dtype` is the compute dtype (names the FLOP/s peak and, unless `kv_dtype_bytes` is given, the KV cache
    element size); `param_bytes` the bytes of the weights as stored (quantised weights count as stored).
    """
    out = Roofline(method=METHOD, num_gpus=num_gpus)
    if not decode_step_s or decode_step_s <= 0 or batch_size < 1 or num_gpus < 1:
        out.reason = f"no decode step time (decode_step_s={decode_step_s!r}, batch_size={batch_size})"
        return out
    try:
        layers, kv_heads, head_dim, q_width = _shape(arch)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        out.reason = (f"model shape incomplete ({type(e).__name__}: {e}): needs num_hidden_layers, "
                      "num_attention_heads, hidden_size")
        return out
    dtype_key = normalise_dtype(dtype)
    elem = kv_dtype_bytes or dtype_bytes(dtype)
    if elem is None:
        out.reason = f"KV cache element size unknown for dtype {dtype!r}: pass kv_dtype_bytes"
        return out
    kv = kv_bytes_per_token(layers, kv_heads, head_dim, elem)
    lookup = untied_embedding_elements(arch) if num_params and num_params > 0 else 0
    weight_bytes = param_bytes - lookup * param_bytes / num_params if lookup else param_bytes
    out.bytes_per_step = decode_bytes_per_step(weight_bytes, kv, batch_size, mean_context_len)
    out.achieved_bandwidth_bytes_per_s = out.bytes_per_step / decode_step_s
    reasons = []
    if num_params is None:
        reasons.append("number of parameters unknown: no FLOPs, MFU not computed")
    else:
        out.flops_per_step = batch_size * flops_per_token(num_params - lookup, layers, q_width,
                                                          mean_context_len)
        out.achieved_flops_per_s = out.flops_per_step / decode_step_s
    peak, peak_flops, peak_reasons = _peak_figures(gpu_name, dtype_key, dtype)
    reasons += peak_reasons
    if peak is not None:
        out.peak_bandwidth_bytes_per_s, out.peak_flops_per_s = peak.bandwidth_bytes_per_s, peak_flops
        out.peak_source = peak.source
        out.mbu = out.achieved_bandwidth_bytes_per_s / (peak.bandwidth_bytes_per_s * num_gpus)
    if peak_flops is not None and out.achieved_flops_per_s is not None:
        out.mfu = out.achieved_flops_per_s / (peak_flops * num_gpus)
    out.reason = "; ".join(reasons + _withhold_above_peak(out)) or None
    return out


def _withhold_above_peak(out: Roofline) -> list[str]:
    """Above the datasheet peak is not a measurement: the step timed did not carry the assumed
    batch (an engine that staggers a large batch's prefill decodes part of it per step, e.g. vLLM at
    batch 512 on an H100 gave MBU 1.22). The figures are withheld, saying so."""
    over = {k: v for k, v in (("MBU", out.mbu), ("MFU", out.mfu)) if v is not None and v > 1}
    if not over:
        return []
    out.mbu = out.mfu = out.achieved_bandwidth_bytes_per_s = out.achieved_flops_per_s = None
    said = ", ".join(f"{k} {v:.2f}" for k, v in over.items())
    return [f"withheld: {said} > 1 is above the GPU's peak, so the timed decode steps did not each "
            "carry batch_size sequences (the engine staggered the batch, e.g. its prefill in chunks); "
            "the batch-size roofline does not apply to this run"]
