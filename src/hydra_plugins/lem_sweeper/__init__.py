"""lem's Hydra sweeper plugin (`hydra/sweeper=lem`): Hydra's basic sweeper with a seeded shuffle.

Hydra finds it by scanning the `hydra_plugins` namespace package (no `__init__.py` in
src/hydra_plugins itself); the plugin and its config live in `lem_sweeper.py`.
"""
