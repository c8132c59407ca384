"""The judge check: how often a reward model scores HH-RLHF's ``chosen`` reply above its ``rejected`` one on held-out
test pairs, per subset, with 95% Wilson intervals and ties counted apart; cached per reward model and revision.

This is the judge's own accuracy on the data whose verdicts it gives: an accuracy near 50% means its HmR/HpR labels
are close to coin flips. The OpenAssistant model's card reports 69.25% on Anthropic RLHF.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data import SUBSETS, PreferencePair, load_rows, preference_pair
from ..env import provenance
from ..errors import HHAlignError
from ..files import read_json, write_json
from ..refs import DEFAULT_REWARD_MODEL, is_local
from ..stats.inference import accuracy_ci

logger = logging.getLogger(__name__)

DEFAULT_N = 500
CHECK_SEED = 0
# Two rewards closer than this are a tie: the scoring engine agrees with one-pair-at-a-time scoring within 1e-4.
TIE_TOLERANCE = 1e-4
PUBLISHED = {DEFAULT_REWARD_MODEL: "69.25% on Anthropic RLHF (the model card)"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def cache_folder(option: str | None = None) -> Path:
    """Where checks are cached: the option, else ``$HHALIGN_CACHE/judge``, else ``~/.cache/hhalign/judge``."""
    from ..files import cache_dir

    return cache_dir("judge", option)


def check_pairs(dataset: str, split: str = "test", n: int = DEFAULT_N,
                seed: int = CHECK_SEED) -> dict[str, list[PreferencePair]]:
    """A seeded sample of ``n`` preference pairs per subset (every subset the dataset has; a JSONL file of
    {chosen, rejected} is one subset named after the file). Rows that do not parse into a pair are skipped."""
    if n < 1:
        raise HHAlignError(f"--judge_check must be a positive number of pairs per subset (or 0 for none), got {n}")
    path = Path(dataset).expanduser()
    if path.is_file() or dataset.endswith((".jsonl", ".json")):
        sources = [None]
    elif is_local(dataset):
        sources = [s for s in SUBSETS if (path / s).is_dir()] or list(SUBSETS)
    else:
        sources = list(SUBSETS)
    out: dict[str, list[PreferencePair]] = {}
    for subset in sources:
        rows, counts = load_rows(dataset, [] if subset is None else [subset], split)
        picked = sorted(random.Random(f"{seed}:{subset}").sample(range(len(rows)), min(n, len(rows))))
        pairs = []
        for i in picked:
            try:
                pairs.append(preference_pair(rows[i]))
            except HHAlignError:
                continue
        out[subset or Path(next(iter(counts))).stem] = pairs
    return out


def scored_prompt(pair: PreferencePair) -> str:
    """The conversation as the evaluator scores it: the history without the final assistant cue."""
    return pair.prompt.strip().removesuffix("Assistant:").rstrip()


def pair_rewards(score_fn: Any, pairs: Sequence[PreferencePair]) -> tuple[list[float], list[float]]:
    """Rewards of each pair's chosen and of its rejected reply, scored as the evaluator scores a reply."""
    prompts = [scored_prompt(p) for p in pairs]
    values = [s.reward for s in score_fn(prompts * 2, [p.chosen.strip() for p in pairs]
                                         + [p.rejected.strip() for p in pairs])]
    if any(not math.isfinite(v) for v in values):
        raise HHAlignError("the reward model returned NaN on preference pairs: try --dtype float32")
    return values[: len(pairs)], values[len(pairs):]


def weights_stamp(path: str | Path) -> list:
    """Names, sizes and modification times of a local checkpoint's weight files: a rewrite changes the stamp."""
    folder = Path(path)
    return sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in folder.iterdir()
                  if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)


def cache_key(model_info: Mapping, input_format: str, dataset: str, split: str, n: int, scoring: Mapping) -> dict:
    """Everything a check's rewards depend on; its hash names the cache file."""
    ref = model_info.get("ref", "")
    local = is_local(ref)
    return {"model": str(Path(ref).expanduser().resolve()) if local else ref, "revision": model_info.get("revision"),
            "weights": weights_stamp(Path(ref).expanduser()) if local else None, "format": input_format,
            "dataset": str(Path(dataset).expanduser().resolve()) if is_local(dataset) else dataset, "split": split,
            "n_per_subset": n, "seed": CHECK_SEED, **scoring}


def _cache_file(folder: Path, key: Mapping) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(str(key["model"])).name)[:60]
    return folder / f"{stem}-{digest}.json"


def run_check(loaded: Any, input_format: str, pairs: Mapping[str, Sequence[PreferencePair]], key: Mapping,
              cache: Path, score_fn: Any) -> tuple[dict[str, dict[str, list[float]]], bool]:
    """Rewards of every pair's chosen and rejected reply, ``{subset: {"chosen": [...], "rejected": [...]}}``, from
    the cache or by scoring with ``score_fn(prompts, responses)``; and whether they came from the cache."""
    path = _cache_file(cache, key)
    if path.is_file():
        cached = read_json(path, "judge-check cache", f"delete {path} to check the judge again")
        if cached.get("key") == json.loads(json.dumps(key)):
            logger.info(f"judge check of {key['model']}: cached in {path}")
            return cached["rewards"], True
    rewards: dict[str, dict[str, list[float]]] = {}
    for subset, items in pairs.items():
        logger.info(f"judge check of {key['model']}: scoring {len(items)} {subset} pairs")
        chosen, rejected = pair_rewards(score_fn, items)
        rewards[subset] = {"chosen": chosen, "rejected": rejected}
    try:
        cache.mkdir(parents=True, exist_ok=True)
        write_json(path, {"key": key, "rewards": rewards, **provenance(),
                          "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")})
    except OSError as exc:  # a cache that cannot be written costs a re-check next time, nothing else
        logger.warning(f"judge check not cached ({exc.strerror}): {cache}")
    return rewards, False


def accuracy_block(rewards: Mapping[str, Mapping[str, Sequence[float]]]) -> dict:
    """Accuracy per subset and over all pairs: chosen above rejected by more than ``TIE_TOLERANCE``; closer pairs are
    ties, counted apart (``accuracy`` leaves them out, ``accuracy_ties_as_half`` counts each as half right)."""
    subsets = {}
    totals = [0, 0, 0]
    for subset, r in rewards.items():
        diffs = [c - j for c, j in zip(r["chosen"], r["rejected"])]
        correct = sum(d > TIE_TOLERANCE for d in diffs)
        ties = sum(abs(d) <= TIE_TOLERANCE for d in diffs)
        subsets[subset] = finite(accuracy_ci(correct, ties, len(diffs)))
        totals = [totals[0] + correct, totals[1] + ties, totals[2] + len(diffs)]
    return {"subsets": subsets, "overall": finite(accuracy_ci(*totals))}


def finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by None (strict JSON; e.g. an accuracy when every pair tied)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def check_block(model_info: Mapping, key: Mapping, rewards: Mapping, cached: bool) -> dict:
    """The ``metrics.json`` entry of one judge's check."""
    block = {"model": model_info.get("ref"), "revision": model_info.get("revision"), "format": key["format"],
             "dataset": key["dataset"], "split": key["split"], "seed": key["seed"],
             "n_per_subset": key["n_per_subset"], "tie_tolerance": TIE_TOLERANCE, "cached": cached,
             **accuracy_block(rewards)}
    if model_info.get("ref") in PUBLISHED:
        block["published"] = PUBLISHED[model_info["ref"]]
    return block
