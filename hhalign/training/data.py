"""The examples a training run sees: HH-RLHF rows (Hub, local copy or a JSONL file of pairs), sampled and turned into
SFT text, prompt/completion or DPO preference triples, with counts of everything dropped."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from ..data import load_rows, preference_pair, read_pairs_file  # noqa: F401 - read_pairs_file: for its users
from ..errors import HHAlignError
from .config import SFT_FORMATS, ScriptArguments

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """The examples a trainer sees and how they were obtained (recorded with the run and on the model card)."""

    examples: list[dict]
    info: dict


def _sample(rows: list, max_samples: int | None, seed: int) -> list:
    if max_samples is None or max_samples >= len(rows):
        return rows
    if max_samples <= 0:
        raise HHAlignError(f"--max_samples must be a positive number of rows, got {max_samples}")
    keep = sorted(random.Random(seed).sample(range(len(rows)), max_samples))
    return [rows[i] for i in keep]


def _pairs(rows: list[dict]) -> tuple[list, int]:
    """Preference pairs parsed exactly as the evaluator parses transcripts; malformed rows are counted, not fatal."""
    pairs, malformed = [], 0
    for row in rows:
        try:
            pairs.append(preference_pair(row))
        except HHAlignError:
            malformed += 1
    return pairs, malformed


def sft_examples(rows: list[dict], sft_format: str) -> tuple[list[dict], dict]:
    """``text`` = the chosen transcript as is; ``prompt_completion`` = (history up to the last cue, final reply)."""
    if sft_format == "text":
        return [{"text": r["chosen"]} for r in rows], {"format": "text (chosen transcript)", "malformed_rows": 0}
    if sft_format != "prompt_completion":
        raise HHAlignError(f"unknown --sft_format {sft_format!r}: use one of {', '.join(SFT_FORMATS)}")
    pairs, malformed = _pairs(rows)
    examples = [{"prompt": p.prompt, "completion": p.chosen} for p in pairs]
    return examples, {"format": "prompt_completion (history -> final chosen reply)", "malformed_rows": malformed}


def dpo_examples(rows: list[dict], drop_identical: bool, script_args: Any = None) -> tuple[list[dict], dict]:
    """(prompt, chosen, rejected) from :func:`hhalign.data.preference_pair`, without the pairs the filters drop
    (:mod:`.filters`: identical, empty, truncated replies, pairs a judge reverses)."""
    from .filters import filter_pairs

    pairs, malformed = _pairs(rows)
    identical = sum(p.chosen == p.rejected for p in pairs)
    a = script_args
    pairs, filters = filter_pairs(
        pairs, identical=drop_identical, empty=bool(getattr(a, "drop_empty_pairs", False)),
        truncated=bool(getattr(a, "drop_truncated_pairs", False)), judge=getattr(a, "filter_reward_model", None),
        margin=getattr(a, "filter_margin", 0.0), input_format=getattr(a, "filter_format", "pair"),
        batch_size=getattr(a, "filter_batch_size", 16))
    examples = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    return examples, {"format": "preference (prompt, chosen, rejected)", "malformed_rows": malformed,
                      "identical_pairs": identical, "dropped_identical_pairs": identical if drop_identical else 0,
                      "filters": filters}


def trim(examples: list[dict]) -> list[dict]:
    """Every text field that starts a transcript ("text", "prompt") made to start at "Human:"."""
    return [{k: v.lstrip("\n") if k in ("text", "prompt") else v for k, v in e.items()} for e in examples]


def build_training_data(kind: str, script_args: ScriptArguments, seed: int = 42) -> TrainingData:
    """Load, sample and convert the rows a run trains on; refuse an empty result with the counts that explain it."""
    rows, counts = load_rows(script_args.dataset_name, script_args.subsets, script_args.dataset_train_split)
    rows = _sample(rows, script_args.max_samples, seed)
    if kind == "sft":
        examples, info = sft_examples(rows, script_args.sft_format)
    else:
        examples, info = dpo_examples(rows, script_args.drop_identical_pairs, script_args)
    if script_args.trim_transcripts:
        examples = trim(examples)
    # Evaluation prompts start "Human:" ("</s>Human:" once tokenized); HH transcripts start "\n\nHuman:".
    info["text_start"] = "Human:" if script_args.trim_transcripts else "\n\nHuman:"
    info = {"dataset": script_args.dataset_name, "subsets": counts, "split": script_args.dataset_train_split,
            "max_samples": script_args.max_samples, "rows": len(rows), **info, "examples": len(examples)}
    if kind == "dpo":
        verb = "dropped" if script_args.drop_identical_pairs else "kept (as in the study)"
        logger.info(
            f"{info['identical_pairs']} of {len(rows)} pairs have identical chosen and rejected replies: {verb}")
    if info["malformed_rows"]:
        logger.info(f"skipped {info['malformed_rows']} rows without Human/Assistant turns")
    if not examples:
        raise HHAlignError(f"no training examples left after filtering ({len(rows)} rows from "
                           f"{script_args.dataset_name!r} {', '.join(counts)} split "
                           f"{script_args.dataset_train_split!r}, "
                           f"{info.get('dropped_identical_pairs', 0)} identical pairs dropped, "
                           f"{_other_drops(info)}"
                           f"{info['malformed_rows']} malformed): use other data or filters")
    return TrainingData(examples, info)


def _other_drops(info: dict) -> str:
    dropped = (info.get("filters") or {}).get("dropped") or {}
    return "".join(f"{n} {r} dropped, " for r, n in dropped.items() if n and r != "identical")


def conversational(data: TrainingData, kind: str) -> TrainingData:
    """The same examples in TRL's conversational format, for a base whose tokenizer has a chat template: HH turns as
    user/assistant messages (:func:`hhalign.protocol.prompt_messages`), replies as one assistant message; TRL applies
    the template (and its end-of-turn token) itself. ``text`` -> ``messages``; ``prompt``/``completion`` and
    ``prompt``/``chosen``/``rejected`` keep their keys, as message lists."""
    from ..protocol import prompt_messages

    def reply(text: str) -> list[dict]:
        return [{"role": "assistant", "content": text.strip()}]

    out = []
    for e in data.examples:
        if "text" in e:
            out.append({"messages": prompt_messages(e["text"])[0]})
            continue
        prompt = prompt_messages(e["prompt"])[0]
        if kind == "sft":
            out.append({"prompt": prompt, "completion": reply(e["completion"])})
        else:
            out.append({"prompt": prompt, "chosen": reply(e["chosen"]), "rejected": reply(e["rejected"])})
    info = {**data.info, "format": f"{data.info['format']}, as chat messages (the base's chat template)",
            "conversational": True}
    info.pop("text_start", None)  # the template, not the transcript, decides how a text starts
    return TrainingData(out, info)


def to_dataset(examples: list[dict]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({key: [e[key] for e in examples] for key in examples[0]})
