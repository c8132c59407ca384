"""Response records a user hands in (``--from_responses``): a JSONL or JSON-list file, or the study's published
folder. Checked strictly: each problem is an error naming the file and the line or item."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from ..data import CATEGORIES
from ..errors import HHAlignError
from ..files import json_lines, read_json

REQUIRED_FIELDS = ("model", "category", "prompt_id", "prompt", "response", "reward")
# Rewards are raw reward-model logits (the study's published ratings lie in [-8.2, 3.2]). Anything beyond this bound
# is a unit or export error, and summing such values can overflow to infinity, which metrics.json cannot hold.
MAX_ABS_REWARD = 1e6
# The study's files are named like 4_sftdpo_helpful.json: order, model, category.
_STUDY_FILE = re.compile(r"^(?:\d+_)?(?P<model>[\w\-]+?)_(?P<category>harmful|helpful)\.json$")
STUDY_MODEL_NAMES = {"sftdpo": "sft_dpo", "sft+dpo": "sft_dpo"}


def _prompt_id(value: object) -> str | None:
    """A record's prompt id as text (0 is an id), None when it is missing or not an id."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return text or None


def validate_records(records: list[dict], source: str, labels: Sequence[str] | None = None) -> list[dict]:
    """Check imported records: required fields (prompt_id pairs records across models: never guessed from
    positions), known categories, finite rewards within +-MAX_ABS_REWARD, each (model, prompt_id) once, and one
    prompt per prompt_id. Errors name the record by its label (e.g. "line 7"; default "record N")."""
    out = []
    labels = labels or [f"record {i}" for i in range(1, len(records) + 1)]
    for i, rec in zip(labels, records):
        missing = [f for f in REQUIRED_FIELDS if f not in rec]
        if missing:
            raise HHAlignError(f"{source}: {i} lacks {', '.join(missing)}; each record needs "
                               f"{', '.join(REQUIRED_FIELDS)}")
        if rec["category"] not in CATEGORIES:
            raise HHAlignError(f"{source}: {i} has category {rec['category']!r}; use harmful or helpful")
        pid = _prompt_id(rec["prompt_id"])
        if pid is None:
            raise HHAlignError(f"{source}: {i} has prompt_id {rec['prompt_id']!r}; give each prompt a "
                               "non-empty text or number id, the same for every model")
        reward = rec["reward"]
        if isinstance(reward, bool) or not isinstance(reward, (int, float)):
            raise HHAlignError(f"{source}: {i} has a non-numeric reward {reward!r}; rewards must be numbers")
        if not math.isfinite(reward):
            raise HHAlignError(f"{source}: {i} has reward {reward}; NaN/infinite rewards must be re-scored")
        if abs(reward) > MAX_ABS_REWARD:
            raise HHAlignError(f"{source}: {i} has reward {reward:g}, beyond +-{MAX_ABS_REWARD:g}; rewards "
                               "are raw reward-model scores: check the export")
        out.append({**rec, "model": str(rec["model"]), "reward": float(reward), "prompt_id": pid})
    if not out:
        raise HHAlignError(f"{source}: no records found")
    check_unique(out, source, labels)
    return out


def check_unique(records: list[dict], source: str, labels: Sequence[str] | None = None) -> None:
    """Each (model, prompt_id) once, and each prompt_id one category and prompt across models: otherwise records
    would silently replace each other or be paired with another prompt's."""
    labels = labels or [f"record {i}" for i in range(1, len(records) + 1)]
    seen: dict[tuple[str, str], str] = {}
    prompts: dict[str, tuple[str, str, str]] = {}
    for item, rec in zip(labels, records):
        key = (rec["model"], rec["prompt_id"])
        if key in seen:
            raise HHAlignError(f"{source}: {item} repeats model {key[0]!r} prompt_id {key[1]!r} (first at "
                               f"{seen[key]}); keep one record per model and prompt")
        seen[key] = item
        first = prompts.setdefault(rec["prompt_id"], (rec["category"], rec.get("prompt"), item))
        if first[:2] != (rec["category"], rec.get("prompt")):
            raise HHAlignError(f"{source}: {item} gives prompt_id {rec['prompt_id']!r} another category or prompt "
                               f"than {first[2]}; one prompt_id must name one prompt for every model")


def load_study_folder(folder: Path) -> tuple[list[dict], list[str]]:
    """The study's published ratings: one JSON list of {prompt, response, rating} per model and category, every
    file in the same prompt order; item j of a category's files is prompt ``{category}-{j:03d}`` (checked: the prompt
    texts must agree across models). Returns the records and their labels ("file item N")."""
    files = sorted(p for p in folder.glob("*.json") if _STUDY_FILE.match(p.name))
    if not files:
        raise HHAlignError(f"{folder}: no files named like 1_base_harmful.json; pass a records file or such a folder")
    records, labels = [], []
    for path in files:
        m = _STUDY_FILE.match(path.name)
        model = STUDY_MODEL_NAMES.get(m["model"], m["model"])
        items = read_json(path, "published ratings file", "restore it from the study's release")
        if not isinstance(items, list):
            raise HHAlignError(f"{path}: expected a JSON list of {{prompt, response, rating}}")
        for j, item in enumerate(items):
            if not isinstance(item, dict) or "rating" not in item:
                raise HHAlignError(f"{path}: item {j + 1} lacks 'rating'")
            records.append({"model": model, "model_ref": f"published:{path.name}", "category": m["category"],
                            "prompt_id": f"{m['category']}-{j:03d}", "prompt": item.get("prompt"),
                            "response": item.get("response"), "reward": item["rating"]})
            labels.append(f"{path.name} item {j + 1}")
    return records, labels


def load_records(path: str | Path) -> list[dict]:
    """Records from a JSONL or JSON-list file, or from a folder in the study's published layout; validated."""
    path = Path(path)
    if path.is_dir():
        records, labels = load_study_folder(path)
        return validate_records(records, str(path), labels)
    if not path.is_file():
        raise HHAlignError(f"--from_responses {str(path)!r} does not exist: pass a responses.jsonl or a folder")
    if path.read_bytes().lstrip()[:1] == b"[":
        raw = read_json(path, "records file", "write a JSON list of record objects, or one JSON object per line")
        if not all(isinstance(r, dict) for r in raw):
            raise HHAlignError(f"{path}: every record must be a JSON object")
        return validate_records(raw, str(path), [f"item {i}" for i in range(1, len(raw) + 1)])
    numbered = list(json_lines(path, "record object"))
    return validate_records([obj for _, obj in numbered], str(path), [f"line {n}" for n, _ in numbered])
