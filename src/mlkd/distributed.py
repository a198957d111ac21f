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
parameters and whose loss is a mean over rows (``bce``, ``ls``, ``tea``, ``skdtea``, …); a multi-stage method,
or one whose loss couples a batch's rows (``Method.batch_coupling``), is a ValueError. Each rank weights its
shard's loss by its share of the batch's rows, so uneven splits average correctly.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import multiprocessing.util
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.multiprocessing.spawn import ProcessException

from ._process import exit_with_parent
from .methods.base import Batch, Method, StepContext, seed_fit_rng, shown
from .trainer import TrainConfig, Trainer, TrainResult, resolve_device

#: Environment variables torchrun sets for every process it launches.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    return all(key in os.environ for key in TORCHRUN_ENV)


def is_primary() -> bool:
    """False only on the ranks > 0 of a torchrun launch: they should not write the shared outputs."""
    return not launched_by_torchrun() or int(os.environ["RANK"]) == 0


#: The most processes one fit may have: far more than a machine's cores, each spawned process a torch of its own
#: (hundreds of MB); ``nproc=1025`` spawned 1025 of them, and 2**70 was an OverflowError traceback from the spawn.
MAX_NPROC = 1024


def check_nproc(nproc) -> int:
    """``nproc`` as an int; a ValueError unless it is an integer in [1, ``MAX_NPROC``]."""
    if not isinstance(nproc, (int, np.integer)) or isinstance(nproc, (bool, np.bool_)) or not 1 <= nproc <= MAX_NPROC:
        raise ValueError(f"nproc={shown(nproc)} is invalid; expected an integer in [1, {MAX_NPROC}]")
    return int(nproc)  # a numpy integer (a grid's value), as MultiLabelClassifier(nproc=...) takes it


def check_distributable(method: Method) -> None:
    """ValueError unless ``method`` can be trained with DDP (one stage, all its state in parameters)."""
    cls = type(method)
    if cls.stages(method.config) or cls.needs_teacher:
        raise ValueError(
            f"method {method.name!r} trains in several stages (teacher first), which nproc > 1 does not run; "
            "expected a single-stage method such as bce, ls, tea, skdtea, mpvae, tfkd_reg or labelwise, or nproc=1"
        )
    # the coupling first: a CNN's batch normalisation also keeps buffers, and its error should say what couples
    coupling = method.batch_coupling()
    if coupling:
        raise ValueError(
            f"method {method.name!r} couples the rows of a batch ({coupling}), which a shard of the batch would "
            "compute differently; expected a method whose loss is a mean over rows (bce, ls, tea, skdtea), or nproc=1"
        )
    if any(True for _ in method.buffers()) or cls.on_epoch_end is not Method.on_epoch_end:
        raise ValueError(
            f"method {method.name!r} keeps per-row state besides its parameters, which shards of a batch "
            "cannot share; expected a method whose state is its parameters (such as bce, ls, tea, skdtea, mpvae, "
            "tfkd_reg, labelwise), or nproc=1"
        )


def check_world(nproc: int) -> None:
    """ValueError when torchrun launched this process and ``nproc`` is not the number of processes it launched:
    each rank would otherwise run its own single-process fit and the ranks would race on the outputs, or (one
    process launched, ``nproc`` > 1) the fit would run in one process, since under torchrun nothing is spawned."""
    if not launched_by_torchrun():
        return
    world = int(os.environ["WORLD_SIZE"])
    if nproc != world:
        raise ValueError(
            f"nproc={nproc} but torchrun started WORLD_SIZE={world} processes; expected nproc={world} (one "
            "distributed fit), or independent fits launched without torchrun"
        )


