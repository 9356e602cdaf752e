"""The TensorRT-LLM engine: its spec, config, validation, pre-flight and backend."""
