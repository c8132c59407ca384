"""Which ``checkpoint-N`` folder a training run resumes from: the newest complete one.

A run killed while the Trainer saves a checkpoint leaves a folder without its ``trainer_state.json`` (written last)
or with a cut-off weights file; resuming from it would fail with a traceback on every rerun. Such a folder is skipped
with a warning and the run resumes from the previous complete checkpoint (or from the start).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ..errors import HHAlignError
from ..loading import safetensors_problem

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"  # the Trainer writes it after the weights, optimizer, scheduler and RNG states
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "adapter_model.bin")


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from, or None when it is complete."""
    state = folder / STATE_FILE
    if not state.is_file():
        return f"no {STATE_FILE}"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{STATE_FILE} is damaged"
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        return "no weights file"
    for path in weights:
        if path.suffix == ".safetensors" and (problem := safetensors_problem(path)):
            return problem
    return None


def checkpoint_folders(output_dir: Path) -> list[Path]:
    """The ``checkpoint-N`` folders of a run, newest (highest N) first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := CHECKPOINT_DIR.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def resume_checkpoint(output_dir: Path, requested: str | None = None) -> str | None:
    """The checkpoint to resume from: ``requested`` (--resume_from_checkpoint) if complete, else the newest complete
    one in ``output_dir``; incomplete ones are skipped with a warning."""
    if requested:
        problem = checkpoint_problem(Path(requested)) if Path(requested).is_dir() else "it does not exist"
        if problem:
            raise HHAlignError(f"--resume_from_checkpoint {requested!r} cannot be resumed from ({problem}): name a "
                               "complete checkpoint-N folder, or drop the option to resume from the newest one")
        return requested
    chosen, skipped = None, []
    for folder in checkpoint_folders(output_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            chosen = folder
            break
        skipped.append((folder, problem))
    for folder, problem in skipped:
        logger.warning(f"{folder} is incomplete ({problem}: the run was killed while saving it); skipped, resuming "
                       f"from {chosen.name if chosen else 'the start'}")
    return str(chosen) if chosen else None
