"""Run directories and checkpoints: `<checkpoint_dir>/<run_id>/checkpoints/step_<N>/`.

A checkpoint directory is assembled under a temporary name and renamed into place, so a directory named
`step_<N>` is always complete; anything else (a `.tmp` left by a crash) is ignored and cleaned up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from daf.files import atomic_write_text
from daf.policies.neural import CheckpointError, NeuralPolicy
from daf.torch_files import UnsafeTorchFile, read_torch_file

WEIGHTS_FILE = "policy.pt"
TRAINER_STATE_FILE = "trainer_state.pt"
SPEC_FILE = "policy_spec.json"
CONFIG_FILE = "config.json"
INPUTS_FILE = "inputs.json"  # in the run directory: the content digests of what the run reads (its missions)
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_FILE


def list_checkpoints(run_dir: Path) -> list[Checkpoint]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [Checkpoint(p, int(m.group(1))) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found, key=lambda c: c.step)


def checkpoint_holding(weights: Path) -> Checkpoint | None:
    """The DAF checkpoint whose weights file this is (`.../checkpoints/step_<N>/policy.pt`, complete), else None."""
    directory = weights.parent
    match = _STEP_DIR.match(directory.name)
    complete = all((directory / f).is_file() for f in (WEIGHTS_FILE, TRAINER_STATE_FILE, SPEC_FILE, CONFIG_FILE))
    if weights.name != WEIGHTS_FILE or not match or directory.parent.name != "checkpoints" or not complete:
        return None
    return Checkpoint(directory, int(match.group(1)))


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(
    run_dir: Path,
    step: int,
    policy: NeuralPolicy,
    class_path: str,
    trainer_state: dict[str, Any],
    config: dict[str, Any],
    keep: int,
) -> Checkpoint:
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step_{step}.", suffix=".tmp"))
    try:
        policy.save_policy_data(str(tmp / WEIGHTS_FILE))
        torch.save(trainer_state, tmp / TRAINER_STATE_FILE)
        spec_class_path, init_kwargs = policy.checkpoint_spec(class_path)
        spec = {"class_path": spec_class_path, "data_path": WEIGHTS_FILE, "init_kwargs": init_kwargs}
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        final = root / f"step_{step:010d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    for stale in root.glob(".step_*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    return Checkpoint(final, step)


def load_trainer_state(checkpoint: Checkpoint) -> dict[str, Any]:
    path = checkpoint.path / TRAINER_STATE_FILE
    try:
        return read_torch_file(path)
    except UnsafeTorchFile as exc:  # a damaged file must fail with its name, not a pickle traceback
        raise CheckpointError(f"trainer state {path} cannot be loaded: {exc}") from None


def write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2))
