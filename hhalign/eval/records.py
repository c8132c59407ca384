"""Response records a user hands in (``--from_responses``): a JSONL or JSON-list file, or the study's published
folder. Checked strictly: each problem is an error naming the file and the line or item."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..data import CATEGORIES
from ..errors import HHAlignError
from ..files import json_lines

REQUIRED_FIELDS = ("model", "category", "prompt", "response", "reward")
# The study's files are named like 4_sftdpo_helpful.json: order, model, category.
_STUDY_FILE = re.compile(r"^(?:\d+_)?(?P<model>[\w\-]+?)_(?P<category>harmful|helpful)\.json$")
STUDY_MODEL_NAMES = {"sftdpo": "sft_dpo", "sft+dpo": "sft_dpo"}

def validate_records(records: list[dict], source: str) -> list[dict]:
    """Check imported records: required fields, known categories, finite numeric rewards; add prompt ids."""
    counters: dict[tuple[str, str], int] = {}
    out = []
    for i, rec in enumerate(records, 1):
        missing = [f for f in REQUIRED_FIELDS if f not in rec]
        if missing:
            raise HHAlignError(f"{source}: record {i} lacks {', '.join(missing)}; each record needs "
                               f"{', '.join(REQUIRED_FIELDS)}")
        if rec["category"] not in CATEGORIES:
            raise HHAlignError(f"{source}: record {i} has category {rec['category']!r}; use harmful or helpful")
        reward = rec["reward"]
        if isinstance(reward, bool) or not isinstance(reward, (int, float)):
            raise HHAlignError(f"{source}: record {i} has a non-numeric reward {reward!r}; rewards must be numbers")
        if not math.isfinite(reward):
            raise HHAlignError(f"{source}: record {i} has reward {reward}; NaN/infinite rewards must be re-scored")
        key = (str(rec["model"]), rec["category"])
        index = counters.get(key, 0)
        counters[key] = index + 1
        out.append({**rec, "model": str(rec["model"]), "reward": float(reward),
                    "prompt_id": str(rec.get("prompt_id") or f"{rec['category']}-{index:03d}")})
    if not out:
        raise HHAlignError(f"{source}: no records found")
    return out


def load_study_folder(folder: Path) -> list[dict]:
    """The study's published ratings: one JSON list of {prompt, response, rating} per model and category."""
    files = sorted(p for p in folder.glob("*.json") if _STUDY_FILE.match(p.name))
    if not files:
        raise HHAlignError(f"{folder}: no files named like 1_base_harmful.json; pass a records file or such a folder")
    records = []
    for path in files:
        m = _STUDY_FILE.match(path.name)
        model = STUDY_MODEL_NAMES.get(m["model"], m["model"])
        items = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(items, list):
            raise HHAlignError(f"{path}: expected a JSON list of {{prompt, response, rating}}")
        for j, item in enumerate(items):
            if not isinstance(item, dict) or "rating" not in item:
                raise HHAlignError(f"{path}: item {j + 1} lacks 'rating'")
            records.append({"model": model, "model_ref": f"published:{path.name}", "category": m["category"],
                            "prompt": item.get("prompt"), "response": item.get("response"),
                            "reward": item["rating"]})
    return records


def load_records(path: str | Path) -> list[dict]:
    """Records from a JSONL or JSON-list file, or from a folder in the study's published layout; validated."""
    path = Path(path)
    if path.is_dir():
        raw = load_study_folder(path)
    elif path.is_file():
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise HHAlignError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        else:
            raw = [obj for _, obj in json_lines(path, "record object")]
        if not all(isinstance(r, dict) for r in raw):
            raise HHAlignError(f"{path}: every record must be a JSON object")
    else:
        raise HHAlignError(f"--from-responses {str(path)!r} does not exist: pass a responses.jsonl or a folder")
    return validate_records(raw, str(path))
