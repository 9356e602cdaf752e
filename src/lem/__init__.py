"""lem (LLenergyMeasure v3): energy, latency and throughput of LLM inference, measured properly."""

__version__ = "3.0.0.dev0"
