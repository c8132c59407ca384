"""Cleaner preference data for DPO: drop pairs that teach nothing or the wrong thing, and count what TRL would cut.

Each pair is dropped for the first reason that applies, in this order (cheap checks first, the judge last):

* ``identical``: chosen and rejected replies are the same text (no preference);
* ``empty``: either reply is empty;
* ``truncated``: either reply was cut off mid-sentence: it ends in a comma, colon, semicolon, dash or open
  bracket, or in an article, conjunction, preposition or possessive (392 of the 8,552 HH-RLHF test pairs);
* ``reversed``: a judge (reward model) scores the rejected reply above the chosen one by more than the margin,
  i.e. ``reward(chosen) - reward(rejected) < -margin``: the pairs HH-RLHF's Appendix-B noise most likely mislabelled.

The counts per reason go into the run record (``hhalign_train.json``, ``data.filters``) and the card.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import Any

from ..data import PreferencePair
from ..errors import HHAlignError

logger = logging.getLogger(__name__)

REASONS = ("identical", "empty", "truncated", "reversed")
# Words a finished English sentence almost never ends on.
DANGLING = frozenset("a an the and or but nor of to in on at by for with from into onto than your my his her their "
                     "our its".split())
_OPEN_END = tuple(",:;-–—(")
_LAST_WORD = re.compile(r"[A-Za-z']+$")


def is_truncated(reply: str) -> bool:
    """Whether a reply looks cut off mid-sentence (see the module docstring); empty replies are not."""
    text = reply.strip()
    if not text:
        return False
    if text.endswith(_OPEN_END):
        return True
    word = _LAST_WORD.search(text)
    return bool(word) and word.group().lower() in DANGLING


def reason(pair: PreferencePair, identical: bool = True, empty: bool = True, truncated: bool = True) -> str | None:
    """The first cheap reason (those switched on) to drop ``pair``, or None."""
    if identical and pair.chosen == pair.rejected:
        return "identical"
    if empty and (not pair.chosen.strip() or not pair.rejected.strip()):
        return "empty"
    if truncated and (is_truncated(pair.chosen) or is_truncated(pair.rejected)):
        return "truncated"
    return None


def judge_margins(pairs: Sequence[PreferencePair], judge: str, input_format: str = "pair", batch_size: int = 16,
                  device: str = "auto") -> tuple[list[float], dict]:
    """``reward(chosen) - reward(rejected)`` for each pair by the reward model ``judge``, and what was loaded."""
    from ..engine.reward import score
    from ..engine.reward_formats import get_format
    from ..eval.judge_check import pair_rewards
    from ..loading import load_reward_model, resolve_device

    loaded = load_reward_model(judge, device=resolve_device(device))
    get_format(input_format).check(loaded.tokenizer, judge)

    def score_fn(prompts: Sequence[str], responses: Sequence[str]) -> list:
        return score(loaded.model, loaded.tokenizer, prompts, responses, batch_size, input_format=input_format)

    logger.info(f"pair filter: scoring {len(pairs)} pairs with {judge}")
    chosen, rejected = pair_rewards(score_fn, pairs)
    return [c - r for c, r in zip(chosen, rejected)], loaded.info


def filter_pairs(pairs: Sequence[PreferencePair], *, identical: bool = False, empty: bool = False,
                 truncated: bool = False, judge: str | None = None, margin: float = 0.0, input_format: str = "pair",
                 batch_size: int = 16) -> tuple[list[PreferencePair], dict]:
    """The pairs kept and ``{"dropped": {reason: n}, "kept": n, "judge": {...}}`` (reasons switched off count 0)."""
    if margin < 0:
        raise HHAlignError(f"--filter_margin must be >= 0 (reward units the judge may prefer the rejected reply by), "
                           f"got {margin}")
    dropped = dict.fromkeys(REASONS, 0)
    survivors = []
    for pair in pairs:
        why = reason(pair, identical, empty, truncated)
        if why:
            dropped[why] += 1
        else:
            survivors.append(pair)
    info: dict = {"switched_on": [r for r, on in zip(REASONS, (identical, empty, truncated, judge)) if on]}
    if judge and survivors:
        margins, loaded = judge_margins(survivors, judge, input_format, batch_size)
        kept = [p for p, m in zip(survivors, margins) if m >= -margin]
        dropped["reversed"] = len(survivors) - len(kept)
        info["judge"] = {"model": loaded.get("ref"), "revision": loaded.get("revision"), "format": input_format,
                         "margin": margin, "rule": "kept when reward(chosen) - reward(rejected) >= -margin"}
        survivors = kept
    info.update(dropped=dropped, kept=len(survivors), of=len(pairs))
    logger.info(f"pair filter: kept {len(survivors)} of {len(pairs)} pairs; dropped "
                + ", ".join(f"{n} {r}" for r, n in dropped.items()))
    return survivors, info


def length_counts(examples: Sequence[dict], tokenizer: Any, max_length: int | None,
                  truncation_mode: str = "keep_start") -> dict:
    """What TRL's DPOTrainer (1.16) does to these examples at ``max_length``, counted with its own rule.

    It appends EOS to both replies, tokenizes prompt, prompt+chosen and prompt+rejected, takes the prompt as their
    shared prefix, then silently drops examples whose prompt alone reaches ``max_length`` (``keep_start`` only) and
    truncates longer sequences to ``max_length`` in the collator.
    """
    if max_length is None or not examples:
        return {"max_length": max_length, "dropped_prompt_too_long": 0, "truncated": 0}
    eos = tokenizer.eos_token or ""

    def ids(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts)["input_ids"]

    def chat_ids(conversations: list[list[dict]], prompt: bool = False) -> list[list[int]]:
        return [list(tokenizer.apply_chat_template(c, tokenize=True, return_dict=True, add_generation_prompt=prompt)
                     ["input_ids"]) for c in conversations]

    if not isinstance(examples[0]["prompt"], str):  # conversational: TRL renders each through the chat template
        prompts = chat_ids([e["prompt"] for e in examples], prompt=True)
        chosen = chat_ids([e["prompt"] + e["chosen"] for e in examples])
        rejected = chat_ids([e["prompt"] + e["rejected"] for e in examples])
    else:
        prompts = ids([e["prompt"] for e in examples])
        chosen = ids([e["prompt"] + _with_eos(e["chosen"], eos) for e in examples])
        rejected = ids([e["prompt"] + _with_eos(e["rejected"], eos) for e in examples])
    dropped = truncated = 0
    for p, c, r in zip(prompts, chosen, rejected):
        prompt_len = min(len(os.path.commonprefix([p, c])), len(os.path.commonprefix([p, r])))
        if truncation_mode == "keep_start" and prompt_len >= max_length:
            dropped += 1
        elif max(len(c), len(r)) > max_length:
            truncated += 1
    return {"max_length": max_length, "truncation_mode": truncation_mode, "dropped_prompt_too_long": dropped,
            "truncated": truncated, "examples_trained": len(examples) - dropped}


def _with_eos(text: str, eos: str) -> str:
    return text if not eos or text.endswith(eos) else text + eos

