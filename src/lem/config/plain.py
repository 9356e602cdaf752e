"""OmegaConf nodes as plain Python: engines take dicts and lists, never DictConfig or ListConfig."""

from __future__ import annotations


def plain(value):
    """A DictConfig or ListConfig as a dict or list, interpolations resolved; anything else as is
    (None, a string, a dict that is already plain)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value
