"""`hydra/sweeper=lem`: Hydra's BasicSweeper, optionally launching the jobs in a seeded random order.

    python -m lem -m +sweep=precision_x_batch hydra/sweeper=lem hydra.sweeper.shuffle=true hydra.sweeper.seed=1

The cartesian product of the sweep's values is built exactly as BasicSweeper builds it (the first
parameter varies slowest); with `shuffle: true` the whole list of jobs is permuted with
`random.Random(seed)` and only then cut into batches of `max_batch_size`, so a study run in a
shuffled order spreads slow drift (temperature, clocks, a neighbour's load) over all points instead
of over the last ones. The same seed gives the same order; Hydra numbers the jobs in launch order.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module before it is in
# sys.modules, and dataclasses then cannot resolve string annotations.
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Override

log = logging.getLogger(__name__)


@dataclass
class LemSweeperConf:
    _target_: str = "hydra_plugins.lem_sweeper.lem_sweeper.LemSweeper"
    max_batch_size: Optional[int] = None  # jobs handed to the launcher at once (None: all)
    params: Optional[dict[str, str]] = None  # as BasicSweeper's: {key: "a,b,c" | "range(3)"}
    shuffle: bool = False  # launch the jobs in a random order ...
    seed: int = 0  # ... drawn with random.Random(seed)


ConfigStore.instance().store(group="hydra/sweeper", name="lem", node=LemSweeperConf, provider="lem")


def job_batches(overrides: Sequence[Override], max_batch_size: Optional[int], shuffle: bool = False,
                seed: int = 0) -> list[list[list[str]]]:
    """The jobs BasicSweeper would launch (one list of override strings each), permuted with
    random.Random(seed) when `shuffle`, then cut into batches of at most `max_batch_size`."""
    jobs = BasicSweeper.split_arguments(list(overrides), None)[0]
    if shuffle:
        random.Random(seed).shuffle(jobs)
    if max_batch_size is None:
        return [jobs]
    assert max_batch_size > 0, "hydra.sweeper.max_batch_size must be positive or null"
    return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))


class LemSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int], params: Optional[dict[str, str]] = None,
                 shuffle: bool = False, seed: int = 0) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.shuffle = shuffle
        self.seed = seed

    # BasicSweeper.sweep() calls self.split_arguments(overrides, max_batch_size): the one place to
    # change the order, so validation, launching and max_batch_size stay Hydra's.
    def split_arguments(self, overrides: list[Override],  # type: ignore[override]
                        max_batch_size: Optional[int]) -> list[list[list[str]]]:
        batches = job_batches(overrides, max_batch_size, self.shuffle, self.seed)
        if self.shuffle:
            log.info(f"lem sweeper: {sum(map(len, batches))} jobs in a shuffled order (seed {self.seed})")
        return batches
