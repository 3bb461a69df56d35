"""What a pretraining run reports: running means kept on the device, ``log.jsonl`` and Accelerate trackers.

Training steps only add detached tensors to :class:`RunningMeans`; the host reads them (one
synchronisation, averaged over processes) when a record is written, every ``log_every`` steps and at
the end of each epoch. :class:`RunLog` appends each record as one JSON line to ``DIR/log.jsonl`` and
hands it to the trackers (TensorBoard by default), from the main process only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor

from ibzoo.atomic_files import write_atomically

__all__ = ["RunLog", "RunningMeans", "flat_hparams"]


class RunningMeans:
    """Per-name means of scalar tensors added step by step, read without a host sync per step."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: Mapping[str, Tensor | None]) -> None:
        """Add one detached scalar per name (None values are skipped)."""
        for name, value in values.items():
            if value is None:
                continue
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] = self.counts.get(name, 0) + 1

    def read(self, accelerator: Accelerator) -> dict[str, float]:
        """The means, averaged over processes (a collective: call it on every process), then reset."""
        if not self.sums:
            return {}
        names = sorted(self.sums)
        local = torch.stack([self.sums[name] / self.counts[name] for name in names])
        means = accelerator.reduce(local, reduction="mean") if accelerator.num_processes > 1 else local
        self.sums, self.counts = {}, {}
        return dict(zip(names, means.tolist(), strict=True))


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """A nested configuration as flat ``a/b`` keys with values TensorBoard's hparams accept."""
    flat: dict[str, int | float | str | bool] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flat_hparams(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, int | float | str | bool) else str(value)
    return flat


class RunLog:
    """``log.jsonl`` plus Accelerate trackers; only the main process writes.

    On resume, records of steps after the checkpoint (written before the run was stopped) are dropped,
    so that the file describes one run without repeated steps.
    """

    def __init__(self, accelerator: Accelerator, path: Path, resumed_step: int) -> None:
        self.accelerator, self.path = accelerator, path
        if accelerator.is_main_process and path.is_file():
            kept = [line for line in path.read_text().splitlines() if _step_of(line) <= resumed_step]
            write_atomically(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))

    def write(self, record: Mapping[str, Any], step: int) -> None:
        """Append ``record`` (JSON values; ``step`` is added) and send its numbers to the trackers."""
        if not self.accelerator.is_main_process:
            return
        record = {"step": step, **record}
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        numbers = {key: value for key, value in record.items() if isinstance(value, int | float)}
        if self.accelerator.trackers:
            self.accelerator.log(numbers, step=step)


def _step_of(line: str) -> float:
    try:
        return json.loads(line).get("step", float("inf"))
    except json.JSONDecodeError:  # a line cut short by a kill
        return float("inf")
