"""The HH-RLHF turn format: transcripts of "\n\nHuman: ..." / "\n\nAssistant: ..." turns, the study's prompt text, and
how a prompt becomes model input and a generation becomes a reply under the evaluation protocols: ``paper`` (the
prompt as is), ``chat`` (plus the assistant cue) and ``template`` (the turns as chat messages through the model's own
chat template, for instruct models)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import HHAlignError

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
PROTOCOLS = ("paper", "chat", "template")
# Where a chat reply ends: the model starts the next human turn (kept for streaming stop checks).
HUMAN_MARKERS = (HUMAN, "\nHuman:")
# Where a chat reply ends: any speaker label at the start of the text or after whitespace, so inline turns such as
# "Sure. Human: thanks" end it too (46 of the 8,552 chosen HH-RLHF test replies hold an inline "Human:", 51 one of
# either label). Labels glued to a word ("non-Human:") are text, not turns.
TURN_LABEL = re.compile(r"(?:^|(?<=\s))(?:Human|Assistant):")
# A speaker label that opens a turn of a transcript (at its start or after a blank line), as parse_turns reads them.
_TURN_START = re.compile(r"(?:^|\n\n)(Human|Assistant):")


@dataclass(frozen=True)
class Turn:
    """One turn of a transcript: role is "Human" or "Assistant"."""

    role: str
    text: str


def parse_turns(transcript: str) -> list[Turn]:
    """Split an HH transcript into turns; blank lines inside a turn stay in that turn."""
    text = "\n\n" + transcript.lstrip("\n")
    marks = sorted(
        (m.start(), m.end(), m.group(1)) for m in re.finditer(r"\n\n(Human|Assistant):", text)
    )
    if not any(role == "Human" for _, _, role in marks):
        raise HHAlignError(
            f"transcript has no 'Human:'/'Assistant:' turns: {transcript[:60]!r}...; rows must be HH-RLHF dialogues"
        )
    ends = [start for start, _, _ in marks[1:]] + [len(text)]
    return [Turn(role, text[body:end].strip(" ")) for (_, body, role), end in zip(marks, ends)]


def render_turns(turns: Sequence[Turn]) -> str:
    """Inverse of :func:`parse_turns` for well-formed transcripts."""
    return "".join(f"\n\n{t.role}: {t.text}" if t.text else f"\n\n{t.role}:" for t in turns)


def split_final_reply(transcript: str) -> tuple[str, str]:
    """(history up to and including the last assistant cue, the last assistant reply)."""
    cut = transcript.rfind(ASSISTANT)
    if cut < 0 or transcript.rfind(HUMAN) < 0:
        raise HHAlignError(
            f"transcript has no 'Human:'/'Assistant:' turns: {transcript[:60]!r}...; rows must be HH-RLHF dialogues"
        )
    cut += len(ASSISTANT)
    return transcript[:cut], transcript[cut:].strip()


def paper_prompt(chosen: str) -> str:
    """The study's prompt text: parts of ``chosen`` split on blank lines, minus a final "Assistant:" part.

    This keeps the study's quirk: the last assistant turn is dropped only if its first paragraph is the
    last part, and earlier blank-line paragraphs inside turns stay; no assistant cue is appended.
    """
    parts = chosen.strip().split("\n\n")
    if parts and parts[-1].startswith("Assistant:"):
        parts = parts[:-1]
    return "\n\n".join(parts)

def last_speaker(prompt: str) -> str | None:
    """"Human" or "Assistant": whose turn the prompt ends in (None when it has no turn labels)."""
    roles = _TURN_START.findall(prompt.lstrip("\n"))
    return roles[-1] if roles else None


def model_input(prompt: str, protocol: str = "paper", tokenizer: Any = None) -> str:
    """The text fed to the model: ``paper`` uses the prompt as is; ``chat`` appends the assistant cue; ``template``
    renders the prompt's turns through ``tokenizer``'s chat template (:func:`template_input`).

    ``chat`` appends no cue when the prompt already ends in an assistant turn: an empty cue, or (the study's prompt
    quirk, 5 of its 100 prompts) the paragraphs of an assistant reply, which the model then continues.
    """
    if protocol == "paper":
        return prompt
    if protocol == "chat":
        return prompt if last_speaker(prompt) == "Assistant" else prompt.rstrip() + ASSISTANT
    if protocol == "template":
        if tokenizer is None:
            raise HHAlignError("--protocol template renders prompts with the model's chat template: it needs the "
                               "model's tokenizer")
        return template_input(tokenizer, prompt)
    raise HHAlignError(f"unknown --protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")


def postprocess(text: str, protocol: str = "paper") -> str:
    """``chat`` cuts the reply where the model starts another turn (see ``TURN_LABEL``); all strip whitespace.

    ``template`` replies are cut at the template's end-of-turn token before decoding (:func:`cut_at_turn_end`)."""
    if protocol == "chat":
        found = TURN_LABEL.search(text)
        if found:
            text = text[: found.start()]
    return text.strip()


