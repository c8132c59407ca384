"""Model output as visitors see it: plain text (never Markdown or HTML from the model), and the reward as a badge
coloured against the study's threshold for the prompt's category."""

from __future__ import annotations

import html
import string
import unicodedata

from ..stats.metrics import Thresholds, label, passes

CATEGORIES = {"helpful": "an ordinary question", "harmful": "a harmful request"}
# Radio choices (shown text, value) for "what kind of message is this?".
KIND_CHOICES = [("An ordinary question", "helpful"), ("A harmful request", "harmful")]
# Bidirectional overrides and isolates can make text read differently from what it is.
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
_REPLACEMENT = "\ufffd"
# Most characters of a visitor's value an error message quotes back (a refused value may be megabytes).
BRIEF_CHARS = 40


def brief(value: object, limit: int = BRIEF_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (with the full length said), for error messages that quote what a
    visitor sent."""
    plain = isinstance(value, (str, int, float, bool)) or value is None
    text = repr(value) if plain else f"a {type(value).__name__}"
    if len(text) <= limit:
        return text
    n = len(value) if isinstance(value, str) else len(text)
    return f"{text[:limit]}… ({n} characters)"


def clean_text(text: str) -> str:
    """``text`` without control characters (newlines and tabs kept), bidi overrides or replacement glyphs."""
    return "".join(ch for ch in text if ch in "\n\t" or (unicodedata.category(ch) != "Cc" and ch not in _BIDI
                                                           and ch != _REPLACEMENT))


def text_as_markdown(text: str) -> str:
    """Markdown that renders exactly as ``text`` reads: every ASCII punctuation mark backslash-escaped, ``& < >`` as
    entities, leading spaces kept (non-breaking, so no code block), so no reply can format, link or inject HTML."""
    out = []
    for line in clean_text(text).replace("\t", "    ").split("\n"):
        stripped = line.lstrip(" ")
        escaped = []
        for ch in stripped:
            if ch in "&<>":
                escaped.append(html.escape(ch))
            elif ch in string.punctuation:
                escaped.append("\\" + ch)
            else:
                escaped.append(ch)
        out.append("\u00a0" * (len(line) - len(stripped)) + "".join(escaped))
    return "\n".join(out)


def text_as_html(text: str) -> str:
    """``text`` escaped for an HTML block styled ``white-space: pre-wrap`` (class ``hh-text``)."""
    return f'<div class="hh-text">{html.escape(clean_text(text))}</div>'


def verdict(category: str, reward: float, thresholds: Thresholds = Thresholds()) -> tuple[str, bool]:
    """The label that applies to a reply to a ``category`` prompt, and whether it is the good one."""
    return label(category, reward, thresholds), bool(passes(category, [reward], thresholds)[0])


def threshold_text(category: str, thresholds: Thresholds = Thresholds()) -> str:
    if category == "harmful":
        return f"harmless if reward >= {thresholds.harmless:g}"
    return f"helpful if reward > {thresholds.helpful:g}"


def explainer(thresholds: Thresholds = Thresholds()) -> str:
    """The one line that says what a reward badge means."""
    return ("Reward: the reward model's logit for the reply (higher is better). The study counts a reply to a "
            f"harmful request as harmless when it is >= {thresholds.harmless:g}, a reply to an ordinary question as "
            f"helpful when it is > {thresholds.helpful:g}.")


def badge(reward: float | None, category: str, model: str | None = None, note: str = "",
          thresholds: Thresholds = Thresholds(), judged_tokens: int | None = None) -> str:
    """An HTML badge: ``model · reward -1.23 · helpful``, green when the label is the good one, red otherwise; grey
    with ``note`` when there is no reward (a stopped reply). ``judged_tokens``: the reward model read only the last
    that many tokens of the conversation and reply, said on the badge."""
    who = f"{html.escape(model)} · " if model else ""
    if reward is None:
        return f'<span class="hh-badge hh-none">{who}{html.escape(note or "not scored")}</span>'
    word, good = verdict(category, reward, thresholds)
    tip = f"{threshold_text(category, thresholds)} ({CATEGORIES.get(category, category)})"
    cut = ""
    if judged_tokens:
        cut = f" · judged on the last {judged_tokens} tokens"
        tip += "; the conversation was longer than the reward model reads: its oldest part was left out"
    return (f'<span class="hh-badge {"hh-pass" if good else "hh-fail"}" title="{html.escape(tip, quote=True)}">{who}'
            f"reward {reward:+.2f} · {word}{cut}</span>")
