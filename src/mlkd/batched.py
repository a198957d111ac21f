"""Many small fits at once: several seeds of one configuration trained together as one batched model.

>>> from mlkd.batched import fit_seeds
>>> fits = fit_seeds("skdtea", X, Y, X_val, Y_val, seeds=range(8))
>>> model, result = fits[0]                  # seed 0: a plain trained method and its TrainResult

On small data sets a fit is bound by per-step overhead (Python, autograd, the optimizer), not by its
matmuls. Stacking the members' weights (``torch.func.stack_module_state``) and running the method's own
``step`` under ``vmap(functional_call)`` turns K small matmuls into one batched matmul and pays the
overhead once per step for all K. Each member is what ``Trainer.fit`` with ``TrainConfig(seed=s)`` would
train, apart from its random draws: the same initial weights (``build_method(seed=s)``), the same batch
order (its own ``randperm`` stream), its own AdamW moments (the optimizer is elementwise), its own early
stopping on the same validation score, and its best state restored. Dropout masks and label noise come
from one vmapped random stream instead of each seed's, so results are equal in distribution, not in bits
(BENCHMARKS.md, "perf", compares them). Members that stop early are dropped from the stack, so late
stoppers do not pay for them.

Supported: single-stage methods whose whole state is their parameters (no buffers, no teacher, no
per-epoch hook) — ``bce``, ``ls``, ``tea``, ``skdtea`` among them. Anything else is a ValueError.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from .methods.base import Batch, Method, StepContext, build_method, method_class
from .trainer import (
    SEED_RANGE,
    FusedAdamStep,
    TrainConfig,
    TrainResult,
    _apply_lr_schedule,
    _improves,
    _make_optimizer,
    _validation_score,
    check_finite_predictions,
    device_tensors,
    fit_setting,
    keep_freed_memory_for_reuse,
    non_finite_terms,
    predict_chunk_rows,
    predictions_diverged,
    resolve_device,
)


class _Step(nn.Module):
    """``method.step`` as a module call, so ``functional_call`` can run it with a member's weights."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: Tensor, y: Tensor, index: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        return self.method.step(Batch(x, y, index), ctx).losses


def check_batchable(method: Method) -> None:
    """ValueError unless ``method`` can be trained as a member of a batched fit."""
    cls = type(method)
    reasons = []
    if cls.stages(method.config):
        reasons.append("it trains in several stages")
    if cls.needs_teacher:
        reasons.append("it needs a teacher")
    if any(True for _ in method.buffers()):
        reasons.append("it keeps buffers besides its parameters")
    if cls.on_epoch_end is not Method.on_epoch_end:
        reasons.append("it updates state at the end of each epoch")
    if method.pair_batches:
        reasons.append("it trains on pairs of training rows")
    if reasons:
        raise ValueError(
            f"method {method.name!r} cannot be fitted batched ({'; '.join(reasons)}); expected a single-stage "
            "method whose state is its parameters (bce, ls, tea, skdtea): fit it with Trainer.fit instead"
        )


def fit_seeds(
    method: str,
    X,
    Y,
    X_val=None,
    Y_val=None,
    seeds: Iterable[int] = (0, 1, 2),
    params: dict | None = None,
    config: TrainConfig | None = None,
) -> list[tuple[Method, TrainResult]]:
    """Train one member per seed of ``method`` with ``params``, all at once; returns ``[(model, result)]``.

    X : array of shape (n_samples, n_features), float; Y : array of shape (n_samples, n_labels), 0/1;
    X_val, Y_val : the validation pair for early stopping (without it every member runs ``max_epochs``).
    seeds : distinct integers in [0, 2**63 − 1) (Python or numpy), one member each.
    ``config`` gives the training settings shared by all members; its ``seed`` is ignored (each member
    uses its own seed from ``seeds``). Every member stops early on its own and ends at its best state. A
    history row's ``seconds`` is the wall time of the shared epoch (all members still training). With
    ``optimizer`` "adam" or "adamw" the members always use the fused kernel (``fused_optimizer=False`` is
    overridden; "rmsprop" is torch's RMSprop): a member's numbers match its sequential fit in distribution, not
    bit for bit, either way.
    """
    given = list(seeds)
    # each seed as TrainConfig checks its seed: int(0.5) or int("1") would train another seed than asked for
    integers = all(isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_))
                   and SEED_RANGE[0] <= s < SEED_RANGE[1] for s in given)
    if not given or not integers or len({int(s) for s in given}) != len(given):
        raise ValueError(f"seeds={given!r} is invalid; expected distinct integers in [0, 2**63 - 1), at least one")
    seeds = [int(s) for s in given]
    method_class(method)
    cfg = config or TrainConfig()
    cfg.validate()
    members = [build_method(method, X.shape[1], Y.shape[1], params, seed=s) for s in seeds]
    check_batchable(members[0])
    keep_freed_memory_for_reuse()
    device = resolve_device(cfg.device)
    with fit_setting(cfg, device, seeds[0]):  # one fit at a time per process, as Trainer.fit
        return _fit(members, seeds, X, Y, X_val, Y_val, cfg, device)


