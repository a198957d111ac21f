"""Scale-out for one big fit: DistributedDataParallel over N processes, each with a shard of every batch.

>>> from mlkd.distributed import fit_ddp
>>> result = fit_ddp(model, X, Y, X_val, Y_val, TrainConfig(batch_size=512), nproc=4)   # model now trained

``MultiLabelClassifier(..., nproc=N)`` and ``mlkd fit --nproc N`` call this. Every rank runs the one
``Trainer`` loop with the same global batch order; each takes a disjoint, interleaved shard
(``batch[rank::N]``) of every global batch of ``batch_size`` rows, and DDP averages the gradients, so an
optimizer step sees the mean gradient of the whole global batch, as a single process would. All ranks hold
identical weights, compute the same validation score and stop at the same epoch. The result equals a
single-process fit with the same global batch up to float rounding: the global mean is summed in a
different order (per-shard means, then an all-reduce average), and such differences grow slowly over
epochs. Dropout masks and random label noise are drawn per rank (rank 0 keeps the single-process streams).

Launch: ``nproc=N`` spawns N local processes (``torch.multiprocessing``, start method "spawn"); gloo on
CPU, NCCL on CUDA with one GPU per rank. Under ``torchrun`` (WORLD_SIZE/RANK/LOCAL_RANK/MASTER_ADDR set)
nothing is spawned: each launched process is one rank, ``nproc`` must equal WORLD_SIZE, and every rank
returns the trained model (README, "Scale-out"). Supported: single-stage methods whose state is their
parameters (``bce``, ``ls``, ``tea``, ``skdtea``, …); a multi-stage method is a ValueError.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import socket
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from .methods.base import Batch, Method, StepContext
from .trainer import TrainConfig, Trainer, TrainResult, resolve_device

#: Environment variables torchrun sets for every process it launches.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    return all(key in os.environ for key in TORCHRUN_ENV)


def is_primary() -> bool:
    """False only on the ranks > 0 of a torchrun launch: they should not write the shared outputs."""
    return not launched_by_torchrun() or int(os.environ["RANK"]) == 0


def check_distributable(method: Method) -> None:
    """ValueError unless ``method`` can be trained with DDP (one stage, all its state in parameters)."""
    cls = type(method)
    if cls.stages(method.config) or cls.needs_teacher:
        raise ValueError(
            f"method {method.name!r} trains in several stages (teacher first), which nproc > 1 does not run; "
            "expected a single-stage method such as bce, ls, tea or skdtea, or nproc=1"
        )
    if any(True for _ in method.buffers()) or cls.on_epoch_end is not Method.on_epoch_end:
        raise ValueError(
            f"method {method.name!r} keeps per-row state besides its parameters, which shards of a batch "
            "cannot share; expected a method whose state is its parameters (bce, ls, tea, skdtea), or nproc=1"
        )


def fit_ddp(method: Method, X, Y, X_val=None, Y_val=None, config: TrainConfig | None = None,
            nproc: int = 2) -> TrainResult:
    """Train ``method`` in place with DDP over ``nproc`` processes; returns rank 0's TrainResult.

    X : array of shape (n_samples, n_features); Y : array of shape (n_samples, n_labels), 0/1. The global
    batch is ``config.batch_size`` rows, split across the ranks. Under torchrun this process is one rank.
    """
    cfg = config or TrainConfig()
    cfg.validate()
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ValueError(f"nproc={nproc!r} is invalid; expected an integer ≥ 1")
    check_distributable(method)
    device = resolve_device(cfg.device)
    if launched_by_torchrun():
        world = int(os.environ["WORLD_SIZE"])
        if nproc != world:
            raise ValueError(f"nproc={nproc} but torchrun started WORLD_SIZE={world} processes; expected them equal")
        return _rank(int(os.environ["RANK"]), world, "env://", method, X, Y, X_val, Y_val, cfg, device.type)
    if device.type == "cuda" and torch.cuda.device_count() < nproc:
        raise ValueError(f"nproc={nproc} needs one GPU per process; found {torch.cuda.device_count()}; expected "
                         f"nproc ≤ {torch.cuda.device_count()}, or device='cpu' to run the processes on the CPU (gloo)")
    with tempfile.TemporaryDirectory(prefix="mlkd-ddp-") as tmp:
        out = Path(tmp)
        args = (nproc, f"tcp://127.0.0.1:{_free_port()}", method, X, Y, X_val, Y_val, cfg, device.type, str(out))
        torch.multiprocessing.start_processes(_spawned, args=args, nprocs=nproc, start_method="spawn", join=True)
        method.load_state_dict(load_file(out / "model.safetensors"))
        result = TrainResult(**json.loads((out / "result.json").read_text()))
    method.eval()
    return result


def _spawned(rank, world, init_method, method, X, Y, X_val, Y_val, cfg, device_type, out) -> None:
    method = copy.deepcopy(method)  # torch.multiprocessing shares tensors' memory: each rank needs its own weights
    result = _rank(rank, world, init_method, method, X, Y, X_val, Y_val, cfg, device_type)
    if rank == 0:  # safetensors + JSON, never a pickle
        save_file({k: v.detach().cpu().contiguous() for k, v in method.state_dict().items()},
                  str(Path(out) / "model.safetensors"))
        (Path(out) / "result.json").write_text(json.dumps(dataclasses.asdict(result)))


def _rank(rank, world, init_method, method, X, Y, X_val, Y_val, cfg, device_type) -> TrainResult:
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device_type == "cuda":
        torch.cuda.set_device(local)
        cfg = dataclasses.replace(cfg, device=f"cuda:{local}")
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world)
    try:
        trainer = Trainer(cfg)
        trainer.data_parallel = ShardedSteps(rank, world, cfg.seed)
        return trainer.fit(method, X, Y, X_val, Y_val)
    finally:
        dist.destroy_process_group()


class _Step(nn.Module):
    """``method.step`` as the module call DDP wraps (DDP hooks the gradient all-reduce onto ``forward``)."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, x, y, index, ctx):
        return self.method.step(Batch(x, y, index), ctx)


class ShardedSteps:
    """The trainer's data-parallel hook: steps on this rank's shard of each global batch through DDP, and
    epoch loss sums averaged over ranks (so every rank logs, checks and stops on the same numbers)."""

    def __init__(self, rank: int, world: int, seed: int) -> None:
        self.rank, self.world, self.seed = rank, world, seed
        self._generator = None

    def wrap(self, method: Method):
        """The step function for ``method``: (global batch, ctx) → StepOutput of this rank's shard."""
        dev = next(method.parameters()).device
        ddp = nn.parallel.DistributedDataParallel(_Step(method), device_ids=[dev] if dev.type == "cuda" else None)
        if self.rank:  # independent dropout masks and label noise per rank; rank 0 keeps the usual streams
            torch.manual_seed(self.seed + 7919 * self.rank)
            self._generator = torch.Generator(device=dev).manual_seed(self.seed + 1 + 7919 * self.rank)

        def step(batch: Batch, ctx: StepContext):
            # A last batch smaller than the world leaves some ranks without a row: they repeat its last row.
            rows = slice(self.rank, None, self.world) if self.rank < batch.x.shape[0] else slice(-1, None)
            if self._generator is not None:
                ctx = dataclasses.replace(ctx, generator=self._generator)
            return ddp(batch.x[rows], batch.y[rows], batch.index[rows], ctx)

        return step

    def reduce(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each epoch's summed loss terms, averaged over ranks."""
        names = sorted(sums)
        stacked = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64) for k in names])
        dist.all_reduce(stacked)
        return dict(zip(names, stacked / self.world, strict=True))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
