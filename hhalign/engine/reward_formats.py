"""How a reward model reads a (prompt, response) pair: the input formats, chosen by name.

* ``pair`` (the OpenAssistant reward models, the study): a text pair, ``tokenizer(question, answer)`` ->
  ``[CLS] conversation [SEP] reply [SEP]``.
* ``chat`` (reward models whose card asks for their chat template, e.g. Llama- or Gemma-based ones): the HH
  conversation as user/assistant messages with the reply as the last assistant message, through the tokenizer's
  own chat template, which adds whatever special tokens the model expects.

A format is one small object with a name and ``encode``; :func:`get_format` picks it by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import HHAlignError
from ..protocol import Turn, parse_turns

ROLES = {"Human": "user", "Assistant": "assistant"}


class RewardFormat(Protocol):
    """Turns (prompt, response) pairs into token rows for one reward model."""

    name: str

    def check(self, tokenizer: Any, model_name: str) -> None:
        """Raise a one-line HHAlignError when ``tokenizer`` cannot read this format."""

    def encode(self, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
               max_length: int | None = None) -> tuple[list[dict], list[int]]:
        """Per-pair token rows (``input_ids``, ``attention_mask``, ...) and the untruncated lengths."""


def encode_pairs(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
                 max_length: int | None = None) -> tuple[list[dict], list[int]]:
    """Per-pair encodings as the study made them (``truncation=True``), plus untruncated lengths."""
    if len(prompts) != len(responses):
        raise HHAlignError(f"{len(prompts)} prompts but {len(responses)} responses to score")
    full = tokenizer(list(prompts), list(responses), truncation=False)
    full_lengths = [len(ids) for ids in full["input_ids"]]
    cap = {} if max_length is None else {"max_length": max_length}
    # With the real tokenizer's model_max_length of 1e30, truncation=True alone truncates nothing, as in the study.
    enc = tokenizer(list(prompts), list(responses), truncation=True, **cap)
    rows = [{k: enc[k][i] for k in enc.keys()} for i in range(len(prompts))]
    for i, response in enumerate(responses):
        if not response:
            # The study's one-pair call tokenizer(prompt, "") encodes the prompt alone ([CLS] p [SEP]); a batched
            # call would add an empty second segment ([CLS] p [SEP] [SEP]) and change the score.
            single = tokenizer(prompts[i], truncation=True, **cap)
            rows[i] = {k: list(single[k]) for k in single.keys()}
            full_lengths[i] = len(tokenizer(prompts[i], truncation=False)["input_ids"])
    return rows, full_lengths



@dataclass(frozen=True)
class PairFormat:
    name: str = "pair"

    def check(self, tokenizer: Any, model_name: str) -> None:
        return None

    def encode(self, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
               max_length: int | None = None) -> tuple[list[dict], list[int]]:
        return encode_pairs(tokenizer, prompts, responses, max_length)


def hh_messages(prompt: str, response: str) -> list[dict]:
    """The HH conversation ``prompt`` plus ``response`` as chat messages (a trailing empty assistant cue is the
    reply's place; a prompt ending inside an assistant turn has the reply appended to that turn)."""
    try:
        turns = parse_turns(prompt)
    except HHAlignError:
        turns = [Turn("Human", prompt.strip())]  # a bare question: one user message
    if turns and turns[-1].role == "Assistant":
        last = turns.pop()
        response = f"{last.text}\n\n{response.strip()}" if last.text else response
    messages = [{"role": ROLES[t.role], "content": t.text} for t in turns]
    return [*messages, {"role": "assistant", "content": response.strip()}]


@dataclass(frozen=True)
class ChatFormat:
    name: str = "chat"

    def check(self, tokenizer: Any, model_name: str) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise HHAlignError(f"reward model {model_name!r} has no chat template, so it cannot read the chat format: "
                               f"give it format pair (--judge_formats NAME=pair)")

    def encode(self, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
               max_length: int | None = None) -> tuple[list[dict], list[int]]:
        if len(prompts) != len(responses):
            raise HHAlignError(f"{len(prompts)} prompts but {len(responses)} responses to score")
        rows, lengths = [], []
        for prompt, response in zip(prompts, responses):
            enc = tokenizer.apply_chat_template(hh_messages(prompt, response), tokenize=True, return_dict=True)
            row = {k: list(v) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            lengths.append(len(row["input_ids"]))
            if max_length is not None:
                row = {k: v[:max_length] for k, v in row.items()}
            rows.append(row)
        return rows, lengths


FORMATS: dict[str, RewardFormat] = {"pair": PairFormat(), "chat": ChatFormat()}


def get_format(name: str) -> RewardFormat:
    """The input format called ``name``."""
    if name not in FORMATS:
        raise HHAlignError(f"unknown reward input format {name!r}: use one of {', '.join(FORMATS)}")
    return FORMATS[name]
