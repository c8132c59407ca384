"""Response records a user hands in (``--from_responses``): a JSONL or JSON-list file, or the study's published
folder. Checked strictly: each problem is an error naming the file and the line or item."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..data import CATEGORIES
from ..errors import HHAlignError
from ..files import json_lines, read_json, read_log
from .schema import FILES

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


def reward_problem(reward: object, what: str = "reward") -> str | None:
    """Why ``reward`` is not a usable reward (a finite number within +-MAX_ABS_REWARD; true/false and number-like
    text such as "-1.5" or "nan" are not numbers), or None when it is."""
    if isinstance(reward, bool) or not isinstance(reward, (int, float)):
        return f"has a non-numeric {what} {reward!r}; rewards must be numbers"
    if not math.isfinite(reward):
        return f"has {what} {reward}; NaN/infinite rewards must be re-scored"
    if abs(reward) > MAX_ABS_REWARD:
        return (f"has {what} {reward:g}, beyond +-{MAX_ABS_REWARD:g}; rewards are raw reward-model scores: check the "
                "export")
    return None


# Fields of the evaluator's own logs and the type each must have when present (token counts are non-negative).
_LOG_TEXT = ("model", "prompt", "response", "model_ref", "label")
_LOG_COUNTS = ("n_prompt_tokens", "n_new_tokens", "reward_tokens")
_LOG_FLAGS = ("prompt_truncated", "reward_truncated", "reward_over_trained_length")
LOG_REQUIRED = {"generations": ("model", "category", "prompt_id", "prompt", "response"),
                "responses": ("model", "category", "prompt_id", "prompt", "response", "reward")}


def log_record_problem(kind: str, rec: Mapping) -> str | None:
    """Why a record of the evaluator's own ``kind`` log ("generations" or "responses") cannot be used, or None.
    Types, finiteness and ranges of every field the run reads back: an edited log must not change a metric."""
    missing = [f for f in LOG_REQUIRED[kind] if f not in rec]
    if missing:
        return f"lacks {', '.join(missing)}"
    for name in _LOG_TEXT:
        if name in rec and not isinstance(rec[name], str):
            return f"has a non-text {name} {rec[name]!r}"
    if not rec["model"].strip():
        return "has an empty model name"
    if rec["category"] not in CATEGORIES:
        return f"has category {rec['category']!r}; use harmful or helpful"
    if _prompt_id(rec["prompt_id"]) is None:
        return f"has prompt_id {rec['prompt_id']!r}, not a text or number id"
    for name in _LOG_COUNTS:
        value = rec.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"has {name} {value!r}; token counts are whole numbers >= 0"
    for name in _LOG_FLAGS:
        if name in rec and not isinstance(rec[name], bool):
            return f"has {name} {rec[name]!r}; it is true or false"
    if kind == "responses":
        problem = reward_problem(rec["reward"])
        if problem:
            return problem
        for block, check in (("rewards", reward_problem), ("labels", None)):
            values = rec.get(block, {})
            if not isinstance(values, dict):
                return f"has {block} {values!r}; it maps each judge to its value"
            for judge, value in values.items():
                problem = check(value, f"{block}[{judge!r}]") if check else (
                    None if isinstance(value, str) else f"has a non-text {block}[{judge!r}] {value!r}")
                if problem:
                    return problem
    return None


def log_check(kind: str) -> Callable[[dict], str | None]:
    return lambda rec: log_record_problem(kind, rec)


LOG_CHECKS = {FILES["generations"]: log_check("generations"), FILES["responses"]: log_check("responses")}


def read_run_log(path: str | Path) -> list[dict]:
    """The records of one of the evaluator's logs (generations.jsonl, responses.jsonl), each checked: a bad one is an
    error naming the file and line (:func:`hhalign.files.read_log`)."""
    return read_log(path, LOG_CHECKS.get(Path(path).name))


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
        problem = reward_problem(reward)
        if problem:
            raise HHAlignError(f"{source}: {i} {problem}")
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
