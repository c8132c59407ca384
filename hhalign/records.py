"""Response records on disk: append-only JSONL, resume, and importing published ratings."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from .data import CATEGORIES
from .errors import HHAlignError

REQUIRED_FIELDS = ("model", "category", "prompt", "response", "reward")
# The study's files are named like 4_sftdpo_helpful.json: order, model, category.
_STUDY_FILE = re.compile(r"^(?:\d+_)?(?P<model>[\w\-]+?)_(?P<category>harmful|helpful)\.json$")
STUDY_MODEL_NAMES = {"sftdpo": "sft_dpo", "sft+dpo": "sft_dpo"}


def read_jsonl(path: str | Path) -> list[dict]:
    """All complete records of a JSONL file; a torn last line (a killed write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if lineno == len(lines):
                break
            raise HHAlignError(f"{path}:{lineno} is not valid JSON: fix or delete that line") from None
    return records


class JsonlWriter:
    """Appends records one line at a time and flushes each, so a kill loses at most the line being written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        _repair_torn_tail(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: Mapping) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def write_many(self, records: Iterable[Mapping]) -> None:
        for r in records:
            self._fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _repair_torn_tail(path: Path) -> None:
    """Drop a partial last line left by a killed process, so appends start on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    with open(path, "r+b") as fh:
        fh.truncate(cut)


def write_jsonl(path: str | Path, records: Iterable[Mapping]) -> None:
    """Write records atomically (temp file, then rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_json(path: str | Path, obj: object) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
            raw = read_jsonl(path)
        if not all(isinstance(r, dict) for r in raw):
            raise HHAlignError(f"{path}: every record must be a JSON object")
    else:
        raise HHAlignError(f"--from-responses {str(path)!r} does not exist: pass a responses.jsonl or a folder")
    return validate_records(raw, str(path))
