"""HH-RLHF loading, transcript parsing, preference pairs and the evaluation prompt sets."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import HHAlignError
from .files import ASSETS_DIR, json_lines
from .protocol import ASSISTANT, paper_prompt, split_final_reply
from .refs import is_local

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "Anthropic/hh-rlhf"
SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
# The study kept harmless-base test rows whose chosen transcript contains one of these (plain substring test).
HARMFUL_KEYWORDS = ("kill", "murder", "rape")
PAPER_SEED = 100
PAPER_N_PER_CATEGORY = 50
CATEGORIES = ("harmful", "helpful")
PROMPT_SETS = ("paper", "paper-large", "harmful-all", "sample", "demo")
DEMO_PROMPTS_PATH = ASSETS_DIR / "demo_prompts.jsonl"
# A few HH-style preference pairs shipped for offline demos (training, the demo's judge check).
DEMO_PAIRS_PATH = ASSETS_DIR / "demo_pairs.jsonl"


@dataclass(frozen=True)
class PreferencePair:
    """Shared history (ending with the assistant cue) and the two final assistant replies."""

    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class EvalPrompt:
    """One evaluation prompt; ``prompt_id`` is unique within a prompt set and keeps its order."""

    prompt_id: str
    category: str
    prompt: str

    def to_dict(self) -> dict:
        return asdict(self)


def load_hh(dataset: str = DEFAULT_DATASET, subset: str = "harmless-base", split: str = "test",
            skip_bad_rows: bool = False) -> list[dict]:
    """Rows ``{"chosen", "rejected"}`` of one HH-RLHF subset, from the Hub id or a local folder of the same layout.

    A row without Human/Assistant turns is an error, or is dropped with ``skip_bad_rows`` (for training on the
    full train split, where a stray malformed row should not stop a run).
    """
    local = Path(dataset).expanduser()
    local_copy = is_local(dataset)
    if local_copy:
        if not local.is_dir():
            raise HHAlignError(
                f"dataset folder {dataset!r} does not exist: pass a folder laid out like Anthropic/hh-rlhf"
            )
        if not (local / subset).is_dir():
            found = sorted(p.name for p in local.iterdir() if p.is_dir())
            raise HHAlignError(
                f"dataset folder {dataset!r} has no subset {subset!r} (found: {', '.join(found) or 'none'}); "
                "pass a folder laid out like Anthropic/hh-rlhf"
            )
        files = sorted((local / subset).glob(f"{split}*.json*"))
        if not files:
            raise HHAlignError(f"dataset folder {dataset!r} has no {split!r} split in {subset!r}; try --split test")
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(str(local) if local_copy else dataset, data_dir=subset, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; the user needs one line
        raise HHAlignError(
            f"cannot load dataset {dataset!r} subset {subset!r} split {split!r}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''} (check the id, your network or HF_HUB_OFFLINE, "
            "or pass a local copy with --dataset PATH)"
        ) from None
    missing = {"chosen", "rejected"} - set(ds.column_names)
    if missing:
        raise HHAlignError(f"dataset {dataset!r} subset {subset!r} lacks columns {sorted(missing)}: not HH-RLHF")
    rows = [{"chosen": c, "rejected": r} for c, r in zip(ds["chosen"], ds["rejected"])]
    bad = [i for i, row in enumerate(rows) if "Human:" not in row["chosen"] or "Assistant:" not in row["chosen"]]
    if not bad:
        return rows
    if skip_bad_rows and len(bad) < len(rows) / 2:
        dropped = set(bad)
        logging.getLogger("hhalign").warning("%s %s/%s: dropped %d rows without Human/Assistant turns", dataset,
                                             subset, split, len(bad))
        return [row for i, row in enumerate(rows) if i not in dropped]
    raise HHAlignError(f"dataset {dataset!r} subset {subset!r} row {bad[0]} has no 'Human:'/'Assistant:' turns "
                       f"({len(bad)} such rows): rows must be HH-RLHF dialogues")


def read_pairs_file(path: str | Path) -> list[dict]:
    """Rows ``{"chosen", "rejected"}`` (HH transcripts) from a JSONL file."""
    path = Path(path)
    rows = []
    for lineno, obj in json_lines(path, "{chosen, rejected} object"):
        if not all(isinstance(obj.get(k), str) for k in ("chosen", "rejected")):
            raise HHAlignError(f"{path}:{lineno}: needs string fields 'chosen' and 'rejected' (HH transcripts)")
        rows.append({"chosen": obj["chosen"], "rejected": obj["rejected"]})
    return rows


def load_rows(dataset: str, subsets: Sequence[str], split: str) -> tuple[list, dict]:
    """HH rows of every subset (concatenated in the given order) or of a JSONL file, with per-source counts."""
    path = Path(dataset).expanduser()
    if path.is_file() or dataset.endswith((".jsonl", ".json")):
        if not path.is_file():
            raise HHAlignError(f"--dataset {dataset!r} does not exist: pass a JSONL file, a folder or a Hub id")
        rows = read_pairs_file(path)
        return rows, {path.name: len(rows)}
    if not subsets:
        raise HHAlignError("--subsets is empty: name at least one of " + ", ".join(SUBSETS))
    if dataset == DEFAULT_DATASET:
        bad = [s for s in subsets if s not in SUBSETS]
        if bad:
            raise HHAlignError(f"unknown HH-RLHF subset(s) {', '.join(bad)}: use {', '.join(SUBSETS)}")
    rows: list[dict] = []
    counts = {}
    for subset in subsets:
        # A stray malformed row in 160k must not stop a run; rows that do not parse into a pair are counted below.
        part = load_hh(dataset, subset, split, skip_bad_rows=True)
        counts[subset] = len(part)
        rows.extend(part)
        logger.info(f"loaded {len(part)} rows of {dataset} {subset} {split}")
    return rows, counts


def preference_pair(row: dict) -> PreferencePair:
    """Prompt = the shared history ending in the last assistant cue; chosen/rejected = the final replies."""
    chosen, rejected = row["chosen"], row["rejected"]
    prompt_c, reply_c = split_final_reply(chosen)
    prompt_r, reply_r = split_final_reply(rejected)
    if prompt_c != prompt_r:
        # Rare rows differ before the final reply; the longest common prefix ending at a cue is the prompt.
        common = _common_prefix(prompt_c, prompt_r)
        cut = common.rfind(ASSISTANT)
        if cut < 0:
            raise HHAlignError(f"chosen and rejected share no assistant cue: {chosen[:60]!r}...")
        prompt_c = common[: cut + len(ASSISTANT)]
        reply_c = chosen[len(prompt_c) :].strip()
        reply_r = rejected[len(prompt_c) :].strip()
    return PreferencePair(prompt=prompt_c, chosen=" " + reply_c, rejected=" " + reply_r)


def preference_pairs(rows: Iterable[dict]) -> list[PreferencePair]:
    """Batched :func:`preference_pair`."""
    return [preference_pair(r) for r in rows]


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


def is_harmful_candidate(row: dict, keywords: Sequence[str] = HARMFUL_KEYWORDS) -> bool:
    return any(k in row["chosen"] for k in keywords)


def paper_prompts(harmless_test: Sequence[dict], helpful_test: Sequence[dict], seed: int = PAPER_SEED,
                  n: int = PAPER_N_PER_CATEGORY, n_total: int | None = None) -> list[EvalPrompt]:
    """The study's 100 prompts: 50 keyword-filtered harmful then 50 helpful, from one seeded random stream.

    ``n_total`` (more than ``n``) continues that stream for a larger set: after the study's draws, the rest of the
    keyword pool and then the rest of the helpful rows are shuffled by the same stream and taken in that order (all
    of the pool at most). The study's prompts stay the first ``n`` of each category (``--limit 50`` gives them
    back), and a larger ``n_total`` extends a smaller one.
    """
    rng_state = random.getstate()
    try:
        random.seed(seed)  # the study used the global stream; reproduce it exactly, then restore the caller's
        pool = [r for r in harmless_test if is_harmful_candidate(r)]
        if len(pool) < n or len(helpful_test) < n:
            raise HHAlignError(f"prompt set 'paper' needs {n} rows per category; the dataset gives {len(pool)} "
                               f"harmful and {len(helpful_test)} helpful: use the test split of HH-RLHF")
        # Sampling positions draws exactly what the study's random.sample(rows, n) drew (it depends on len only).
        harmful = random.sample(range(len(pool)), n)
        helpful = random.sample(range(len(helpful_test)), n)
        # The rest of each pool in one shuffle of the same stream: whatever n_total, the same order, so a larger
        # set extends a smaller one (random.sample's draws would change with the number asked for).
        rests = []
        for taken, size in ((harmful, len(pool)), (helpful, len(helpful_test))):
            rest = sorted(set(range(size)) - set(taken))
            random.shuffle(rest)
            rests.append(rest)
        if n_total is not None and n_total > n:
            harmful += rests[0][: n_total - n]
            helpful += rests[1][: n_total - n]
    finally:
        random.setstate(rng_state)
    return _number("harmful", [paper_prompt(pool[i]["chosen"]) for i in harmful]) + _number(
        "helpful", [paper_prompt(helpful_test[i]["chosen"]) for i in helpful]
    )


def _number(category: str, prompts: Sequence[str]) -> list[EvalPrompt]:
    return [EvalPrompt(f"{category}-{i:03d}", category, p) for i, p in enumerate(prompts)]


def build_prompt_set(name: str = "paper", dataset: str = DEFAULT_DATASET, split: str = "test", n: int | None = None,
                     seed: int = PAPER_SEED) -> list[EvalPrompt]:
    """A named prompt set or a JSONL file path.

    ``paper``: the study's 50 + 50; ``paper-large``: the study's procedure continued to ``n`` per category (default:
    every keyword harmful prompt, 192 in the test split, and as many helpful), the study's prompts first;
    ``harmful-all``: every keyword harmful prompt, in dataset order; ``sample``: ``n`` (default 50) per category from
    a fresh seeded stream; ``demo``: the project's own prompts.
    """
    if name == "demo":
        return load_prompts_file(DEMO_PROMPTS_PATH)
    if n is not None and n < 1:
        raise HHAlignError(f"--n_per_category must be a positive number of prompts, got {n}")
    if name not in PROMPT_SETS:
        if Path(name).is_file():
            return load_prompts_file(name)
        if name.endswith((".jsonl", ".json")) or "/" in name:
            raise HHAlignError(f"prompts file {name!r} does not exist: check the path, or name a prompt set "
                               f"({', '.join(PROMPT_SETS)})")
        raise HHAlignError(f"unknown prompt set {name!r}: use one of {', '.join(PROMPT_SETS)} or a JSONL file path")
    harmless = load_hh(dataset, "harmless-base", split)
    if name == "harmful-all":
        return _number("harmful", [paper_prompt(r["chosen"]) for r in harmless if is_harmful_candidate(r)])
    helpful = load_hh(dataset, "helpful-base", split)
    if name == "paper":
        return paper_prompts(harmless, helpful, seed=seed)
    pool = [r for r in harmless if is_harmful_candidate(r)]
    if name == "paper-large":
        return paper_prompts(harmless, helpful, seed=seed, n_total=len(pool) if n is None else n)
    n = PAPER_N_PER_CATEGORY if n is None else n
    rng = random.Random(seed)
    return _number("harmful", [paper_prompt(r["chosen"]) for r in rng.sample(pool, min(n, len(pool)))]) + _number(
        "helpful", [paper_prompt(r["chosen"]) for r in rng.sample(helpful, min(n, len(helpful)))]
    )


def load_prompts_file(path: str | Path) -> list[EvalPrompt]:
    """Prompts from a JSONL file with ``category`` (harmful/helpful) and ``prompt`` (optional ``prompt_id``)."""
    path = Path(path)
    prompts: list[EvalPrompt] = []
    counts = {c: 0 for c in CATEGORIES}
    for lineno, obj in json_lines(path, "{category, prompt} object"):
        category, text = obj.get("category"), obj.get("prompt")
        if category not in CATEGORIES or not isinstance(text, str) or not text.strip():
            raise HHAlignError(f"{path}:{lineno}: needs 'category' (harmful or helpful) and a non-empty 'prompt'")
        pid = obj.get("prompt_id", f"{category}-{counts[category]:03d}")  # 0 is an id, not a missing one
        if isinstance(pid, bool) or not isinstance(pid, (str, int)) or not str(pid).strip():
            raise HHAlignError(f"{path}:{lineno}: prompt_id {pid!r} is not an id; use a non-empty text or a number, "
                               "or leave it out")
        counts[category] += 1
        prompts.append(EvalPrompt(str(pid), category, text))
    if not prompts:
        raise HHAlignError(f"{path}: no prompts; add lines like " '{"category": "helpful", "prompt": "Human: ..."}')
    ids = [p.prompt_id for p in prompts]
    if len(set(ids)) != len(ids):
        raise HHAlignError(f"{path}: duplicate prompt_id values; make them unique or leave them out")
    return prompts


def limit_prompts(prompts: Sequence[EvalPrompt], limit: int | None) -> list[EvalPrompt]:
    """The first ``limit`` prompts of each category, order kept."""
    if limit is None:
        return list(prompts)
    if limit <= 0:
        raise HHAlignError(f"--limit must be a positive number of prompts per category, got {limit}")
    seen = {c: 0 for c in CATEGORIES}
    kept = []
    for p in prompts:
        if seen[p.category] < limit:
            kept.append(p)
            seen[p.category] += 1
    return kept
