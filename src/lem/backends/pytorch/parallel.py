"""Data and tensor parallelism for the PyTorch backend: one worker process per GPU.

The run's process keeps everything that measures (the sampler process, the energy counters of
every GPU, read at each window's edges, on one clock); the workers only generate. Each worker is
a spawned process that sees exactly its GPU(s) (`CUDA_VISIBLE_DEVICES`, set before it imports
torch) and holds a plain backend (`backend.parallel` cleared), driven over a pipe.

- data: every worker loads the whole model on its own GPU. `generate_all` deals the batches of
  a cycle out round-robin, the workers run their shares at the same time, and every batch record
  comes back with its per-token times. Times are `time.perf_counter()`, which on Linux is
  CLOCK_MONOTONIC, one clock for every process of the host, so the pooled raw samples (late
  aggregation) and the window edges line up. A single `generate` (warmup) runs the batch on every
  worker, so each GPU is warm.
- tensor: the workers form one torch.distributed group (nccl on GPUs, gloo on the CPU) and load
  the model with transformers' `tp_plan="auto"`; every batch runs on all ranks, rank 0's record
  is the batch's.

On the CPU (no GPUs) `backend.parallel_size` workers run (each with its share of the cores); this
is what the tests use.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import socket
import traceback
from dataclasses import replace
from multiprocessing.connection import wait
from typing import Any, Optional

from lem.backends.base import (
    NO_RUN,
    BatchRecord,
    GpuMemory,
    ParallelInfo,
    PrecisionInfo,
    RunContext,
    WorkerInfo,
)

log = logging.getLogger(__name__)
MODES = ("data", "tensor")


class WorkerError(RuntimeError):
    """A worker failed; the message carries its rank, GPU and traceback."""


class ParallelBackend:
    def __init__(self, backend_cfg, run: Optional[RunContext] = None):
        self.cfg = backend_cfg
        self.run = run or NO_RUN
        self.mode = backend_cfg.parallel
        self.workers: list[_Worker] = []
        self.random_checkpoint_write_s: Optional[float] = None  # None: not written by this run

    # -- lifecycle -------------------------------------------------------------------------
    def load(self, source, precision, gpus: list[int]) -> PrecisionInfo:
        size = len(gpus) or int(self.cfg.parallel_size or 0)
        inner = _inner_cfg(self.cfg)
        port = _free_port() if self.mode == "tensor" else None
        self.workers = [_Worker.start(rank, size, self.mode, gpus, inner, self.run, port)
                        for rank in range(size)]
        if self.mode == "tensor" and source.path is None:  # tp_plan loads from a checkpoint
            from dataclasses import replace

            # rank 0 writes it, on its first GPU where there is one (seconds, not minutes)
            path, self.random_checkpoint_write_s = self._one(
                0, ("random_checkpoint", self.run.cache_dir, source.config, source.seed,
                    precision.dtype))
            source = replace(source, path=str(path))
        infos = self._all(("load", source, precision))
        log.info("%s parallel: %d workers loaded (gpus=%s)", self.mode, size, gpus)
        return infos[0]

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers = []

    # -- generation ------------------------------------------------------------------------
    def generate(self, batch, force_output_len: bool) -> BatchRecord:
        """One batch: on every worker (warms every GPU; tensor parallel needs all ranks)."""
        return self._all(("generate", batch, force_output_len))[0]

    def generate_all(self, batches, force_output_len: bool, on_batch=lambda i: None) -> list:
        """Every batch of a cycle; records in the order of `batches`. Data parallel deals them
        out round-robin and runs the shares concurrently; `on_batch(i)` as each one finishes."""
        if self.mode == "tensor":
            out = []
            for i, b in enumerate(batches):
                out.append(self.generate(b, force_output_len))
                on_batch(i)
            return out
        shares = [list(range(r, len(batches), len(self.workers))) for r in range(len(self.workers))]
        for w, share in zip(self.workers, shares):
            w.send(("generate_many", [batches[i] for i in share], force_output_len))
        records: list[Optional[BatchRecord]] = [None] * len(batches)
        pending = {w.conn: (w, share) for w, share in zip(self.workers, shares)}
        while pending:
            for conn in wait(list(pending)):
                w, share = pending[conn]
                msg = w.recv()
                if msg[0] == "batch":
                    msg[2].worker = w.rank
                    records[share[msg[1]]] = msg[2]
                    on_batch(share[msg[1]])
                else:  # ("done", None): this worker's share is complete
                    del pending[conn]
        return records

    # -- reports ---------------------------------------------------------------------------
    def describe(self) -> ParallelInfo:
        infos = self._all(("model_info",))  # what each rank holds: shards under tensor parallel
        return ParallelInfo(
            mode=self.mode, size=len(self.workers),
            workers=[WorkerInfo(rank=w.rank, gpus=list(w.gpus), pid=w.proc.pid) for w in self.workers],
            dealing="round-robin batches, run concurrently" if self.mode == "data"
            else "every batch on every rank; rank 0's token times",
            local_param_elements_per_worker=[i.get("local_param_elements") for i in infos],
            random_checkpoint_write_s=self.random_checkpoint_write_s)

    def model_info(self) -> dict[str, Any]:
        infos = self._all(("model_info",))
        return {**infos[0], "local_param_elements_per_worker":
                [i.get("local_param_elements") for i in infos]}

    def reset_peak_memory(self) -> None:
        self._all(("reset_peak_memory",))

    def peak_memory(self) -> list[GpuMemory]:
        return [m for mems in self._all(("peak_memory",)) for m in mems]  # each its own GPU

    # -- plumbing --------------------------------------------------------------------------
    def _all(self, msg) -> list:
        for w in self.workers:
            w.send(msg)
        return [w.result() for w in self.workers]

    def _one(self, rank: int, msg):
        w = self.workers[rank]
        w.send(msg)
        return w.result()


class _Worker:
    def __init__(self, rank: int, gpus: list[int], proc, conn):
        self.rank, self.gpus, self.proc, self.conn = rank, gpus, proc, conn

    @classmethod
    def start(cls, rank, size, mode, gpus, inner_cfg, run, port) -> _Worker:
        mine = gpus if mode == "tensor" else gpus[rank:rank + 1]
        env = _worker_env(rank, size, mode, mine, port)
        ctx = mp.get_context("spawn")  # never fork a process that may hold CUDA state
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, name=f"lem-{mode}-rank{rank}", daemon=True,
                           args=(child, env, inner_cfg, run, mine, rank, mode))
        proc.start()
        child.close()
        return cls(rank, mine, proc, parent)

    def send(self, msg) -> None:
        self.conn.send(msg)

    def recv(self):
        try:
            msg = self.conn.recv()
        except EOFError:
            self.proc.join(5)
            raise WorkerError(f"worker rank {self.rank} (gpus={self.gpus}) died "
                              f"(exit code {self.proc.exitcode}); see the log above") from None
        if msg[0] == "error":
            raise WorkerError(f"worker rank {self.rank} (gpus={self.gpus}) failed:\n{msg[1]}")
        return msg

    def result(self):
        return self.recv()[1]

    def stop(self) -> None:
        try:
            self.conn.send(("stop",))
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


def _worker_env(rank, size, mode, gpus, port) -> dict[str, str]:
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
    if not gpus:  # CPU replicas share the cores instead of each taking all of them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // size))
    if mode == "tensor":
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   LOCAL_RANK=str(rank), WORLD_SIZE=str(size))
    return env


def _inner_cfg(backend_cfg):
    """The backend each worker holds: the same options, no parallelism of its own."""
    from omegaconf import OmegaConf

    inner = OmegaConf.to_container(backend_cfg, resolve=True)
    inner["parallel"] = None
    return OmegaConf.create(inner)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the worker process ------------------------------------------------------------------------
def _serve(conn, env, inner_cfg, run, gpus, rank, mode) -> None:
    os.environ.update(env)  # before torch is imported: CUDA sees exactly this worker's GPUs
    try:
        backend = _make_inner(inner_cfg, run, mode, rank, len(gpus))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            backend.close()
            _leave_group(mode)
            return
        try:
            _handle(conn, backend, msg, gpus, mode)
        except BaseException:
            conn.send(("error", traceback.format_exc()))


def _make_inner(inner_cfg, run, mode, rank, n_gpus):
    import torch

    from lem.backends import make_backend

    if not n_gpus:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if mode == "tensor":
        torch.distributed.init_process_group("nccl" if n_gpus else "gloo")
    return make_backend(inner_cfg, replace(run, tensor_parallel=(mode == "tensor")))


def _handle(conn, backend, msg, gpus, mode) -> None:
    op = msg[0]
    if op == "load":
        # data: this worker's one GPU; tensor: all of them (the backend places its rank's shard)
        conn.send(("ok", backend.load(msg[1], msg[2], gpus)))
    elif op == "generate":
        conn.send(("ok", backend.generate(msg[1], msg[2])))
    elif op == "random_checkpoint":
        from lem.models.random_checkpoint import ensure_random_checkpoint

        conn.send(("ok", ensure_random_checkpoint(*msg[1:], device="cuda:0" if gpus else "cpu")))
    elif op == "generate_many":
        for i, batch in enumerate(msg[1]):
            conn.send(("batch", i, backend.generate(batch, msg[2])))
        conn.send(("done", None))
    elif op == "model_info":
        conn.send(("ok", backend.model_info()))
    elif op == "reset_peak_memory":
        conn.send(("ok", backend.reset_peak_memory()))
    elif op == "peak_memory":
        conn.send(("ok", backend.peak_memory()))
    else:
        conn.send(("error", f"unknown request {op!r}"))


def _leave_group(mode) -> None:
    if mode == "tensor":
        import torch

        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
