"""Training checkpoints: an interrupted fit resumes to the same final weights, bit for bit on CPU. Never pickle.

A checkpoint directory holds one fit (``MultiLabelClassifier(checkpoint_dir=...)``, ``mlkd fit
--checkpoint-dir``); each ``Trainer.fit`` of that fit is a stage, numbered in call order (a multi-stage method
such as "kdtea" has several)::

    checkpoint.json                       the fit's fingerprint: resolved config hash, data shapes, data hash
    stage<k>.json + stage<k>.e<E>.safetensors      stage k in progress after E epochs (the JSON commits it)
    stage<k>.done.json + stage<k>.done.safetensors  stage k finished: final weights and its TrainResult

Tensors (weights, the best state so far, non-persistent buffers, optimizer state flattened to
``optim.<param>.<key>``, RNG states as uint8 tensors: torch's CPU generator, CUDA's when used, the trainer's
shuffle and method generators) go to safetensors; everything else (epoch, early-stopping score and
patience counter, history, optimizer hyper-parameters, the stage fingerprint, the tensors file's SHA256,
the CPU thread count) to JSON. Every file is written to a temporary name, flushed and renamed: the stage
JSON, renamed last, is the commit point, so a kill at any moment leaves the previous checkpoint intact.

Resuming restores a finished stage without training it and continues an unfinished one from its last
checkpoint; a checkpoint of another configuration or other data is refused with a ValueError. Fingerprints hold
identities, not spellings: the device a fit trains on (``"auto"`` as the device it picks), a saved model's folder
as the absolute, symlink-free path it names. A stage record of an earlier mlkd, which held them as typed, is
brought to that form before it is compared (``_upgrade_stage``).
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

FORMAT = "mlkd-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "checkpoint.json"
#: Training settings not part of a fingerprint: ``progress`` changes the display only; ``num_threads`` changes
#: float rounding, so a resume on another thread count (another machine's cores) goes on with a warning that its
#: model is not bit-identical (each stage record keeps the count it was written with).
_NOT_FINGERPRINTED = ("progress", "num_threads")
#: How to start over from a corrupted checkpoint: the files mlkd wrote, not a user's own beside them (a backup copy
#: such as stage0.e000004.bak.safetensors is kept, as the checkpoint's own clean-up keeps it).
START_OVER = ("remove the files mlkd wrote there to start over: checkpoint.json, stageK.json, stageK.done.json, "
              "stageK.done.safetensors, stageK.eNNNNNN.safetensors")
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # pickle protocols 2-5 (torch.save: zip)


@dataclasses.dataclass
class LoopState:
    """What the training loop needs besides the modules: its result so far and the early-stopping state."""

    result: Any  # mlkd.trainer.TrainResult
    best_state: dict[str, torch.Tensor] | None
    best: tuple
    since_best: int
    seconds: float


# ---------------------------------------------------------------------------------------------------
# fingerprints
# ---------------------------------------------------------------------------------------------------
def _as_array(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def data_fingerprint(*arrays) -> dict:
    """Shapes and a BLAKE2b hash of the arrays' bytes (None entries are skipped): cheap next to one epoch."""
    digest = hashlib.blake2b(digest_size=16)
    shapes = []
    for a in arrays:
        if a is None:
            shapes.append(None)
            continue
        arr = np.ascontiguousarray(_as_array(a))
        shapes.append(list(arr.shape))
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr.tobytes())
    return {"data_shape": shapes, "data_hash": digest.hexdigest()}


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def fingerprint(config: dict, *arrays) -> dict:
    """``{"config": ..., "config_hash": ..., "data_shape": ..., "data_hash": ...}`` of a fit."""
    config = json.loads(_canonical(config))
    return {"config": config, "config_hash": hashlib.sha256(_canonical(config).encode()).hexdigest()[:16],
            **data_fingerprint(*arrays)}


