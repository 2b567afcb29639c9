"""Training feedback in the snapshot folder: plain-text log, metrics JSON lines, tensorboardX.

Only the main process writes; other ranks get a logger whose methods do nothing. On resume the
metrics file is cut back to the checkpoint's iteration (lines a crashed run wrote after its last
checkpoint would otherwise appear twice) and tensorboardX purges the same range.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

from tqdm import tqdm

from utils.fileio import atomic_write

LOG_NAME = "train.log"
METRICS_NAME = "metrics.jsonl"


def _plain(value):
    """JSON-friendly number: floats rounded to 7 significant digits, non-finite as null."""
    if isinstance(value, float):
        return float(f"{value:.7g}") if math.isfinite(value) else None
    return value


def truncate_metrics(path: str, last_iteration: int) -> None:
    """Keep only records with ``iteration <= last_iteration`` (atomic rewrite; no-op if none)."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if isinstance(record, dict) and int(record.get("iteration", -1)) <= last_iteration:
            kept.append(line)
    if kept != lines:
        atomic_write(path, "".join(line + "\n" for line in kept).encode())


class TrainingLogger:
    """``info`` lines to console and ``train.log``; ``scalars`` to tensorboardX and metrics.jsonl."""

    def __init__(
        self,
        snapshot_dir: str,
        enabled: bool = True,
        start_iteration: int = 0,
        tensorboard: bool = True,
    ) -> None:
        self.enabled = enabled
        self.log_file = self.metrics_file = self.writer = None
        if not enabled:
            return
        os.makedirs(snapshot_dir, exist_ok=True)
        metrics_path = os.path.join(snapshot_dir, METRICS_NAME)
        truncate_metrics(metrics_path, start_iteration)
        self.log_file = open(os.path.join(snapshot_dir, LOG_NAME), "a", encoding="utf-8")
        self.metrics_file = open(metrics_path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge = start_iteration + 1 if start_iteration > 0 else None
            self.writer = SummaryWriter(snapshot_dir, purge_step=purge)

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        tqdm.write(message, file=sys.stderr)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for line in message.splitlines() or [""]:
            self.log_file.write(f"{stamp} {line}\n")
        self.log_file.flush()

    def scalars(self, iteration: int, values: dict[str, float]) -> None:
        """One metrics line ``{"iteration": i, **values}`` and one tensorboard scalar per value."""
        if not self.enabled:
            return
        record = {"iteration": int(iteration), **{k: _plain(v) for k, v in values.items()}}
        self.metrics_file.write(json.dumps(record) + "\n")
        self.metrics_file.flush()
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, iteration)

    def close(self) -> None:
        for handle in (self.log_file, self.metrics_file, self.writer):
            if handle is not None:
                handle.close()
        self.log_file = self.metrics_file = self.writer = None
