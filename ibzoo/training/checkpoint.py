"""Checkpoints of a pretraining run: atomic, self-describing, resumable, never mixed with another run,
and made of JSON and safetensors files only, so that resuming never runs code from the folder.

Layout of an output folder ``DIR``::

    DIR/.lock                          held (flock) by the process that runs in DIR: OutputDirLock
    DIR/run_config.json                the resolved PretrainConfig, written once when the run starts
    DIR/checkpoints/epoch-0003/        one checkpoint (below)
    DIR/checkpoints/epoch-0003-step-00000750/   a checkpoint in the middle of epoch 4 (a --max-steps end)
    DIR/checkpoints/latest             the name of the newest complete checkpoint

and of one checkpoint::

    model.safetensors                  the model's state dict (the online classifier included)
    optimizer.json, optimizer.safetensors      the optimiser's state dict (ibzoo.training.state_files)
    scheduler.json                     the learning-rate schedule's state dict
    scaler.json                        the fp16 gradient scaler's state dict, under --mixed-precision fp16
    rng_state_P.json, rng_state_P.safetensors  Python, NumPy, torch and CUDA RNG states of process P
    trainer.json                       TrainerState (epoch, global step) and Accelerate's step counter

Accelerate's own ``save_state`` / ``load_state`` are not used: they write the optimiser, schedule, scaler
and RNG states with ``torch.save`` and read registered objects back with ``weights_only=False``, so a
crafted file in a checkpoint folder would run on resume. A folder holding any pickle-named file
(``*.pkl``, ``*.bin``, ...; an older ibzoo wrote those) is refused as a whole.

A checkpoint is written into a hidden sibling folder and renamed into place (``os.replace``) only when
complete; ``latest`` is rewritten the same way afterwards, so a crash at any moment leaves the previous
checkpoint intact and ``latest`` pointing at a complete one. A write that fails (a full disk) removes the
partial folder. Names sort in training order.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import random
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from ibzoo.atomic_files import write_atomically
from ibzoo.training.state_files import StateFileError, load_state_files, save_state_files, write_bytes
from ibzoo.weights import PICKLE_SUFFIXES, check_state_dict

__all__ = [
    "CHECKPOINTS_DIR",
    "LATEST_FILE",
    "RUN_CONFIG_FILE",
    "CheckpointManager",
    "CorruptCheckpointError",
    "OutputDirBusyError",
    "OutputDirLock",
    "TrainerState",
    "UnsafeCheckpointError",
    "backbone_weights",
    "check_output_dir",
    "checkpoint_name",
    "latest_checkpoint",
    "write_run_config",
]

logger = logging.getLogger(__name__)

RUN_CONFIG_FILE = "run_config.json"
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
_RUN_ARTEFACTS = (CHECKPOINTS_DIR, "model", "log.jsonl")


class CorruptCheckpointError(ValueError):
    """A checkpoint folder could not be loaded."""


class UnsafeCheckpointError(CorruptCheckpointError):
    """A checkpoint folder holds pickled files, which ibzoo never reads."""


@dataclass
class TrainerState:
    """Where training stands; saved inside every checkpoint (``trainer.json``) and restored on resume."""

    epoch: int = 0  # completed epochs
    global_step: int = 0  # completed optimisation steps

    def state_dict(self) -> dict[str, int]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        values = [state.get("epoch"), state.get("global_step")]
        if not all(type(value) is int and value >= 0 for value in values):
            raise ValueError(f"epoch and global_step must be counts (integers >= 0), got {values}.")
        self.epoch, self.global_step = values


def checkpoint_name(state: TrainerState, steps_per_epoch: int) -> str:
    """``epoch-EEEE`` at the end of an epoch, ``epoch-EEEE-step-SSSSSSSS`` within the next one."""
    name = f"epoch-{state.epoch:04d}"
    return (
        name if state.global_step == state.epoch * steps_per_epoch else f"{name}-step-{state.global_step:08d}"
    )


# Where the backbone's tensors sit in a checkpoint's model.safetensors: the state dict of
# ibzoo.training.loop.PretrainingModule, whose SSLModel is ``ssl_model`` and its encoder ``backbone``.
_BACKBONE_PREFIX = "ssl_model.backbone."


def backbone_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The backbone's tensors saved in one checkpoint folder (``DIR/checkpoints/epoch-0003``), under the
    backbone's own names: to score a run part-way (a learning curve) with the same loading checks as the
    final ``model/`` folder (:func:`ibzoo.weights.check_state_dict` runs when they are loaded).

    Raises:
        CorruptCheckpointError: no ``model.safetensors`` there, or one without backbone tensors.
    """
    model_file = Path(checkpoint) / "model.safetensors"
    if not model_file.is_file():
        raise CorruptCheckpointError(f"{model_file} is missing: is {checkpoint} a pretraining checkpoint?")
    weights = load_safetensors_bytes(model_file.read_bytes())
    backbone = {
        key.removeprefix(_BACKBONE_PREFIX): value
        for key, value in weights.items()
        if key.startswith(_BACKBONE_PREFIX)
    }
    if not backbone:
        raise CorruptCheckpointError(f"{model_file} holds no {_BACKBONE_PREFIX}* tensors.")
    return backbone


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint that ``folder/latest`` names (``folder`` is a run's ``checkpoints``), if it exists."""
    pointer = Path(folder) / LATEST_FILE
    if not pointer.is_file():
        return None
    target = Path(folder) / pointer.read_text().strip()
    return target if target.is_dir() else None


def _differences(saved: Any, current: Any, path: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = sorted(set(saved) | set(current))
        return [d for key in keys for d in _differences(saved.get(key), current.get(key), f"{path}{key}.")]
    return [] if saved == current else [f"{path[:-1]}: {saved!r} -> {current!r}"]


LOCK_FILE = ".lock"


class OutputDirBusyError(RuntimeError):
    """Another process holds the output folder."""


class OutputDirLock:
    """An exclusive claim on a run's output folder for the lifetime of the process that holds it.

    An OS-level lock (``fcntl.flock`` on ``DIR/.lock``), not a marker file: it is released when the process
    ends, however it ends, so a crash leaves no stale claim behind; the file only says who held it last
    (host and process id), for the refusal's message. Two runs started at once on one folder would
    otherwise both pass :func:`check_output_dir` before either wrote ``run_config.json``, and mix their
    checkpoints.
    """

    def __init__(self, output_dir: Path) -> None:
        if output_dir.exists() and not output_dir.is_dir():
            raise ValueError(
                f"--output-dir {output_dir} is a file, not a folder; pass a folder to write the run to."
            )
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / LOCK_FILE
        self._file = open(self.path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise OutputDirBusyError(
                f"--output-dir {output_dir} is in use by a running pretraining ({holder}); wait for it to "
                "end, or pass another --output-dir. Nothing of that run was touched."
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        self._file.flush()

    def release(self) -> None:
        """Give the folder up (the process's end does so too)."""
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


def run_differences(
    run_dir: Path, identity: dict[str, Any], upgrade: Callable[[dict[str, Any]], dict[str, Any]]
) -> list[str] | None:
    """How ``run_dir``'s ``run_config.json``, upgraded, differs from ``identity`` (any subset of a
    :meth:`~ibzoo.training.config.PretrainConfig.identity`), one ``"key.sub: old -> new"`` per setting; None
    when it has none."""
    saved_file = run_dir / RUN_CONFIG_FILE
    if not saved_file.is_file():
        return None
    try:
        saved = json.loads(saved_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{saved_file} is not valid JSON ({error}); restore or delete it.") from None
    return config_differences(saved, identity, upgrade)


def config_differences(
    saved: Any, identity: dict[str, Any], upgrade: Callable[[dict[str, Any]], dict[str, Any]]
) -> list[str]:
    """How a run's recorded configuration ``saved`` (``run_config.json``'s content, or the part of it a
    results record keeps), upgraded, differs from ``identity``: one ``"key.sub: old -> new"`` per setting."""
    saved = upgrade(saved) if isinstance(saved, dict) else {}
    return _differences({key: saved.get(key) for key in identity}, identity)


def check_output_dir(
    output_dir: Path,
    identity: dict[str, Any],
    resume: str,
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] = dict,
) -> None:
    """Refuse an output folder that holds another run, or a checkpoint to resume from that belongs to
    another run (it only reads: call it on every process).

    Args:
        output_dir: The run's folder; it need not exist yet.
        identity: The configuration without the settings a resumed run may change
            (:meth:`ibzoo.training.config.PretrainConfig.identity`), compared with ``run_config.json``.
        resume: "auto", "never" or a checkpoint path; "never" refuses a folder that holds checkpoints, and
            a path's run folder (``RUN/checkpoints/NAME``) must hold the same run's ``run_config.json``.
        upgrade: Brings a ``run_config.json`` that an older ibzoo wrote to today's form before comparing
            (:func:`ibzoo.training.config.upgraded_run_config`), so an upgrade does not orphan a run.

    Raises:
        ValueError: The folder holds another run, or checkpoints that "never" would overwrite, or the
            checkpoint to resume from is another run's (or cannot be checked).
    """
    differences = run_differences(output_dir, identity, upgrade)
    if differences:
        raise ValueError(
            f"{output_dir} holds another run; its {RUN_CONFIG_FILE} differs in: {'; '.join(differences)}."
            " Pass a new --output-dir, or the same settings to continue that run."
        )
    if differences is None and any((output_dir / name).exists() for name in _RUN_ARTEFACTS):
        raise ValueError(
            f"{output_dir} holds training output but no {RUN_CONFIG_FILE}, so it cannot be checked to be "
            "this run; pass a new --output-dir."
        )
    if resume == "never" and CheckpointManager.complete_checkpoints(output_dir / CHECKPOINTS_DIR):
        raise ValueError(
            f"{output_dir} already holds checkpoints of this run and --resume never would overwrite them; "
            "pass --resume auto to continue the run, or a new --output-dir to start over."
        )
    if resume not in ("auto", "never"):
        # The schedule, optimiser state and weights of a checkpoint fit only the run that wrote it.
        source_run = Path(resume).resolve().parent.parent
        differences = run_differences(source_run, identity, upgrade)
        if differences is None:
            raise ValueError(
                f"--resume {resume}: its run folder {source_run} has no {RUN_CONFIG_FILE}, so the checkpoint "
                "cannot be checked to be this run's; resume from a checkpoint under a run's checkpoints/."
            )
        if differences:
            raise ValueError(
                f"--resume {resume} is a checkpoint of another run; its {source_run / RUN_CONFIG_FILE} "
                f"differs in: {'; '.join(differences)}. Pass the settings it was trained with, or start over."
            )


def write_run_config(output_dir: Path, run_config: dict[str, Any]) -> None:
    """Write ``run_config.json`` unless it exists (the first invocation's configuration is the record)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if not (output_dir / RUN_CONFIG_FILE).is_file():
        write_atomically(
            output_dir / RUN_CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(run_config, indent=2) + "\n")
        )


def _rng_state() -> dict[str, Any]:
    """This process's random states: what Accelerate's ``save_state`` records, as plain values and tensors."""
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, key, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _same_keys(saved: Any, current: dict[str, Any], what: str) -> dict[str, Any]:
    """``saved`` if it is a state dict with ``current``'s keys (a schedule or scaler of this run's kind)."""
    if not isinstance(saved, dict) or set(saved) != set(current):
        found = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise StateFileError(f"the {what} state has keys {found}, not this run's {sorted(current)}.")
    return saved


class CheckpointManager:
    """Saves and restores a run's model, optimiser, schedule, scaler, RNG and trainer state in ``folder``.

    Args:
        accelerator: The run's Accelerator (process layout, mixed-precision scaler, step counter).
        folder: Where checkpoints go (``OUTPUT/checkpoints``).
        keep: How many of the newest checkpoints to keep.
        model: The prepared model; its unwrapped state dict is saved.
        optimizer: The prepared optimiser.
        scheduler: The prepared learning-rate schedule.
        state: The run's TrainerState.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        folder: Path,
        keep: int = 2,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: TrainerState,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep={keep} must be >= 1: the newest checkpoint is always kept.")
        self.accelerator, self.folder, self.keep = accelerator, Path(folder), keep
        self.model, self.optimizer, self.scheduler, self.state = model, optimizer, scheduler, state

    @staticmethod
    def complete_checkpoints(folder: Path) -> list[Path]:
        """Checkpoint folders that were renamed into place (so complete when written), oldest first."""
        if not folder.is_dir():
            return []
        return sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))

    def _write(self, folder: Path) -> None:
        """Write this process's share of a checkpoint into ``folder``: its RNG states, and on the main
        process everything else (the replicas hold the same model and optimiser)."""
        save_state_files(_rng_state(), folder, f"rng_state_{self.accelerator.process_index}")
        if not self.accelerator.is_main_process:
            return
        model_state = self.accelerator.unwrap_model(self.model).state_dict()
        tensors = {
            key: value.detach().to("cpu", copy=True).contiguous() for key, value in model_state.items()
        }
        write_bytes(folder / "model.safetensors", save_safetensors_bytes(tensors, metadata={"format": "pt"}))
        save_state_files(self.optimizer.state_dict(), folder, "optimizer")
        save_state_files(self.scheduler.state_dict(), folder, "scheduler")
        if self.accelerator.scaler is not None:
            save_state_files(self.accelerator.scaler.state_dict(), folder, "scaler")
        trainer = {**self.state.state_dict(), "accelerator_step": self.accelerator.step}
        save_state_files(trainer, folder, "trainer")

    def save(self, name: str) -> Path:
        """Save the state as ``folder/name`` atomically, point ``latest`` at it and prune old ones.

        A collective: call it on every process. A write that fails removes the partial folder and keeps
        the previous checkpoints; a full disk is reported as such.
        """
        final, tmp = self.folder / name, self.folder / f".{name}.tmp"
        if self.accelerator.is_main_process:
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during an earlier save
            tmp.mkdir()
        self.accelerator.wait_for_everyone()
        try:
            self._write(tmp)
        except OSError as error:
            shutil.rmtree(tmp, ignore_errors=True)
            if error.errno != errno.ENOSPC:
                raise
            kept = self.latest()
            kept_text = (
                f"the last complete checkpoint {kept} kept" if kept else "no earlier checkpoint exists"
            )
            raise OSError(
                errno.ENOSPC,
                f"No space left on device while writing checkpoint {final}: the partial folder was removed "
                f"and {kept_text}. Free disk space (or lower --keep-checkpoints), then run the same command "
                "again to continue.",
            ) from error
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            if final.exists():  # a corrupt checkpoint of the same step, skipped when resuming
                shutil.rmtree(final)
            os.replace(tmp, final)
            write_atomically(self.folder / LATEST_FILE, lambda tmp: tmp.write_text(name + "\n"))
            for old in self.complete_checkpoints(self.folder)[: -self.keep]:
                shutil.rmtree(old)
            logger.info("Saved checkpoint %s", final)
        self.accelerator.wait_for_everyone()
        return final

    def latest(self) -> Path | None:
        """The checkpoint ``latest`` names, if that folder exists."""
        return latest_checkpoint(self.folder)

    def _read(self, path: Path) -> None:
        pickles = sorted(p.name for p in path.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise UnsafeCheckpointError(
                f"Checkpoint {path} holds {', '.join(pickles)}: pickled files, which ibzoo never reads, "
                "because unpickling runs any code a file names. An ibzoo checkpoint is JSON and safetensors "
                "only (an older ibzoo wrote pickles). Resume from a checkpoint this ibzoo wrote, or start "
                "over with --resume never and a new --output-dir."
            )
        model = self.accelerator.unwrap_model(self.model)
        model_file = path / "model.safetensors"
        if not model_file.is_file():
            raise StateFileError(f"{model_file} is missing.")
        weights = load_safetensors_bytes(model_file.read_bytes())
        check_state_dict(weights, model.state_dict(), str(model_file))
        trainer = load_state_files(path, "trainer")
        optimizer = load_state_files(path, "optimizer")
        scheduler = _same_keys(load_state_files(path, "scheduler"), self.scheduler.state_dict(), "schedule")
        # A run resumed under another --mixed-precision (a resumable change) starts a fresh fp16 scaler.
        scaler = self.accelerator.scaler if (path / "scaler.json").is_file() else None
        scaler_state = (
            _same_keys(load_state_files(path, "scaler"), scaler.state_dict(), "scaler") if scaler else None
        )
        rng = load_state_files(path, f"rng_state_{self.accelerator.process_index}")
        step = trainer.pop("accelerator_step", None) if isinstance(trainer, dict) else None
        if type(step) is not int or step < 0:
            raise StateFileError(f"{path / 'trainer.json'} has no accelerator_step count.")
        # Everything is read and checked: now restore.
        model.load_state_dict(weights)
        self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(scheduler)
        if scaler is not None:
            scaler.load_state_dict(scaler_state)
        _set_rng_state(rng)
        self.state.load_state_dict(trainer)
        self.accelerator.step = step

    def load(self, path: Path) -> None:
        """Restore the state saved in ``path``; CorruptCheckpointError names the folder and the remedy."""
        try:
            self._read(Path(path))
        except UnsafeCheckpointError:
            raise
        except Exception as error:  # any failure to read a checkpoint means it cannot be used
            raise CorruptCheckpointError(
                f"Checkpoint {path} could not be loaded ({type(error).__name__}: {error}). Delete that "
                "folder to resume from an older checkpoint, or pass --resume never with a new --output-dir "
                "to start over."
            ) from error
        logger.info("Resumed from %s", path)

    def resume(self, resume: str) -> Path | None:
        """Restore the state as ``resume`` asks; returns the checkpoint used, None for a fresh start.

        "auto": the newest checkpoint in ``folder`` (``latest`` first); one that cannot be loaded is
        skipped with a warning for the next older one. "never": nothing. Else a checkpoint folder's path,
        loaded as it is.
        """
        if resume == "never":
            return None
        if resume != "auto":
            if not Path(resume).is_dir():
                raise CorruptCheckpointError(
                    f"--resume {resume}: no such checkpoint folder; pass a folder under OUTPUT/checkpoints, "
                    "or auto."
                )
            self.load(Path(resume))
            return Path(resume)
        candidates = self.complete_checkpoints(self.folder)[::-1]
        latest = self.latest()
        if latest is not None:
            candidates = [latest] + [path for path in candidates if path != latest]
        elif candidates:
            logger.warning(
                "%s names no existing checkpoint; trying the newest folders.", self.folder / LATEST_FILE
            )
        errors = []
        for candidate in candidates:
            try:
                self.load(candidate)
            except CorruptCheckpointError as error:
                logger.warning("%s Trying an older checkpoint.", error)
                errors.append(str(error))
                continue
            return candidate
        if errors:
            raise CorruptCheckpointError(
                f"No checkpoint in {self.folder} could be loaded:\n" + "\n".join(errors)
            )
        return None
