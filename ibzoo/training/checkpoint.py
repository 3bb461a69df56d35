"""Checkpoints of a pretraining run: atomic, self-describing, resumable, and never mixed with another run.

Layout of an output folder ``DIR``::

    DIR/run_config.json                the resolved PretrainConfig, written once when the run starts
    DIR/checkpoints/epoch-0003/        accelerator.save_state: model, optimiser, scheduler, scaler, RNG
                                       states and the TrainerState (epoch, global step)
    DIR/checkpoints/epoch-0003-step-00000750/   a checkpoint in the middle of epoch 4 (a --max-steps end)
    DIR/checkpoints/latest             the name of the newest complete checkpoint

A checkpoint is written into a hidden sibling folder and renamed into place (``os.replace``) only when
complete; ``latest`` is rewritten the same way afterwards, so a crash at any moment leaves the previous
checkpoint intact and ``latest`` pointing at a complete one. Names sort in training order.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator

__all__ = [
    "CHECKPOINTS_DIR",
    "LATEST_FILE",
    "RUN_CONFIG_FILE",
    "CheckpointManager",
    "CorruptCheckpointError",
    "TrainerState",
    "check_output_dir",
    "checkpoint_name",
    "write_run_config",
]

logger = logging.getLogger(__name__)

RUN_CONFIG_FILE = "run_config.json"
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
_RUN_ARTEFACTS = (CHECKPOINTS_DIR, "model", "log.jsonl")


class CorruptCheckpointError(ValueError):
    """A checkpoint folder could not be loaded."""


@dataclass
class TrainerState:
    """Where training stands; registered with ``accelerator.register_for_checkpointing`` so that it is
    saved inside every checkpoint and restored by ``load_state``."""

    epoch: int = 0  # completed epochs
    global_step: int = 0  # completed optimisation steps

    def state_dict(self) -> dict[str, int]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])


def checkpoint_name(state: TrainerState, steps_per_epoch: int) -> str:
    """``epoch-EEEE`` at the end of an epoch, ``epoch-EEEE-step-SSSSSSSS`` within the next one."""
    name = f"epoch-{state.epoch:04d}"
    return (
        name if state.global_step == state.epoch * steps_per_epoch else f"{name}-step-{state.global_step:08d}"
    )


def _write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def _differences(saved: Any, current: Any, path: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = sorted(set(saved) | set(current))
        return [d for key in keys for d in _differences(saved.get(key), current.get(key), f"{path}{key}.")]
    return [] if saved == current else [f"{path[:-1]}: {saved!r} -> {current!r}"]


def check_output_dir(output_dir: Path, identity: dict[str, Any], resume: str) -> None:
    """Refuse an output folder that holds another run (it only reads: call it on every process).

    Args:
        output_dir: The run's folder; it need not exist yet.
        identity: The configuration without the settings a resumed run may change
            (:meth:`ibzoo.training.config.PretrainConfig.identity`), compared with ``run_config.json``.
        resume: "auto", "never" or a checkpoint path; "never" refuses a folder that holds checkpoints.

    Raises:
        ValueError: The folder holds another run, or checkpoints that "never" would overwrite.
    """
    saved_file = output_dir / RUN_CONFIG_FILE
    if saved_file.is_file():
        try:
            saved = json.loads(saved_file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{saved_file} is not valid JSON ({error}); restore or delete it.") from None
        differences = _differences({key: saved.get(key) for key in identity}, identity)
        if differences:
            raise ValueError(
                f"{output_dir} holds another run; its {RUN_CONFIG_FILE} differs in: {'; '.join(differences)}."
                " Pass a new --output-dir, or the same settings to continue that run."
            )
    elif any((output_dir / name).exists() for name in _RUN_ARTEFACTS):
        raise ValueError(
            f"{output_dir} holds training output but no {RUN_CONFIG_FILE}, so it cannot be checked to be "
            "this run; pass a new --output-dir."
        )
    if resume == "never" and CheckpointManager.complete_checkpoints(output_dir / CHECKPOINTS_DIR):
        raise ValueError(
            f"{output_dir} already holds checkpoints of this run and --resume never would overwrite them; "
            "pass --resume auto to continue the run, or a new --output-dir to start over."
        )


def write_run_config(output_dir: Path, run_config: dict[str, Any]) -> None:
    """Write ``run_config.json`` unless it exists (the first invocation's configuration is the record)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if not (output_dir / RUN_CONFIG_FILE).is_file():
        _write_text_atomically(output_dir / RUN_CONFIG_FILE, json.dumps(run_config, indent=2) + "\n")


class CheckpointManager:
    """Saves and restores ``accelerator``'s state (everything prepared or registered) in ``folder``."""

    def __init__(self, accelerator: Accelerator, folder: Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep={keep} must be >= 1: the newest checkpoint is always kept.")
        self.accelerator, self.folder, self.keep = accelerator, Path(folder), keep

    @staticmethod
    def complete_checkpoints(folder: Path) -> list[Path]:
        """Checkpoint folders that were renamed into place (so complete when written), oldest first."""
        if not folder.is_dir():
            return []
        return sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))

    def save(self, name: str) -> Path:
        """Save the state as ``folder/name`` atomically, point ``latest`` at it and prune old ones.

        A collective: call it on every process.
        """
        final, tmp = self.folder / name, self.folder / f".{name}.tmp"
        if self.accelerator.is_main_process:
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during an earlier save
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            if final.exists():  # a corrupt checkpoint of the same step, skipped when resuming
                shutil.rmtree(final)
            os.replace(tmp, final)
            _write_text_atomically(self.folder / LATEST_FILE, name + "\n")
            for old in self.complete_checkpoints(self.folder)[: -self.keep]:
                shutil.rmtree(old)
            logger.info("Saved checkpoint %s", final)
        self.accelerator.wait_for_everyone()
        return final

    def latest(self) -> Path | None:
        """The checkpoint ``latest`` names, if that folder exists."""
        pointer = self.folder / LATEST_FILE
        if not pointer.is_file():
            return None
        target = self.folder / pointer.read_text().strip()
        return target if target.is_dir() else None

    def load(self, path: Path) -> None:
        """Restore the state saved in ``path``; CorruptCheckpointError names the folder and the remedy."""
        try:
            self.accelerator.load_state(str(path))
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
