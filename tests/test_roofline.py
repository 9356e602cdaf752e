"""Roofline of decode: bytes and FLOPs per step from the model's shape, MBU and MFU against datasheet peaks."""

from __future__ import annotations

import pytest

from lem.analysis.roofline import (
    GPU_PEAKS,
    decode_bytes_per_step,
    decode_roofline,
    flops_per_token,
    gpu_peak,
    kv_bytes_per_token,
    normalise_dtype,
)

# Llama-3-8B (config.json of meta-llama/Meta-Llama-3-8B), bf16
LLAMA3_8B = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 4096}
PARAMS = 8.03e9
PARAM_BYTES = 16_060_000_000
KV_PER_TOKEN = 131_072  # 2 (K, V) * 32 layers * 8 kv heads * 128 head_dim * 2 bytes
STEP_S = 3.74e-3
H200_BW, H200_BF16 = 4.8e12, 989e12


def test_kv_bytes_per_token_llama3_8b():
    assert kv_bytes_per_token(32, 8, 128, 2) == KV_PER_TOKEN
    assert kv_bytes_per_token(32, 8, 128, 4) == 2 * KV_PER_TOKEN


def test_decode_bytes_per_step_reads_weights_once_and_every_sequences_kv():
    assert decode_bytes_per_step(PARAM_BYTES, KV_PER_TOKEN, 1, 0) == PARAM_BYTES
    assert decode_bytes_per_step(PARAM_BYTES, KV_PER_TOKEN, 4, 1000) == PARAM_BYTES + 4 * 1000 * KV_PER_TOKEN
    assert decode_bytes_per_step(100, 10, 2, 2.5) == 150  # a mean context length may be fractional


def test_flops_per_token():
    assert flops_per_token(PARAMS, 32, 4096, 0) == pytest.approx(2 * PARAMS)
    assert flops_per_token(PARAMS, 32, 4096, 1000) == pytest.approx(2 * PARAMS + 4 * 32 * 1000 * 4096)


def test_llama3_8b_bf16_bs1_on_h200():
    r = decode_roofline("NVIDIA H200", "bfloat16", PARAM_BYTES, PARAMS, LLAMA3_8B, batch_size=1,
                        mean_context_len=512, decode_step_s=STEP_S)
    step_bytes = PARAM_BYTES + 512 * KV_PER_TOKEN  # 16,127,108,864
    assert r.bytes_per_step == step_bytes
    assert r.mbu == pytest.approx(step_bytes / STEP_S / H200_BW, rel=1e-9)
    assert r.mbu == pytest.approx(0.8983, abs=1e-4)
    assert r.mbu > PARAM_BYTES / STEP_S / H200_BW  # ~0.8946 from the weights alone
    step_flops = 2 * PARAMS + 4 * 32 * 512 * 4096
    assert r.flops_per_step == pytest.approx(step_flops)
    assert r.mfu == pytest.approx(step_flops / STEP_S / H200_BF16, rel=1e-9)
    assert r.mfu == pytest.approx(0.004414, abs=1e-5)
    assert r.achieved_bandwidth_bytes_per_s == pytest.approx(step_bytes / STEP_S)
    assert (r.peak_bandwidth_bytes_per_s, r.peak_flops_per_s) == (H200_BW, H200_BF16)
    assert "H200" in r.peak_source and "4.8 TB/s" in r.peak_source
    assert r.reason is None
    assert "MBU" in r.method and "MFU" in r.method


def test_an_untied_input_embedding_is_a_lookup_not_a_read_of_the_table():
    """Llama-3-8B's 128256 x 4096 input embedding (1.05 GB in bf16) is its own tensor: a step reads
    its tokens' rows, not the table (the LM head, 1.05 GB more, is read whole). Tied, it is one
    tensor, the LM head's, and stays counted."""
    untied = {**LLAMA3_8B, "vocab_size": 128256, "tie_word_embeddings": False}
    table = 128256 * 4096
    r = decode_roofline("NVIDIA H100 80GB HBM3", "bfloat16", 2 * 8_030_261_248, 8_030_261_248, untied,
                        batch_size=1, mean_context_len=320, decode_step_s=8.6e-3)
    assert r.bytes_per_step == 2 * (8_030_261_248 - table) + 320 * KV_PER_TOKEN
    assert r.flops_per_step == pytest.approx(2 * (8_030_261_248 - table) + 4 * 32 * 320 * 4096)
    assert r.mbu == pytest.approx(0.5225, abs=1e-4)  # 0.5589 with the table counted
    tied = decode_roofline("NVIDIA H100 80GB HBM3", "bfloat16", 2 * 8_030_261_248, 8_030_261_248,
                           {**untied, "tie_word_embeddings": True}, 1, 320, 8.6e-3)
    assert tied.bytes_per_step == 2 * 8_030_261_248 + 320 * KV_PER_TOKEN