# --- chat templates (--protocol template) -------------------------------------------------------------------------

ROLES = {"Human": "user", "Assistant": "assistant"}
# A reply no chat template alters: rendered as an assistant message, what follows it is the template's end of turn.
_PROBE = "hhalign-end-of-turn-probe"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def serving_protocol(tokenizer: Any) -> str:
    """The protocol the Space chats in with a model: its chat template when it has one (instruct models), else the
    evaluator's ``chat`` protocol (HH turns with the assistant cue: base and HH-trained models)."""
    return "template" if has_chat_template(tokenizer) else "chat"


def check_template(tokenizer: Any, model_name: str) -> None:
    """One-line refusal of ``--protocol template`` for a model whose tokenizer has no chat template."""
    if not has_chat_template(tokenizer):
        raise HHAlignError(f"model {model_name!r} has no chat template (a base model?), so --protocol template cannot "
                           "format its prompts: use --protocol chat or paper for it")


def prompt_messages(prompt: str) -> tuple[list[dict], bool]:
    """An HH prompt as chat messages (Human -> user, Assistant -> assistant) and whether the last one is an
    unfinished assistant reply for the model to continue.

    A trailing empty assistant cue is dropped (the generation prompt takes its place); consecutive turns of one
    speaker are joined, since many templates insist on alternating roles; text without turn labels is one user
    message."""
    try:
        turns = parse_turns(prompt)
    except HHAlignError:
        turns = [Turn("Human", prompt.strip())]
    if turns and turns[-1].role == "Assistant" and not turns[-1].text:
        turns = turns[:-1]
    messages: list[dict] = []
    for t in turns:
        role = ROLES[t.role]
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = f"{messages[-1]['content']}\n\n{t.text}".strip()
        else:
            messages.append({"role": role, "content": t.text})
    return messages, bool(messages) and messages[-1]["role"] == "assistant"


def template_input(tokenizer: Any, prompt: str) -> str:
    """``prompt`` through the tokenizer's chat template with the generation prompt (an assistant reply the prompt
    already began is continued instead). Tokenize the result without adding special tokens: the template wrote
    them (see :func:`adds_special_tokens`)."""
    messages, unfinished = prompt_messages(prompt)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not unfinished,
                                         continue_final_message=unfinished)


def adds_special_tokens(protocol: str) -> bool:
    """Whether the tokenizer adds its special tokens (BOS) to model input: not to a rendered chat template, which
    already holds them (a second BOS would change what the model sees)."""
    return protocol != "template"


def turn_end_ids(tokenizer: Any, generation_eos: Any = None) -> list[int]:
    """Token ids that end an assistant turn of the tokenizer's chat template: the special token the template writes
    right after an assistant message (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``, ``<|end|>``), then the
    tokenizer's EOS and ``generation_eos`` (a generation config's ``eos_token_id``: an id or a list)."""
    ids: list[int] = []
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = {i for i in getattr(tokenizer, "added_tokens_decoder", {}) or {}}
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": _PROBE}], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot render this: fall back to EOS
        text = ""
    if _PROBE in text:
        after = text[text.index(_PROBE) + len(_PROBE):]
        following = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
        if following and (following[0] in special or following[0] in added):
            ids.append(following[0])
    extra = generation_eos if isinstance(generation_eos, (list, tuple)) else [generation_eos]
    for i in [tokenizer.eos_token_id, *extra]:
        if i is not None and i not in ids:
            ids.append(int(i))
    return ids


def cut_at_turn_end(tokens: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """``tokens`` up to (without) the first end-of-turn token."""
    stops = set(stop_ids)
    for i, t in enumerate(tokens):
        if t in stops:
            return list(tokens[:i])
    return list(tokens)
