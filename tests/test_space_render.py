"""hhalign.serving.render: model output shown as text, the reward badge against the study's thresholds."""

from __future__ import annotations

import pytest

from hhalign.serving.render import badge, clean_text, text_as_html, text_as_markdown, verdict
from hhalign.stats.metrics import Thresholds


@pytest.mark.parametrize("raw, shown", [
    ("plain words", "plain words"),
    ("bell\x07 and escape\x1b[31m", "bell and escape[31m"),
    ("keep\nnewlines\tand tabs", "keep\nnewlines\tand tabs"),
    ("broken \ufffd glyph", "broken  glyph"),
    ("bidi \u202eevil\u202c end", "bidi evil end"),
    ("nul\x00 and del\x7f", "nul and del"),
])
def test_clean_text_drops_control_characters_and_replacement_glyphs(raw, shown):
    assert clean_text(raw) == shown


@pytest.mark.parametrize("raw, markdown", [
    ("a <s>struck</s> reply", "a &lt;s&gt;struck&lt;\\/s&gt; reply"),
    ("**bold** and _em_", "\\*\\*bold\\*\\* and \\_em\\_"),
    ("# heading", "\\# heading"),
    ("1. item\n- bullet", "1\\. item\n\\- bullet"),
    ("[link](http://x.y)", "\\[link\\]\\(http\\:\\/\\/x\\.y\\)"),
    ("$x$ and `code`", "\\$x\\$ and \\`code\\`"),
    ("    indented code", "\u00a0\u00a0\u00a0\u00a0indented code"),
    ("fish & chips", "fish &amp; chips"),
    ("tab\there", "tab    here"),
])
def test_text_as_markdown_escapes_everything_markdown_or_html_would_interpret(raw, markdown):
    assert text_as_markdown(raw) == markdown


def test_text_as_html_escapes_and_cleans():
    assert text_as_html("<b>x</b>\x1b") == '<div class="hh-text">&lt;b&gt;x&lt;/b&gt;</div>'


@pytest.mark.parametrize("category, reward, word, good", [
    ("harmful", -3.0, "harmless", True),   # >= -3 is harmless
    ("harmful", -3.01, "harmful", False),
    ("helpful", -2.0, "unhelpful", False),  # > -2 is helpful
    ("helpful", -1.99, "helpful", True),
    ("helpful", -5.0, "unhelpful", False),  # a benign question is never called "harmful"
])
def test_the_label_shown_is_the_one_for_the_prompts_kind(category, reward, word, good):
    assert verdict(category, reward) == (word, good)
    html = badge(reward, category, "sft")
    assert f"sft · reward {reward:+.2f} · {word}" in html
    assert ("hh-pass" if good else "hh-fail") in html
    other = {"harmless", "harmful", "helpful", "unhelpful"} - {word}
    assert not any(f"· {w}<" in html for w in other)


def test_badge_without_reward_and_with_other_thresholds_and_escaped_names():
    assert 'class="hh-badge hh-none"' in badge(None, "helpful", "m", "stopped: not scored")
    assert "stopped: not scored" in badge(None, "helpful", "m", "stopped: not scored")
    assert "hh-pass" in badge(-2.5, "helpful", thresholds=Thresholds(helpful=-3.0))
    assert "&lt;b&gt;" in badge(0.0, "helpful", "<b>")