def test_batch_reads_weights_once_but_kv_and_flops_per_sequence():
    r = decode_roofline("NVIDIA H200", "bf16", PARAM_BYTES, PARAMS, LLAMA3_8B, batch_size=8,
                        mean_context_len=1024, decode_step_s=5e-3)
    assert r.bytes_per_step == PARAM_BYTES + 8 * 1024 * KV_PER_TOKEN
    assert r.flops_per_step == pytest.approx(8 * (2 * PARAMS + 4 * 32 * 1024 * 4096))
    assert r.mbu == pytest.approx((PARAM_BYTES + 8 * 1024 * KV_PER_TOKEN) / 5e-3 / H200_BW)


def test_above_the_peak_is_withheld_saying_why():
    """vLLM, batch 512 on an H100 (2026-12-08): the median ITL timed steps that did not carry all 512
    sequences (their prefill was staggered), and the batch-size roofline gave MBU 1.22."""
    r = decode_roofline("NVIDIA H100 80GB HBM3", "bfloat16", PARAM_BYTES, PARAMS, LLAMA3_8B, batch_size=512,
                        mean_context_len=320, decode_step_s=9.175e-3)
    assert r.mbu is None and r.mfu is None and r.achieved_bandwidth_bytes_per_s is None
    assert r.bytes_per_step == PARAM_BYTES + 512 * 320 * KV_PER_TOKEN  # the model's figure stays
    assert "withheld: MBU 1.22 > 1" in r.reason and "did not each carry batch_size sequences" in r.reason
    ok = decode_roofline("NVIDIA H100 80GB HBM3", "bfloat16", PARAM_BYTES, PARAMS, LLAMA3_8B, batch_size=512,
                         mean_context_len=320, decode_step_s=13.4e-3)  # a step that could carry them all
    assert 0.8 < ok.mbu < 1 and ok.reason is None


def test_explicit_head_dim_sets_kv_size_and_query_width():
    # a Gemma-like shape where heads * head_dim (16 * 256 = 4096) != hidden_size (3072)
    arch = {"num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16,
            "hidden_size": 3072, "head_dim": 256}
    r = decode_roofline("NVIDIA H100 80GB HBM3", "torch.float16", 17_000_000_000, 8.5e9, arch, 1, 100, 0.01)
    assert r.bytes_per_step == 17_000_000_000 + 100 * (2 * 28 * 16 * 256 * 2)
    assert r.flops_per_step == pytest.approx(2 * 8.5e9 + 4 * 28 * 100 * 4096)
    assert r.peak_bandwidth_bytes_per_s == 3.35e12


def test_two_gpus_halve_utilisation():
    one = decode_roofline("NVIDIA H200", "bfloat16", PARAM_BYTES, PARAMS, LLAMA3_8B, 1, 512, STEP_S)
    two = decode_roofline("NVIDIA H200", "bfloat16", PARAM_BYTES, PARAMS, LLAMA3_8B, 1, 512, STEP_S, num_gpus=2)
    assert two.mbu == pytest.approx(one.mbu / 2)
    assert two.mfu == pytest.approx(one.mfu / 2)
    assert two.num_gpus == 2


def test_unknown_gpu_gives_no_utilisation_but_achieved_figures():
    r = decode_roofline("Tesla K80", "bfloat16", PARAM_BYTES, PARAMS, LLAMA3_8B, 1, 512, STEP_S)
    assert r.mbu is None and r.mfu is None and r.peak_bandwidth_bytes_per_s is None
    assert "Tesla K80" in r.reason and "not in the peak table" in r.reason
    assert r.achieved_bandwidth_bytes_per_s == pytest.approx((PARAM_BYTES + 512 * KV_PER_TOKEN) / STEP_S)