def device_identity(device) -> str:
    """The device a fit trains on, as a fingerprint holds it: ``"auto"`` as the device it picks on this machine
    (``"cpu"`` without CUDA, else ``"cuda"``), a ``torch.device`` as its name, so that "auto" and the device it
    picks are one fit. ``"cuda"`` and ``"cuda:0"`` stay apart, as the trainer's device (``str(device)``) always
    kept them; a value torch does not parse is returned as given."""
    from .trainer import resolve_device

    try:
        return str(resolve_device(device))
    except (RuntimeError, TypeError, ValueError):
        return str(device)


def train_identity(config) -> dict:
    """A ``TrainConfig``'s settings as a fingerprint holds them: resolved values (the device it trains on, not how
    it was named: ``device_identity``), less those that change speed or display only and the ``ADDED_SETTINGS`` at
    the value that reproduces earlier fits. Not a benchmark cell's key, which keeps the device as spelled."""
    from .trainer import identity_settings

    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_FINGERPRINTED}
    settings["device"] = device_identity(settings["device"])
    return identity_settings(settings)


def _stage_config(method: str, method_config: dict, train: dict, device) -> dict:
    """What a stage's fingerprint hashes: its method's config with a saved model's folder (``teacher_dir``,
    ``model_dir``) as the absolute, symlink-free path it names, its training settings (``train_identity``) and
    the device it trains on."""
    from .io import absolute_model_dirs

    return {"method": method, "method_config": absolute_model_dirs(method_config), "train": train,
            "device": device_identity(device)}


def _upgrade_stage(saved: dict) -> dict:
    """A stage fingerprint an earlier mlkd wrote (until 2026-12-04) in today's form: it held the device
    and a saved model's folder as typed ("auto", "./teacher/"); its "device" entry held the resolved device, which
    an "auto" stands for. A fingerprint already in today's form is returned as it is (the same hash)."""
    config = saved.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("train"), dict) \
            or not isinstance(config.get("method_config"), dict):
        return saved
    train = dict(config["train"])
    if train.get("device") == "auto" and isinstance(config.get("device"), str):
        train["device"] = config["device"]
    train["device"] = device_identity(train.get("device"))
    upgraded = fingerprint(_stage_config(config.get("method"), config["method_config"], train, config.get("device")))
    return {**saved, "config": upgraded["config"], "config_hash": upgraded["config_hash"]}


def flat_keys(config: dict, prefix: str = "") -> dict:
    """A nested config as ``{"train.max_epochs": 2, ...}``: nested keys joined by dots."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_fingerprint(saved: dict, current: dict, where: Path) -> None:
    if not isinstance(saved, dict):
        raise ValueError(f"{where} has no valid fingerprint; the checkpoint is corrupted ({START_OVER})")
    refuse = f"checkpoint {where} was written by a different fit"
    expected = "expected the interrupted fit's configuration and data, or an empty checkpoint directory"
    if saved.get("config_hash") != current["config_hash"]:
        from .methods.base import ADDED_PARAMS

        def shown(flat: dict, key: str) -> str:
            name = key.rsplit(".", 1)[-1]
            if key not in flat and name in ADDED_PARAMS:  # left out of a fingerprint at its earlier value
                return repr(ADDED_PARAMS[name])
            return repr(flat.get(key))

        old, new = flat_keys(saved.get("config") or {}), flat_keys(current["config"])
        diff = [f"{k}={shown(old, k)}→{shown(new, k)}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        what = ", ".join(diff[:5]) + (", …" if len(diff) > 5 else "") if diff else "config hash differs"
        raise ValueError(f"{refuse}: its configuration differs ({what}); {expected}")
    if saved.get("data_shape") != current["data_shape"]:
        raise ValueError(f"{refuse}: its data had shapes {saved.get('data_shape')}, this fit's data has "
                         f"{current['data_shape']}; {expected}")
    if saved.get("data_hash") != current["data_hash"]:
        raise ValueError(f"{refuse}: its data had the same shapes but other values (data hash "
                         f"{saved.get('data_hash')} ≠ {current['data_hash']}); {expected}")


# ---------------------------------------------------------------------------------------------------
# files: atomic writes, pickle-free reads
# ---------------------------------------------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _process_umask() -> int:
    """This process's umask, read without changing it where Linux tells it (/proc), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The permissions a plain ``open(path, "w")`` gives a new file: 0666 less the umask."""
    return 0o666 & ~_process_umask()


