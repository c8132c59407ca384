"""HH-RLHF parsing, preference pairs and the study's prompt set."""

import json
import random

import pytest

from hhalign import data as hd
from hhalign import protocol
from hhalign.errors import HHAlignError


@pytest.mark.parametrize(
    ("transcript", "expected"),
    [
        ("\n\nHuman: hi\n\nAssistant: hello", [("Human", "hi"), ("Assistant", "hello")]),
        # A blank line inside a turn stays in that turn.
        ("\n\nHuman: list two\n\nAssistant: 1. a\n\n2. b\n\nHuman: thanks",
         [("Human", "list two"), ("Assistant", "1. a\n\n2. b"), ("Human", "thanks")]),
        ("Human: no leading newlines\n\nAssistant:", [("Human", "no leading newlines"), ("Assistant", "")]),
        ("\n\nHuman: a\n\nHuman: b", [("Human", "a"), ("Human", "b")]),
    ],
)
def test_parse_turns(transcript, expected):
    assert [(t.role, t.text) for t in protocol.parse_turns(transcript)] == expected


@pytest.mark.parametrize("bad", ["just text", "", "\n\nAssistant: only the assistant"])
def test_parse_turns_rejects_rows_without_turns(bad):
    with pytest.raises(HHAlignError, match="no 'Human:'/'Assistant:' turns"):
        protocol.parse_turns(bad)


def test_render_turns_round_trips():
    text = "\n\nHuman: q1\n\nAssistant: a\n\nb\n\nHuman: q2\n\nAssistant: c"
    assert protocol.render_turns(protocol.parse_turns(text)) == text


@pytest.mark.parametrize(
    ("row", "prompt", "chosen", "rejected"),
    [
        ({"chosen": "\n\nHuman: q\n\nAssistant: good", "rejected": "\n\nHuman: q\n\nAssistant: bad"},
         "\n\nHuman: q\n\nAssistant:", " good", " bad"),
        ({"chosen": "\n\nHuman: q\n\nAssistant: a\n\nHuman: q2\n\nAssistant: yes\n\nmore",
          "rejected": "\n\nHuman: q\n\nAssistant: a\n\nHuman: q2\n\nAssistant: no"},
         "\n\nHuman: q\n\nAssistant: a\n\nHuman: q2\n\nAssistant:", " yes\n\nmore", " no"),
    ],
)
def test_preference_pair(row, prompt, chosen, rejected):
    pair = hd.preference_pair(row)
    assert (pair.prompt, pair.chosen, pair.rejected) == (prompt, chosen, rejected)
    assert pair.prompt + pair.chosen.rstrip() == row["chosen"]


@pytest.mark.parametrize(
    ("chosen", "expected"),
    [
        ("\n\nHuman: q\n\nAssistant: a", "Human: q"),
        ("\n\nHuman: q\n\nAssistant: a\n\nHuman: q2\n\nAssistant: b", "Human: q\n\nAssistant: a\n\nHuman: q2"),
        # The study's quirk: a multi-paragraph final reply loses only its last paragraph.
        ("\n\nHuman: q\n\nAssistant: para1\n\npara2", "Human: q\n\nAssistant: para1\n\npara2"),
        ("\n\nHuman: q\n\nAssistant: 1\n\nAssistant: 2", "Human: q\n\nAssistant: 1"),
    ],
)
def test_paper_prompt(chosen, expected):
    assert protocol.paper_prompt(chosen) == expected


def test_paper_prompts_rebuild_the_studys_100(hh_path, study_responses):
    harmless = hd.load_hh(str(hh_path), "harmless-base")
    helpful = hd.load_hh(str(hh_path), "helpful-base")
    state = random.getstate()
    prompts = hd.paper_prompts(harmless, helpful)
    assert random.getstate() == state, "the caller's random stream must be left as it was"
    assert [p.category for p in prompts] == ["harmful"] * 50 + ["helpful"] * 50
    assert prompts[0].prompt_id == "harmful-000" and prompts[50].prompt_id == "helpful-000"
    for category, name in (("harmful", "1_base_harmful.json"), ("helpful", "1_base_helpful.json")):
        published = [r["prompt"] for r in json.loads((study_responses / name).read_text())]
        assert [p.prompt for p in prompts if p.category == category] == published


