"""The PyTorch / transformers engine: its spec, config, validation and backend."""