def temporary_file(path: Path) -> str:
    """A new empty file beside ``path`` to be renamed over it, with ``file_mode()`` permissions (``mkstemp``
    makes it private, 0600, which the rename would carry over to the user's file). A writer that replaces
    the file (safetensors does) must set them again: ``os.chmod(tmp, file_mode())``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    return tmp


def _atomic_write(path: Path, write) -> None:
    """``write(tmp_path)``, fsync, rename over ``path``: readers see the old file or the new one, never half."""
    tmp = None
    try:
        tmp = temporary_file(path)  # in the try: a directory made read-only (or full) mid-fit fails here first
        write(tmp)  # bytes written into the file temporary_file made: its permissions stay
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise ValueError(f"cannot write checkpoint file {path}: {exc.strerror or exc}; expected a writable "
                         "checkpoint directory") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _write_json(path: Path, obj: dict) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)

    _atomic_write(path, write)


def refuse_pickle(path: Path, head: bytes, expected: str = "a valid mlkd checkpoint file") -> None:
    """A ValueError if ``head`` (a file's first bytes) starts a pickle or a torch.save archive: never load those."""
    if head[8:9] == b"{":
        return  # a safetensors file: 8-byte header length, then its JSON header
    if head[:2] in _PICKLE_MAGIC or head.startswith(b"PK\x03\x04"):
        raise ValueError(f"{path} is not {expected}: it is a pickle or torch.save file, which mlkd never loads "
                         "(unpickling can run arbitrary code); expected the safetensors/JSON files mlkd writes")


def _read_json(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read checkpoint file {path}: {exc.strerror or exc}") from None
    refuse_pickle(path, raw[:16])
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint file {path} is not valid JSON ({exc}); the checkpoint is corrupted "
                         f"({START_OVER})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path} is not an mlkd checkpoint file (format field {FORMAT!r} missing)")
    version = obj.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{path} has an invalid format_version {version!r}; the checkpoint is corrupted "
                         f"({START_OVER})")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format version {version}, newer than this mlkd reads "
                         f"(≤ {FORMAT_VERSION}); upgrade mlkd to resume it")
    return obj


def _read_tensors(path: Path, sha256: str | None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file whose SHA256 the committed JSON recorded; safetensors never runs code."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"checkpoint tensors {path} are missing; the checkpoint is corrupted ({START_OVER})") from None
    except OSError as exc:
        raise ValueError(f"cannot read checkpoint tensors {path}: {exc.strerror or exc}") from None
    refuse_pickle(path, raw[:16])
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise ValueError(f"checkpoint tensors {path} do not match the SHA256 their JSON recorded; the "
                         f"checkpoint is corrupted ({START_OVER})")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"checkpoint tensors {path} are not a valid safetensors file ({exc}); the checkpoint "
                         f"is corrupted ({START_OVER})") from None


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write atomically; returns the file's SHA256 for the JSON that commits it."""
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    data = safetensors_bytes(tensors, metadata={"format": FORMAT})
    _atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------
