"""Data-parallel evaluation: ``accelerate launch --multi_gpu --num_processes N batch/eval.py ...`` (or ``torchrun
--nproc_per_node N``; on CPUs too) runs N evaluators that share one run folder, each taking every N-th prompt.

The main process (rank 0) opens the run folder as a single run does and holds its lock throughout; every process
writes its records to its own shard folder (``shards/RANK/``: one writer per file, no lock needed), seeded with the
records the run already has for its prompts, so a resumed run redoes nothing. At the end the main process, still
holding the lock, merges the shards into the run's logs, skipping any (model, prompt) already there, and writes the
metrics. A killed run's shards are merged when the next run starts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..files import read_json, write_json, write_jsonl
from .records import read_run_log
from .schema import FILES

SHARDS = "shards"
LOGS = ("generations", "responses")
# What a shard's judges learned (loaded models, checks, thresholds), kept in the run's run.json for resumed runs.
JUDGE_STATE = ("judges", "judges_settings", "reward_info")

T = TypeVar("T")


def _key(record: dict) -> tuple:
    return record.get("model"), record.get("prompt_id")


@dataclass(frozen=True)
class Shard:
    """This process's place among ``count`` evaluators sharing a run (index 0 is the main one)."""

    index: int = 0
    count: int = 1

    @property
    def main(self) -> bool:
        return self.index == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """Every ``count``-th item, starting at this process's index."""
        return list(items[self.index :: self.count])

    def wait(self) -> None:
        """Until every process gets here (nothing to wait for alone)."""
        if self.count > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                # gloo: a barrier between processes on CPUs and GPUs alike (the launcher sets MASTER_ADDR/PORT).
                dist.init_process_group("gloo")
            dist.barrier()

    def begin(self, out: Path, prompts: Sequence[Any]) -> Path:
        """The folder this process writes its records to: ``out`` itself when alone, else its shard folder, seeded
        with the records ``out`` has for its prompts (after the main process merged a killed run's shards)."""
        if self.count == 1:
            return out
        if self.main:
            merge_shards(out)
        self.wait()
        folder = out / SHARDS / str(self.index)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / FILES["run"], read_json(out / FILES["run"], "run state", "restore it"))
        mine = {p.prompt_id for p in self.take(prompts)}
        for name in LOGS:
            records = read_run_log(out / FILES[name])
            write_jsonl(folder / FILES[name], (r for r in records if r.get("prompt_id") in mine))
        return folder

    def end(self, out: Path) -> bool:
        """After every process finished its shard: the main process merges them into ``out`` (True); the others
        are done (False)."""
        if self.count == 1:
            return True
        self.wait()
        if self.main:
            merge_shards(out)
        return self.main


def current_shard() -> Shard:
    """This process's shard from the launcher's environment (``RANK``/``WORLD_SIZE``, as accelerate launch and
    torchrun set them); one shard of one without a launcher."""
    count = int(os.environ.get("WORLD_SIZE", "1") or 1)
    index = int(os.environ.get("RANK", "0") or 0)
    return Shard(index, count) if count > 1 else Shard()


def merge_shards(out: Path) -> int:
    """Append the shard folders' records to ``out``'s logs, skipping (model, prompt) pairs already there, keep the
    main shard's judge state in ``out``'s run.json, and remove the shards. Returns the records added. The caller
    holds the run folder's lock."""
    folders = sorted(p for p in (out / SHARDS).glob("*") if p.is_dir()) if (out / SHARDS).is_dir() else []
    added = 0
    for name in LOGS:
        seen = {_key(r) for r in read_run_log(out / FILES[name])}
        new = []
        for folder in folders:
            for record in read_run_log(folder / FILES[name]):
                if _key(record) not in seen:
                    seen.add(_key(record))
                    new.append(record)
        if new:
            from ..files import JsonlWriter

            with JsonlWriter(out / FILES[name]) as writer:
                writer.write_many(new)
            added += len(new)
    main_state = out / SHARDS / "0" / FILES["run"]
    if main_state.is_file():
        state = read_json(out / FILES["run"], "run state", "restore it")
        judges = read_json(main_state, "shard run state", "delete the shards folder to redo its records")
        state.update({k: judges[k] for k in JUDGE_STATE if k in judges})
        write_json(out / FILES["run"], state)
    for folder in folders:
        shutil.rmtree(folder)
    shutil.rmtree(out / SHARDS, ignore_errors=True)
    return added
