"""Configuration: schemas, composition helpers, validation of a composed config."""