def _fit(members, seeds, X, Y, X_val, Y_val, cfg: TrainConfig, dev) -> list[tuple[Method, TrainResult]]:
    K = len(members)
    template = members[0]
    stepper = _Step(_meta_copy(template))
    forward = _meta_copy(template)
    params, _ = stack_module_state([m.to(dev) for m in members])
    names = list(params)
    # Matrices are stored transposed, (K, in, out): autograd then yields their gradients in the storage
    # layout, where vmapped linear layers would otherwise copy every weight gradient once per step.
    transposed = [params[k].ndim == 3 for k in names]
    weights = [params[k].detach().mT.contiguous().requires_grad_(True) if t else params[k]
               for k, t in zip(names, transposed, strict=True)]

    def as_module(w: list[Tensor]) -> list[Tensor]:
        return [v.mT if t else v for v, t in zip(w, transposed, strict=True)]

    def member_state(slot: int) -> dict[str, Tensor]:
        return {name: v[slot].detach().clone(memory_format=torch.contiguous_format)
                for name, v in zip(names, as_module(weights), strict=True)}

    X_t, Y_t, Xv, Yv = device_tensors(X, Y, X_val, Y_val, dev)
    has_val = Xv is not None
    # Fused AdamW: a member's numbers cannot match its sequential fit bit for bit anyway (vmapped random draws).
    cfg = dataclasses.replace(cfg, fused_optimizer=True)
    optimizer = _make_optimizer(weights, cfg)
    optimizer_step = FusedAdamStep(optimizer)
    shuffles = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    method_gen = torch.Generator(device=dev).manual_seed(seeds[0] + 1)
    n = X_t.shape[0]
    bs = min(cfg.batch_size, n)

    def losses_of(w, x, y, index, ctx):
        module_weights = {"method." + k: v for k, v in zip(names, as_module(w), strict=True)}
        return functional_call(stepper, module_weights, (x, y, index, ctx))

    def logits_of(w, x):
        return functional_call(forward, dict(zip(names, as_module(w), strict=True)), (x,))

    batched_losses = vmap(losses_of, in_dims=(0, 0, 0, 0, None), randomness="different")
    batched_logits = vmap(logits_of, in_dims=(0, None))

    def chunks_of(rows_in: Tensor, members: int):
        """``rows_in`` in chunks of at most ``predict_chunk_rows`` rows over all ``members`` (8192, fewer for CNNs), as
        predict_logits: all the rows at once would hold every member's activations for them (label embeddings:
        K × n × labels × embed_dim)."""
        rows = max(1, predict_chunk_rows(template) // members)
        return (rows_in[begin : begin + rows] for begin in range(0, rows_in.shape[0], rows))

    active = list(range(K))  # member positions still training, in stack order
    results = [TrainResult() for _ in range(K)]
    best = [(-math.inf,)] * K
    since_best = [0] * K
    best_state: list[dict | None] = [None] * K
    start = time.perf_counter()
    for epoch in range(cfg.max_epochs):
        t0 = time.perf_counter()
        ctx = StepContext(epoch=epoch, max_epochs=cfg.max_epochs, generator=method_gen)
        _apply_lr_schedule(optimizer, cfg, epoch)
        stepper.train()
        perms = torch.stack([torch.randperm(n, generator=shuffles[k]) for k in active]).to(dev)
        sums: dict[str, Tensor] = {}
        for begin in range(0, n, bs):
            idx = perms[:, begin : begin + bs]
            losses = batched_losses(weights, X_t[idx], Y_t[idx], idx, ctx)
            member_totals = sum(losses.values())
            for w in weights:  # zero_grad(set_to_none=True) without its bookkeeping
                w.grad = None
            member_totals.sum().backward()  # members share no weights: each gets its own gradient
            optimizer_step()
            w = idx.shape[1]
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.detach() * w
            sums["total"] = sums.get("total", 0.0) + member_totals.detach() * w
        epoch_means = {k: (v / n).tolist() for k, v in sums.items()}
        gc.collect(1)  # young generations only (automatic collection is paused during the fit)
        if has_val:
            forward.eval()
            with torch.no_grad():
                current = [w.detach() for w in weights]
                val_logits = torch.cat([batched_logits(current, chunk) for chunk in chunks_of(Xv, len(active))], dim=1)
        seconds = time.perf_counter() - t0
        stopped = []
        for slot, k in enumerate(active):
            row = {"epoch": epoch, **{name: v[slot] for name, v in epoch_means.items()}}
            if not math.isfinite(row["total"]):
                raise FloatingPointError(
                    f"batched training of {template.name!r} (seed {seeds[k]}) diverged at epoch {epoch} "
                    f"(loss={row['total']}{non_finite_terms(row)}); expected finite losses: lower 'lr' or check the "
                    "inputs' scale"
                )
            if has_val:
                check_finite_predictions(val_logits[slot], f"batched training of {template.name!r} (seed {seeds[k]})",
                                         epoch, "validation")
                score = _validation_score(val_logits[slot], Yv, cfg.monitor)
                row["val_score"] = score[-1]
                if _improves(score, best[k], cfg.monitor):
                    best[k], since_best[k], results[k].best_epoch = score, 0, epoch
                    best_state[k] = member_state(slot)
                else:
                    since_best[k] += 1
            row["seconds"] = seconds
            results[k].history.append(row)
            if has_val and since_best[k] >= cfg.patience:
                results[k].stopped_early = True
                stopped.append(slot)
        if len(stopped) == len(active):
            break
        if stopped:
            keep = [slot for slot in range(len(active)) if slot not in stopped]
            weights, optimizer = _compact(weights, optimizer, keep, cfg)
            optimizer_step = FusedAdamStep(optimizer)
            active = [active[slot] for slot in keep]
    if not has_val and results[0].history:  # no validation checked the last update: the models kept are its
        forward.eval()
        final = [w.detach() for w in weights]
        nan = torch.zeros(len(active), dtype=torch.bool, device=dev)
        with torch.no_grad():
            for chunk in chunks_of(X_t, len(active)):
                nan |= torch.isnan(batched_logits(final, chunk)).flatten(1).any(1)
        for slot, k in enumerate(active):
            if nan[slot]:
                raise predictions_diverged(f"batched training of {template.name!r} (seed {seeds[k]})",
                                           len(results[k].history) - 1, "training")
    for slot, k in enumerate(active):  # no validation: a member ends at its last state
        if best_state[k] is None:
            best_state[k] = member_state(slot)
    seconds = time.perf_counter() - start
    out = []
    for k, model in enumerate(members):
        model.load_state_dict(best_state[k], strict=True)
        model.eval()
        res = results[k]
        if has_val:
            res.best_score = best[k][-1]
        else:
            res.best_epoch = len(res.history) - 1
        res.epochs_run = len(res.history)
        res.seconds = seconds
        out.append((model, res))
    return out


def _meta_copy(method: Method) -> Method:
    """A weightless copy of ``method`` for ``functional_call`` (the members' stacked weights stand in)."""
    import copy

    return copy.deepcopy(method).to("meta")


def _compact(weights: list[Tensor], optimizer, keep: list[int], cfg: TrainConfig):
    """The stacked weights and optimizer state of the members at positions ``keep`` only."""
    rows = torch.tensor(keep, device=weights[0].device)
    new = [w.detach()[rows].clone().requires_grad_(True) for w in weights]
    new_opt = _make_optimizer(new, cfg)
    for new_group, old_group in zip(new_opt.param_groups, optimizer.param_groups, strict=True):
        new_group["lr"] = old_group["lr"]
    for old_w, new_w in zip(weights, new, strict=True):
        state = optimizer.state.get(old_w, {})
        new_opt.state[new_w] = {
            key: (value[rows] if value.ndim and value.shape[0] == old_w.shape[0] else value).clone()
            if torch.is_tensor(value) else value
            for key, value in state.items()
        }
    return new, new_opt