# module, optimizer and RNG state as (tensors, JSON)
# ---------------------------------------------------------------------------------------------------
def _extra_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Non-persistent buffers (training-only state such as PS-KD's previous predictions): not in state_dict."""
    persistent = set(module.state_dict())
    return {name: b for name, b in module.named_buffers() if name not in persistent and b is not None}


def _module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    tensors.update({f"buffer.{k}": v for k, v in _extra_buffers(module).items()})
    return tensors


def _load_module(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        module.load_state_dict(state, strict=True)
        device = next(iter(module.state_dict().values()), torch.empty(0)).device
        for name, value in tensors.items():
            if name.startswith("buffer."):
                owner, _, leaf = name[len("buffer."):].rpartition(".")
                setattr(module.get_submodule(owner), leaf, value.to(device))
    except (RuntimeError, AttributeError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"checkpoint {path} does not fit this model ({first}); the checkpoint is corrupted") from None


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, saved: dict, path: Path) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            index, _, key = name[len("optim."):].partition(".")
            state.setdefault(int(index), {})[key] = value
    for index, values in saved.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    current = optimizer.state_dict()["param_groups"]
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(current):
        raise ValueError(f"checkpoint {path} has optimizer state for another model; the checkpoint is corrupted")
    # JSON has no tuples: give back the types the optimizer uses (betas)
    groups = [{k: tuple(v) if isinstance(now.get(k), tuple) else v for k, v in g.items()}
              for g, now in zip(groups, current, strict=True)]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ValueError(f"checkpoint {path} has optimizer state for another model ({exc}); the checkpoint is "
                         "corrupted") from None


def _rng_tensors(generators: tuple[torch.Generator, ...], device: torch.device) -> dict[str, torch.Tensor]:
    tensors = {"rng.torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.torch_cuda"] = torch.cuda.get_rng_state(device)
    tensors.update({f"rng.generator{i}": g.get_state() for i, g in enumerate(generators)})
    return tensors


def _load_rng(tensors: dict, generators: tuple[torch.Generator, ...], device: torch.device, path: Path) -> None:
    try:
        torch.set_rng_state(tensors["rng.torch_cpu"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.torch_cuda"], device)
        for i, g in enumerate(generators):
            g.set_state(tensors[f"rng.generator{i}"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise ValueError(f"checkpoint {path} has no usable RNG state ({exc}); the checkpoint is corrupted") from None


# ---------------------------------------------------------------------------------------------------
# the checkpointer
# ---------------------------------------------------------------------------------------------------
_STAGE_FILE = re.compile(r"^stage\d+(\.done)?\.json$")
_STAGE_TENSORS = re.compile(r"^stage\d+\.(done|e\d+)\.safetensors$")


def recorded_threads(directory) -> tuple[set[int], bool]:
    """``(counts, unknown)``: the CPU thread counts the training kept in a checkpoint directory was done on, from
    its stage records. ``unknown``: some of it was done on a count no record names (a record of an mlkd before
    records kept the count, or one whose training was already resumed on another count: ``mixed_threads``).
    A directory without stage records gives ``(set(), False)``; an unreadable record is skipped (resuming it
    refuses it with the reason)."""
    counts: set[int] = set()
    unknown = False
    folder = Path(directory)
    if not folder.is_dir():
        return counts, unknown
    for path in folder.iterdir():
        if not _STAGE_FILE.match(path.name):
            continue
        try:
            record = _read_json(path)
        except ValueError:
            continue
        threads = record.get("num_threads")
        if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1:
            counts.add(threads)
        else:
            unknown = True
        unknown = unknown or record.get("mixed_threads") is True
    return counts, unknown


def _own_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file a checkpoint write makes (``.{file}.{random}.tmp`` for the manifest
    or a stage file, ``.probe.{random}.tmp``): only those are removed as leftovers, never a user's own file."""
    base = name[1:].rsplit(".", 2)[0] if name.startswith(".") and name.count(".") >= 3 else ""
    return base in (MANIFEST, "probe") or bool(_STAGE_FILE.match(base) or _STAGE_TENSORS.match(base))


class Checkpointer:
    """Checkpoints of one fit in ``directory``, every ``every`` epochs; ``resume`` continues what is there.

    ``min_seconds`` > 0 also waits that long (wall clock, from the stage's start or its last checkpoint)
    between checkpoints: long fits lose at most that much to a kill, short ones only write each stage's
    final weights.
    When the fit ends is the same either way (a resume is bit-identical from any checkpoint).
    ``restored_seconds`` sums the training seconds of what a resume found (finished stages and the last
    checkpoint of an unfinished one), so a resumed fit can report its whole training time.

    Without ``resume`` a directory that already holds a checkpoint is refused (nothing is overwritten); with
    it, an empty or new directory simply starts a fresh fit. ``fingerprint`` (see :func:`fingerprint`)
    describes the whole fit; a saved one that differs is refused. ``upgrade`` (optional) turns a saved fingerprint
    that an earlier mlkd wrote in another form into today's before they are compared (a ValueError or TypeError
    from it refuses the checkpoint). Each ``Trainer.fit`` of the fit asks :meth:`stage` for its own
    :class:`StageCheckpoint`.
    """

    def __init__(self, directory, every: int = 1, resume: bool = False, fingerprint: dict | None = None,
                 min_seconds: float = 0.0, upgrade=None) -> None:
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"checkpoint_every={every!r} is invalid; expected an integer ≥ 1")
        check_seconds(min_seconds)
        self.directory, self.every, self.resume = check_directory(directory), int(every), bool(resume)
        self.min_seconds = float(min_seconds)
        self.restored_seconds = 0.0
        self._next_stage = 0
        # (count, record, mixed) of a record trained on another thread count than its stage runs on now (mixed: by a
        # fit that had itself resumed such a record, so that no thread count reproduces it)
        self._other_threads: tuple[int, Path, bool] | None = None
        self._warned_threads = False
        manifest = self.directory / MANIFEST
        existing = manifest.exists() or any(_STAGE_FILE.match(p.name) for p in self.directory.iterdir())
        if existing and not self.resume:
            raise ValueError(f"checkpoint directory {self.directory} already holds a checkpoint; expected resume=True "
                             "(--resume) to continue that fit, or an empty directory")
        for leftover in self.directory.glob(".*.tmp"):  # a write of ours interrupted before its rename
            if _own_temporary(leftover.name):
                leftover.unlink(missing_ok=True)
        if fingerprint is not None:
            if manifest.exists():
                saved = _read_json(manifest).get("fingerprint")
                if upgrade is not None and isinstance(saved, dict) and saved.get("config_hash") != fingerprint[
                        "config_hash"]:
                    saved = _upgraded(saved, upgrade, manifest)
                _check_fingerprint(saved, fingerprint, manifest)
            else:
                from . import __version__

                _write_json(manifest, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                       "mlkd_version": __version__, "fingerprint": fingerprint})

    def stage(self, method, config, device: torch.device, X, Y, X_val=None, Y_val=None) -> StageCheckpoint:
        """The checkpoint of the next ``Trainer.fit`` of this fit (stages are numbered in call order)."""
        from .methods.base import config_identity

        stage_config = _stage_config(method.name, config_identity(method.config), train_identity(config), device)
        index = self._next_stage
        self._next_stage += 1
        return StageCheckpoint(self, index, method.name, fingerprint(stage_config, X, Y, X_val, Y_val), device)

    def _warn_other_threads(self) -> None:
        """Before a stage trains: a warning, once, if what it continues was trained on another CPU thread count."""
        if self._other_threads is None or self._warned_threads:
            return
        self._warned_threads = True
        threads, path, mixed = self._other_threads
        if mixed:
            warnings.warn(f"checkpoint {path} holds training already resumed on another CPU thread count: it resumes, "
                          "but float rounding depends on the thread count, so its model is not bit-identical to an "
                          "uninterrupted fit's on any count; expected an empty checkpoint directory (a fresh fit) for "
                          "that", stacklevel=2)
            return
        warnings.warn(f"checkpoint {path} was written by a fit on {threads} CPU thread(s) and this one runs on "
                      f"{torch.get_num_threads()}: it resumes, but float rounding depends on the thread count, so its "
                      f"model is not bit-identical to an uninterrupted fit's; expected num_threads={threads} "
                      f"(--threads {threads}) for that", stacklevel=2)


def _upgraded(saved: dict, upgrade, where: Path) -> dict:
    """``upgrade(saved)``: a fingerprint an earlier mlkd wrote, in today's form (one already in it unchanged)."""
    try:
        return upgrade(saved)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"checkpoint {where} was written by an earlier mlkd whose recorded configuration this one "
                         f"cannot resolve ({exc}); expected an empty checkpoint directory to start over") from None


class StageCheckpoint:
    """The checkpoint files of one ``Trainer.fit`` (one stage); the trainer calls its four methods."""

    def __init__(self, owner: Checkpointer, index: int, method: str, fingerprint: dict, device) -> None:
        self.owner, self.every, self.method = owner, owner.every, method
        self.fingerprint, self.device = fingerprint, device
        self._last_save = time.perf_counter()
        self.directory, self.name = owner.directory, f"stage{index}"
        self.record = self.directory / f"{self.name}.json"
        self.done_record = self.directory / f"{self.name}.done.json"

    def _header(self, kind: str) -> dict:
        # mixed_threads: this fit continues training done on another thread count, so the record's state matches
        # no uninterrupted fit, also for a later resume on the count it was written with (that one warns too)
        mixed = {"mixed_threads": True} if self.owner._other_threads is not None else {}
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "stage": self.name,
                "method": self.method, "fingerprint": self.fingerprint, "num_threads": torch.get_num_threads(), **mixed}

    def _read(self, path: Path) -> dict:
        record = _read_json(path)
        saved = record.get("fingerprint")
        if isinstance(saved, dict) and saved.get("config_hash") != self.fingerprint["config_hash"]:
            saved = _upgrade_stage(saved)  # written by an earlier mlkd: the device and folders as typed
        _check_fingerprint(saved, self.fingerprint, path)
        threads = record.get("num_threads")  # absent in records of earlier mlkd versions
        other = isinstance(threads, int) and not isinstance(threads, bool) and threads != torch.get_num_threads()
        mixed = record.get("mixed_threads") is True
        if self.device.type == "cpu" and (other or mixed):
            self.owner._other_threads = (threads, path, mixed)
        return record

    # -- a finished stage ------------------------------------------------------------------------------
    def load_finished(self, method):
        """The TrainResult of this stage if it finished before (its final weights loaded into ``method``)."""
        if not self.done_record.exists():
            return None
        from .trainer import TrainResult

        record = self._read(self.done_record)
        tensors = _read_tensors(self.directory / str(record.get("tensors")), record.get("tensors_sha256"))
        _load_module(method, tensors, self.done_record)
        method.eval()
        result = _result(record.get("result"), self.done_record, TrainResult)
        self.owner.restored_seconds += float(result.seconds or 0.0)
        return result

    def finish(self, method, result) -> None:
        """Keep the stage's final weights and result; drop its in-progress checkpoint."""
        tensors_path = self.directory / f"{self.name}.done.safetensors"
        sha = _write_tensors(tensors_path, _module_tensors(method))
        _write_json(self.done_record, {**self._header("finished"), "tensors": tensors_path.name,
                                       "tensors_sha256": sha, "result": dataclasses.asdict(result)})
        self.record.unlink(missing_ok=True)
        self._remove_progress_tensors(keep=None)
        _fsync_dir(self.directory)

    # -- a stage in progress ---------------------------------------------------------------------------
    def restore(self, method, optimizer, generators) -> LoopState | None:
        """Load the last checkpoint of this stage into the modules and generators; None if there is none."""
        record = self._read(self.record) if self.record.exists() else None
        self.owner._warn_other_threads()  # this stage trains on what stages and epochs of other threads made
        if record is None:
            return None
        from .trainer import TrainResult

        path = self.record
        tensors = _read_tensors(self.directory / str(record.get("tensors")), record.get("tensors_sha256"))
        _load_module(method, tensors, path)
        _load_optimizer(optimizer, tensors, record.get("optimizer") or {}, path)
        _load_rng(tensors, generators, self.device, path)
        best_state = None
        if record.get("has_best_state"):
            best_state = {k[len("best."):]: v.to(self.device) for k, v in tensors.items() if k.startswith("best.")}
        try:
            best = tuple(float(v) for v in record["best"])
            since_best, seconds = int(record["since_best"]), float(record["seconds"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"checkpoint {path} lacks the early-stopping state; the checkpoint is corrupted") from None
        self.owner.restored_seconds += seconds
        return LoopState(_result(record.get("result"), path, TrainResult), best_state, best, since_best, seconds)

    def save(self, epoch: int, method, optimizer, generators, loop: LoopState) -> None:
        """Checkpoint after ``epoch`` (0-based) if it is due (every ``every`` epochs, ``min_seconds`` apart)."""
        if (epoch + 1) % self.every or time.perf_counter() - self._last_save < self.owner.min_seconds:
            return
        optim_tensors, optim_json = _optimizer_state(optimizer)
        tensors = {**_module_tensors(method), **optim_tensors, **_rng_tensors(generators, self.device)}
        if loop.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in loop.best_state.items()})
        tensors_path = self.directory / f"{self.name}.e{epoch + 1:06d}.safetensors"
        sha = _write_tensors(tensors_path, tensors)
        record = {**self._header("progress"), "epochs_done": epoch + 1, "tensors": tensors_path.name,
                  "tensors_sha256": sha, "best": list(loop.best), "since_best": loop.since_best,
                  "has_best_state": loop.best_state is not None, "seconds": loop.seconds,
                  "optimizer": optim_json, "result": dataclasses.asdict(loop.result)}
        _write_json(self.record, record)  # the commit point
        self._remove_progress_tensors(keep=tensors_path.name)
        _fsync_dir(self.directory)
        self._last_save = time.perf_counter()

    def _remove_progress_tensors(self, keep: str | None) -> None:
        """Remove this stage's earlier epoch tensors: names as ``save`` writes them only, never a user's file that
        the glob also matches (a backup copy such as ``stage0.e000004.bak.safetensors``)."""
        ours = re.compile(rf"^{re.escape(self.name)}\.e\d+\.safetensors$")
        for old in self.directory.glob(f"{self.name}.e*.safetensors"):
            if old.name != keep and ours.match(old.name):
                old.unlink(missing_ok=True)


