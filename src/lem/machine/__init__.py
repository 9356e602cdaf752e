"""The machine: GPUs through NVML, host facts, CUDA probes, provenance."""
