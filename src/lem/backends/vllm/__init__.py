"""The vLLM engine: its spec, config, validation, engine setup, serving and backend."""