def fit_ddp(method: Method, X, Y, X_val=None, Y_val=None, config: TrainConfig | None = None,
            nproc: int = 2) -> TrainResult:
    """Train ``method`` in place with DDP over ``nproc`` processes; returns rank 0's TrainResult.

    X : array of shape (n_samples, n_features); Y : array of shape (n_samples, n_labels), 0/1. The global
    batch is ``config.batch_size`` rows, split across the ranks. Under torchrun this process is one rank.
    """
    cfg = config or TrainConfig()
    cfg.validate()
    nproc = check_nproc(nproc)
    check_distributable(method)
    device = resolve_device(cfg.device)
    check_world(nproc)
    if launched_by_torchrun():
        world = int(os.environ["WORLD_SIZE"])
        return _rank(int(os.environ["RANK"]), world, "env://", method, X, Y, X_val, Y_val, cfg, device.type)
    if device.type == "cuda" and torch.cuda.device_count() < nproc:
        raise ValueError(f"nproc={nproc} needs one GPU per process; found {torch.cuda.device_count()}; expected "
                         f"nproc ≤ {torch.cuda.device_count()}, or device='cpu' to run the processes on the CPU (gloo)")
    with tempfile.TemporaryDirectory(prefix="mlkd-ddp-") as tmp:
        out = Path(tmp)
        # rendezvous through a file in this fit's own folder: no TCP port that another process could take
        # between choosing it and binding it (two fits at once, or any other program)
        args = (nproc, (out / "rendezvous").as_uri(), method, X, Y, X_val, Y_val, cfg, device.type, str(out),
                os.getpid())
        _run_spawned(args, nproc, out)
        method.load_state_dict(load_file(out / "model.safetensors"))
        result = TrainResult(**json.loads((out / "result.json").read_text()))
    method.eval()
    return result


#: Exceptions a rank's error is raised again as in the parent (anything else becomes a RuntimeError).
_RERAISED = {cls.__name__: cls for cls in (ValueError, FloatingPointError, TypeError, MemoryError, RuntimeError)}


