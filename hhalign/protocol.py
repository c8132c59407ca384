"""The HH-RLHF turn format: transcripts of "\n\nHuman: ..." / "\n\nAssistant: ..." turns, the study's prompt text, and
how a prompt becomes model input and a generation becomes a reply under the two evaluation protocols."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import HHAlignError

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
PROTOCOLS = ("paper", "chat")
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


def model_input(prompt: str, protocol: str = "paper") -> str:
    """The text fed to the model: ``paper`` uses the prompt as is; ``chat`` appends the assistant cue.

    ``chat`` appends no cue when the prompt already ends in an assistant turn: an empty cue, or (the study's prompt
    quirk, 5 of its 100 prompts) the paragraphs of an assistant reply, which the model then continues.
    """
    if protocol == "paper":
        return prompt
    if protocol == "chat":
        return prompt if last_speaker(prompt) == "Assistant" else prompt.rstrip() + ASSISTANT
    raise HHAlignError(f"unknown --protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")


def postprocess(text: str, protocol: str = "paper") -> str:
    """``chat`` cuts the reply where the model starts another turn (see ``TURN_LABEL``); both strip whitespace."""
    if protocol == "chat":
        found = TURN_LABEL.search(text)
        if found:
            text = text[: found.start()]
    return text.strip()
