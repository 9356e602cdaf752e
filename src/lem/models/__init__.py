"""Where a model's weights and tokenizer come from: generated (tiny), random (real shapes), hub."""