def _run_spawned(args, nproc: int, out: Path) -> None:
    """Spawn the ranks and wait for them. A rank's error is raised here as the error the rank raised (its
    first line, "rank R: ..."), a rank that ended without one (killed) as a ChildProcessError; SIGTERM to this
    process, like Ctrl-C, stops the ranks before it returns."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")  # "Terminating process N": the error says why
    level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)
    context = None
    try:
        # daemon: should this process exit while start_processes is still starting them (before ``context``
        # holds them), multiprocessing terminates them at exit instead of waiting for them
        context = torch.multiprocessing.start_processes(_spawned, args=args, nprocs=nproc, start_method="spawn",
                                                        join=False, daemon=True)
        while not context.join():
            pass
    except ProcessException as exc:
        # the rank that failed first (torch's error_index); the others' errors follow from it (a closed peer)
        first = f"error-{exc.error_index}.json"
        errors = sorted(out.glob("error-*.json"), key=lambda e: (e.name != first, e.name))
        if (not errors and getattr(exc, "exit_code", None) == 1 and getattr(exc, "signal_name", None) is None
                and not (out / f"started-{exc.error_index}").exists()):
            # exit code 1 without the error file a failing fit writes, and before the rank's function began (its
            # marker): the rank failed starting up, most often re-importing the user's script (spawn does), whose
            # unguarded fit tries to spawn again. A rank that began and ended with exit code 1 (a library's exit(1),
            # a method's sys.exit(1)) is reported as any other rank that ended without an error of its own
            raise ChildProcessError(f"rank {exc.error_index} of the distributed fit ended with exit code 1 before its "
                                    "fit began (a spawned process imports the main script again; its error is on "
                                    "standard error above); expected a script that fits with nproc > 1 to run "
                                    "under 'if __name__ == \"__main__\":'") from None
        if not errors:  # killed by a signal (SIGKILL: often the system's, for lack of memory) or os._exit
            # ChildProcessError (an OSError): not a bug of the fit's, so 'mlkd fit' says it in one line
            raise ChildProcessError(f"rank {exc.error_index} of the distributed fit ended without an error of its "
                                    f"own ({str(exc).strip().splitlines()[0]}); expected every rank to run to the "
                                    "end: was it killed, for instance by the system for lack of memory?") from None
        info = json.loads(errors[0].read_text())
        raise _RERAISED.get(info["type"], RuntimeError)(f"rank {info['rank']}: {info['message']}") from None
    finally:
        processes = [] if context is None else context.processes  # ranks started before a SIGTERM in
        for process in processes:                                   # start_processes exit with this process
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
        spawn_log.setLevel(level)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


def _spawned(rank, world, init_method, method, X, Y, X_val, Y_val, cfg, device_type, out, parent) -> None:
    (Path(out) / f"started-{rank}").touch()  # past spawn's start-up (the main script's import): see _run_spawned
    exit_with_parent(parent, signal.SIGTERM)  # a killed parent leaves no rank training on
    method = copy.deepcopy(method)  # torch.multiprocessing shares tensors' memory: each rank needs its own weights
    try:
        result = _rank(rank, world, init_method, method, X, Y, X_val, Y_val, cfg, device_type)
    except Exception as exc:  # the parent raises it again as what it was (json, never a pickle)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        (Path(out) / f"error-{rank}.json").write_text(json.dumps({"rank": rank, "type": type(exc).__name__,
                                                                 "message": message}))
        raise
    if rank == 0:  # safetensors + JSON, never a pickle
        save_file({k: v.detach().cpu().contiguous() for k, v in method.state_dict().items()},
                  str(Path(out) / "model.safetensors"))
        (Path(out) / "result.json").write_text(json.dumps(dataclasses.asdict(result)))
    # the rank's work is on disk: end the process without the interpreter's teardown, in which the C++ threads of
    # torch's process group were seen to abort the rank at random (SIGABRT, "terminate called without an active
    # exception", about one spawned fit in 30) after a fit that had succeeded. multiprocessing's own exit step
    # still runs: it releases the semaphores the rank made (tqdm's lock), which the caller's resource tracker
    # otherwise reports at exit ("There appear to be 2 leaked semaphore objects")
    multiprocessing.util._exit_function()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _rank(rank, world, init_method, method, X, Y, X_val, Y_val, cfg, device_type) -> TrainResult:
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device_type == "cuda":
        torch.cuda.set_device(local)
        cfg = dataclasses.replace(cfg, device=f"cuda:{local}")
    backend = "nccl" if device_type == "cuda" else "gloo"
    # Under torchrun the process group lives as long as the process: a script may fit several times, and
    # tearing the group down and setting it up again between fits can deadlock the ranks.
    spawned = init_method != "env://"
    if spawned or not dist.is_initialized():
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world)
    try:
        trainer = Trainer(cfg)
        trainer.data_parallel = ShardedSteps(rank, world, cfg.seed)
        result = trainer.fit(method, X, Y, X_val, Y_val)
        if spawned:  # every rank past its last collective before any tears the group down and ends its process
            dist.barrier()
        return result
    finally:
        if spawned:
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
            seed_fit_rng(self.seed + 7919 * self.rank, dev)  # in the fit's fork: restored after it
            self._generator = torch.Generator(device=dev).manual_seed(self.seed + 1 + 7919 * self.rank)

        def step(batch: Batch, ctx: StepContext):
            # Each rank's loss terms are means over its shard and DDP averages the ranks' gradients, so each
            # is weighted by world · shard rows / batch rows: the average is then the whole batch's mean, also
            # when the rows do not split evenly. A rank left without a row (a last batch smaller than the
            # world) steps on the batch's last row with weight 0: every rank must join each all-reduce.
            total = batch.x.shape[0]
            shard = len(range(self.rank, total, self.world))
            rows = slice(self.rank, None, self.world) if shard else slice(-1, None)
            if self._generator is not None:
                ctx = dataclasses.replace(ctx, generator=self._generator)
            out = ddp(batch.x[rows], batch.y[rows], batch.index[rows], ctx)
            weight = self.world * shard / total
            if weight != 1.0:  # an even split keeps the losses as they are, bit for bit
                out.losses = {name: value * weight for name, value in out.losses.items()}
            return out

        return step

    def reduce(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each epoch's summed loss terms, averaged over ranks (each rank's were weighted by its share of the
        rows in ``step``, so the average is the sum over all rows)."""
        names = sorted(sums)
        stacked = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64) for k in names])
        dist.all_reduce(stacked)
        return dict(zip(names, stacked / self.world, strict=True))