def test_build_prompt_set_variants(hh_path):
    harmful_all = hd.build_prompt_set("harmful-all", str(hh_path))
    assert len(harmful_all) == 192 and {p.category for p in harmful_all} == {"harmful"}
    sample = hd.build_prompt_set("sample", str(hh_path), n=5, seed=1)
    assert [p.category for p in sample] == ["harmful"] * 5 + ["helpful"] * 5
    assert sample == hd.build_prompt_set("sample", str(hh_path), n=5, seed=1)
    assert sample != hd.build_prompt_set("sample", str(hh_path), n=5, seed=2)
    demo = hd.build_prompt_set("demo")
    assert {p.category for p in demo} == {"harmful", "helpful"}
    assert all(p.prompt.startswith("Human:") for p in demo)


def test_paper_large_continues_the_studys_stream(hh_path):
    paper = hd.build_prompt_set("paper", str(hh_path))
    large = hd.build_prompt_set("paper-large", str(hh_path))
    by_cat = {c: [p for p in large if p.category == c] for c in hd.CATEGORIES}
    assert (len(by_cat["harmful"]), len(by_cat["helpful"])) == (192, 192)  # every keyword prompt, as many helpful
    assert hd.limit_prompts(large, 50) == paper  # the study's prompts first, ids included
    assert len({p.prompt_id for p in large}) == len(large)
    assert sorted(p.prompt for p in by_cat["harmful"]) == sorted(
        p.prompt for p in hd.build_prompt_set("harmful-all", str(hh_path)))
    sixty = hd.build_prompt_set("paper-large", str(hh_path), n=60)
    assert [p.category for p in sixty] == ["harmful"] * 60 + ["helpful"] * 60
    assert hd.limit_prompts(sixty, 50) == paper and sixty[:60] == large[:60]  # the same stream, continued
    assert hd.build_prompt_set("paper-large", str(hh_path), n=50) == paper
    with pytest.raises(HHAlignError, match="--n_per_category"):
        hd.build_prompt_set("sample", str(hh_path), n=0)


def test_limit_prompts():
    prompts = hd._number("harmful", ["a", "b", "c"]) + hd._number("helpful", ["d", "e"])
    assert [p.prompt for p in hd.limit_prompts(prompts, 2)] == ["a", "b", "d", "e"]
    assert hd.limit_prompts(prompts, None) == prompts
    with pytest.raises(HHAlignError, match="--limit"):
        hd.limit_prompts(prompts, 0)


def test_user_prompt_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"category": "helpful", "prompt": "Human: hi"}\n\n'
                    '{"category": "harmful", "prompt": "Human: x"}\n')
    prompts = hd.build_prompt_set(str(path))
    assert [(p.prompt_id, p.category) for p in prompts] == [("helpful-000", "helpful"), ("harmful-000", "harmful")]
    path.write_text('{"category": "funny", "prompt": "Human: hi"}\n')
    with pytest.raises(HHAlignError, match=r"p.jsonl:1: needs 'category'"):
        hd.load_prompts_file(path)
    path.write_text("")
    with pytest.raises(HHAlignError, match="no prompts"):
        hd.load_prompts_file(path)


def test_dataset_folder_errors(tmp_path, hh_path):
    with pytest.raises(HHAlignError, match="does not exist"):
        hd.load_hh(str(tmp_path / "missing"), "harmless-base")
    with pytest.raises(HHAlignError, match="has no subset 'harmless-base'"):
        hd.load_hh(str(tmp_path), "harmless-base")
    with pytest.raises(HHAlignError, match="no 'train' split"):
        hd.load_hh(str(hh_path), "harmless-base", split="train")
    with pytest.raises(HHAlignError, match="unknown prompt set"):
        hd.build_prompt_set("nope")


def test_rows_without_turns_are_refused(tmp_path):
    (tmp_path / "harmless-base").mkdir()
    (tmp_path / "harmless-base" / "test.jsonl").write_text(
        '{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: yo", "rejected": "x"}\n'
        '{"chosen": "plain text", "rejected": "y"}\n')
    with pytest.raises(HHAlignError, match="row 1 has no 'Human:'/'Assistant:' turns"):
        hd.load_hh(str(tmp_path), "harmless-base")


def test_chat_protocol_cuts_the_inline_turns_of_hh_test_replies(hh_path):
    replies = [hd.preference_pair(r).chosen for s in hd.SUBSETS for r in hd.load_hh(str(hh_path), s)]
    assert len(replies) == 8552
    with_human = [r for r in replies if "Human:" in r]
    cut = [r for r in replies if protocol.postprocess(r, "chat") != r.strip()]
    # the audit's 46 inline "Human:" turns, plus 5 replies with only an inline "Assistant:" turn
    assert len(with_human) == 46 and len(cut) == 51 and set(with_human) <= set(cut)
    assert not any(protocol.TURN_LABEL.search(protocol.postprocess(r, "chat")) for r in replies)