def _result(saved, path: Path, result_cls):
    fields = {f.name for f in dataclasses.fields(result_cls)}
    if not isinstance(saved, dict) or not isinstance(saved.get("history"), list) or set(saved) - fields:
        raise ValueError(f"checkpoint {path} has no valid training result; the checkpoint is corrupted")
    result = result_cls(**saved)
    result.best_score = float(result.best_score) if result.best_score is not None else math.nan
    return result


def check_seconds(seconds) -> float:
    """``checkpoint_seconds`` as a float; a ValueError unless it is a finite number ≥ 0."""
    try:  # float() first: math.isfinite(10**400) is an OverflowError
        number = float(seconds)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating)) \
            or not math.isfinite(number) or number < 0:
        from .methods.base import shown

        raise ValueError(f"checkpoint_seconds={shown(seconds)} is invalid; expected a number of seconds ≥ 0")
    return number


def check_directory(directory) -> Path:
    """The checkpoint directory as a Path, created if missing; a ValueError unless it is a writable directory."""
    if not isinstance(directory, (str, os.PathLike)) or not str(directory):
        raise ValueError(f"checkpoint_dir={directory!r} is invalid; expected a directory path")
    path = Path(directory).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"checkpoint directory {path} is a file; expected a directory path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"cannot write checkpoint directory {path}: {exc.strerror or exc}; expected a writable "
                         "directory") from None
    return path


# ---------------------------------------------------------------------------------------------------
# the active checkpointer (how the estimator reaches every stage's Trainer.fit)
# ---------------------------------------------------------------------------------------------------
_ACTIVE: contextvars.ContextVar[Checkpointer | None] = contextvars.ContextVar("mlkd_checkpointer", default=None)


@contextmanager
def checkpointing(checkpointer: Checkpointer | None):
    """Within the block, every ``Trainer.fit`` not given ``checkpoint=`` uses ``checkpointer`` (None: none)."""
    token = _ACTIVE.set(checkpointer)
    try:
        yield checkpointer
    finally:
        _ACTIVE.reset(token)


def active_checkpointer() -> Checkpointer | None:
    return _ACTIVE.get()