def test_cpu_gives_no_utilisation():
    r = decode_roofline(None, "float32", 4 * 124_000_000, 124_000_000,
                        {"num_hidden_layers": 12, "num_attention_heads": 12, "hidden_size": 768}, 1, 64, 0.02)
    assert r.mbu is None and r.mfu is None
    assert "CPU" in r.reason
    assert r.bytes_per_step == 4 * 124_000_000 + 64 * (2 * 12 * 12 * 64 * 4)  # no kv heads given: MHA


def test_gpu_without_flops_peak_gives_mbu_only():
    r = decode_roofline("NVIDIA A10G", "float16", PARAM_BYTES, PARAMS, LLAMA3_8B, 1, 512, 0.03)
    assert r.mbu == pytest.approx((PARAM_BYTES + 512 * KV_PER_TOKEN) / 0.03 / 600e9)
    assert r.mfu is None and r.peak_flops_per_s is None
    assert "no dense peak FLOP/s" in r.reason


def test_quantised_dtype_needs_kv_element_size_and_has_no_flops_peak():
    r = decode_roofline("NVIDIA H200", "int8", PARAM_BYTES // 2, PARAMS, LLAMA3_8B, 1, 512, STEP_S)
    assert r.mbu is None and r.bytes_per_step is None
    assert "kv_dtype_bytes" in r.reason
    r = decode_roofline("NVIDIA H200", "int8", PARAM_BYTES // 2, PARAMS, LLAMA3_8B, 1, 512, STEP_S,
                        kv_dtype_bytes=2)
    assert r.bytes_per_step == PARAM_BYTES // 2 + 512 * KV_PER_TOKEN
    assert r.mbu is not None and r.mfu is None
    assert "int8" in r.reason


def test_missing_inputs_give_reasons():
    r = decode_roofline("NVIDIA H200", "bf16", PARAM_BYTES, PARAMS, LLAMA3_8B, 1, 512, None)
    assert r.mbu is None and "decode step time" in r.reason
    r = decode_roofline("NVIDIA H200", "bf16", PARAM_BYTES, PARAMS, {"hidden_size": 4096}, 1, 512, STEP_S)
    assert r.mbu is None and "num_hidden_layers" in r.reason
    r = decode_roofline("NVIDIA H200", "bf16", PARAM_BYTES, None, LLAMA3_8B, 1, 512, STEP_S)
    assert r.mbu is not None and r.mfu is None and "parameters unknown" in r.reason


@pytest.mark.parametrize("nvml_name, entry, bandwidth", [
    ("NVIDIA H200", "H200 SXM", 4.8e12),
    ("NVIDIA H200 NVL", "H200 NVL", 4.8e12),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 3.35e12),
    ("NVIDIA H100 PCIe", "H100 PCIe", 2.0e12),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM4 80GB", 2.039e12),
    ("NVIDIA A100-SXM4-40GB", "A100 SXM4 40GB", 1.555e12),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB", 1.935e12),
    ("NVIDIA L40S", "L40S", 864e9),
    ("NVIDIA A10G", "A10G", 600e9),
    ("NVIDIA GeForce RTX 4090", "GeForce RTX 4090", 1008e9),
])
def test_gpu_names_match_their_entry(nvml_name, entry, bandwidth):
    peak = gpu_peak(nvml_name)
    assert peak is not None and peak.name == entry
    assert peak.bandwidth_bytes_per_s == bandwidth


@pytest.mark.parametrize("nvml_name", ["NVIDIA GH200 480GB", "NVIDIA H100 NVL", "NVIDIA L40", "NVIDIA A10",
                                       "NVIDIA GeForce RTX 4090 Laptop GPU", "NVIDIA GeForce RTX 4090 D",
                                       "Tesla V100-SXM2-16GB", "", None])
def test_other_gpus_are_not_guessed(nvml_name):
    assert gpu_peak(nvml_name) is None


def test_peak_table_is_consistent():
    for peak in GPU_PEAKS:
        assert peak.source, peak.name
        assert 1e11 < peak.bandwidth_bytes_per_s < 1e13, peak.name
        if peak.flops_per_s:
            assert peak.flops_per_s["bf16"] == peak.flops_per_s["fp16"], peak.name
            assert peak.flops_per_s["fp32"] < peak.flops_per_s["bf16"], peak.name
            assert "dense" in peak.source, peak.name


