"""Measuring: energy meters, the sampler process, windows, baseline, warmup, cycles."""
