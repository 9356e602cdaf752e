"""Everything that measures, opened and closed together: the GPU energy meter, the sampler
process, the CPU/DRAM meter and the window recorder; plus the time series file."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lem.measure.energy import make_meter
from lem.measure.sample import Sample
from lem.measure.sampler import COLUMNS, Sampler
from lem.measure.windows import WindowRecorder

log = logging.getLogger(__name__)
TIMESERIES_FILE = "timeseries.parquet"


@dataclass
class TimeseriesInfo:
    file: Optional[str]
    rows: int
    sample_period_s: Optional[float]
    power_source: Optional[dict[str, str]]  # per GPU: instant, or average_1s (field missing)
    reason: Optional[str] = None  # why there is no time series


class Instruments:
    def __init__(self, cfg, nvml_error: Optional[str]):
        e, gpus = cfg.energy, list(cfg.gpus)
        self.gpus = gpus
        self.meter = make_meter(e.meter, gpus, nvml_error)
        self.sampler = self._sampler(e, gpus, nvml_error)
        self.cpu_meter = _cpu_meter(e)
        self.recorder = WindowRecorder(self.meter, self.sampler, self.cpu_meter)
        self.device_idle_end_ns: Optional[int] = None
        self._closed: Optional[TimeseriesInfo] = None

    @staticmethod
    def _sampler(e, gpus, nvml_error) -> Optional[Sampler]:
        if e.meter == "none" or not gpus or nvml_error or e.sample_period_s <= 0:
            return None
        sampler = Sampler(gpus, e.sample_period_s)
        sampler.start()
        return sampler

    def sample_device_idle(self, seconds: float) -> None:
        """Before any CUDA context of ours exists: what the GPUs draw with nothing loaded."""
        if self.sampler is not None and seconds > 0:
            time.sleep(seconds)
            self.device_idle_end_ns = time.time_ns()

    def checkpoint(self) -> None:
        """At batch edges: RAPL counters wrap within minutes at high power; read them often."""
        if self.cpu_meter is not None:
            self.cpu_meter.checkpoint()

    def rows(self) -> list[Sample]:
        return self.sampler.drain() if self.sampler is not None else []

    def close(self, out_dir: Path) -> TimeseriesInfo:
        """Stop sampling and write the time series, once: a second call returns the first's info."""
        if self._closed is None:
            self._closed = self._close(out_dir)
        return self._closed

    def _close(self, out_dir: Path) -> TimeseriesInfo:
        if self.sampler is None:
            return TimeseriesInfo(None, 0, None, None, "no GPU sampler (CPU run, energy=none, "
                                  "or energy.sample_period_s=0)")
        rows = self.sampler.stop()
        info = TimeseriesInfo(TIMESERIES_FILE, len(rows), self.sampler.period_s,
                              {str(g): "average_1s" if fb else "instant"
                               for g, fb in self.sampler.power_fallback.items()})
        write_timeseries(rows, self.recorder.windows, Path(out_dir) / TIMESERIES_FILE)
        return info


def _cpu_meter(e):
    if e.cpu == "none" or e.meter == "none":
        return None
    from lem.measure.cpu_energy import CpuEnergyMeter

    fallback = "none" if e.cpu == "rapl" else "codecarbon"
    return CpuEnergyMeter(fallback=fallback, country_iso_code=e.country_iso_code)


def write_timeseries(rows: list[Sample], windows, path: Path) -> None:
    """One row per sample and GPU, labelled with the window it fell in; written atomically."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["window"] = None
    for w in windows:
        df.loc[(df.t_ns >= w.start_ns) & (df.t_ns <= w.end_ns), "window"] = w.name
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)