def test_normalise_dtype():
    assert normalise_dtype("torch.bfloat16") == normalise_dtype("bf16") == "bf16"
    assert normalise_dtype("float16") == normalise_dtype("half") == "fp16"
    assert normalise_dtype("float32") == "fp32"
    assert normalise_dtype("int8") is None and normalise_dtype(None) is None


def test_continuous_batching_gets_an_estimate_from_the_engines_running_count():
    """Under continuous batching the batch is the time-weighted mean of vLLM's running requests
    (busy time only) and the step time follows from the tokens made while busy; labelled an estimate."""
    from omegaconf import OmegaConf

    from lem.analysis.analyse import _roofline
    from lem.result.schema import Result

    r = Result()
    # 2 s with 10 running, 2 s with 30 running, then idle: mean batch 20 over 4 busy seconds
    rows = [(0.0, 10, 0, 0.1, 0), (2.0, 30, 0, 0.3, 0), (4.0, 0, 0, 0.0, 0), (5.0, 0, 0, 0.0, 0)]
    r.cycles = [{"serving": {"engine_state": {"rows": rows}}}]
    r.summary.output_tokens, r.summary.input_tokens, r.summary.num_requests = 8000, 25600, 100
    r.environment = {"gpus": [{"name": "NVIDIA H100 80GB HBM3"}]}
    cfg = OmegaConf.create({"batching": {"strategy": "continuous"}, "precision": {"dtype": "bfloat16"}})
    arch = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "hidden_size": 4096}
    out = _roofline(r, cfg, {"param_bytes": 16e9, "num_params": 8e9, "arch": arch})
    assert out.method.startswith("estimate (continuous batching)") and "Mean running batch: 20.0" in out.method
    step_s = 20 * 4.0 / 8000  # batch x busy time / tokens
    assert out.achieved_bandwidth_bytes_per_s == pytest.approx(out.bytes_per_step / step_s)
    assert 0 < out.mbu < 1 and 0 < out.mfu < 1
    r.cycles = [{"serving": {"engine_state": {"rows": []}}}]
    none = _roofline(r, cfg, {"param_bytes": 16e9, "num_params": 8e9, "arch": arch})
    assert none.mbu is None and "no engine state" in none.reason


def test_a_static_batch_above_the_engines_sequence_limit_is_decoded_at_the_limit():
    """vLLM runs at most max_num_seqs sequences per step: a batch of 512 under a limit of 128 is
    decoded 128 at a time, so the roofline's batch is 128 (and its method says so)."""
    from omegaconf import OmegaConf

    from lem.analysis.analyse import _roofline
    from lem.result.schema import Result

    cfg = OmegaConf.create({"batching": {"strategy": "static", "batch_size": 512},
                            "precision": {"dtype": "bfloat16"}})
    info = {"param_bytes": PARAM_BYTES, "num_params": PARAMS, "arch": LLAMA3_8B}
    r = Result()
    r.summary.output_tokens, r.summary.input_tokens, r.summary.num_requests = 512 * 128, 512 * 256, 512
    r.summary.itl_s.p50 = 9.175e-3
    r.environment = {"gpus": [{"name": "NVIDIA H100 80GB HBM3"}]}
    r.engine = {"max_seqs_per_step": 128}
    capped = _roofline(r, cfg, info)
    assert capped.bytes_per_step == PARAM_BYTES + 128 * 320 * KV_PER_TOKEN
    assert 0 < capped.mbu < 1 and "at most 128 sequences per step" in capped.method
    r.engine = {"max_seqs_per_step": 1024}
    whole = _roofline(r, cfg, info)
    assert whole.bytes_per_step == PARAM_BYTES + 512 * 320 * KV_PER_TOKEN and "at most" not in whole.method
    # the engine's own running count, where each cycle has it, caps it too (e.g. by KV-cache room)
    r.cycles = [{"concurrency": {"peak_running": 300, "largest_batch": 512}},
                {"concurrency": {"peak_running": 256, "largest_batch": 512}}]
    kv = _roofline(r, cfg, info)
    assert kv.bytes_per_step == PARAM_BYTES + 300 * 320 * KV_PER_TOKEN and "at most 300" in kv.method
