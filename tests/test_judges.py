"""Several judges on tiny models: the judge check (per subset, cached), thresholds, input formats, per-judge metrics,
agreement, resume and --from_responses with several judges, human votes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from hhalign.cli import run as cli_run
from hhalign.data import preference_pair
from hhalign.errors import HHAlignError
from hhalign.eval import judge_check as jc
from hhalign.eval.config import EvalConfig
from hhalign.eval.run import run
from hhalign.files import read_log
from hhalign.refs import DEFAULT_REWARD_MODEL, parse_model_ref
from hhalign.stats.inference import accuracy_ci, kappa_ci, spearman_ci
from hhalign.stats.judges import Judge, parse_judges, resolve_thresholds
from hhalign.stats.metrics import Thresholds

CHAT_TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"


# Tiny models run fastest on one thread; on a busy machine two are several times slower.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def second_judge(tmp_path_factory):
    """Another tiny reward model (another seed), which also carries a chat template."""
    from hhalign.testing.tiny import build_tiny_reward

    return build_tiny_reward(tmp_path_factory.mktemp("judge2") / "reward", seed=7, chat_template=CHAT_TEMPLATE)


def cli(argv, capsys):
    code = cli_run(lambda cfg: run(cfg), [EvalConfig], argv)
    return code, capsys.readouterr().err


def test_demo_with_two_judges_via_the_real_script(tiny_models, second_judge, tmp_path):
    """The issue's 'done when': per-judge metrics, agreement and the judge block, offline on tiny models."""
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HHALIGN_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(ROOT / "batch" / "eval.py"), "--demo", "--judge_check", "50",
                           "--reward_model", f"a={tiny_models.reward}", f"b={second_judge}", "--n_bootstrap", "300",
                           "--no_plots", "--threads", "1", "--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["judges"]) == {"a", "b"} and metrics["judges"]["a"]["primary"]
    assert metrics["models"] == metrics["judges"]["a"]["models"]  # the primary judge's numbers stay where they were
    assert metrics["judges"]["a"]["models"] != metrics["judges"]["b"]["models"]
    for name in ("a", "b"):
        check = metrics["judge"][name]
        assert check["n_per_subset"] == 50 and set(check["subsets"]) == {"demo_pairs"}
        acc = check["subsets"]["demo_pairs"]
        assert acc["n"] == 24 and acc["ci95"][0] <= acc["accuracy"] <= acc["ci95"][1]  # the 24 shipped demo pairs
        assert metrics["judges"][name]["thresholds"]["source"].startswith("calibrated")
    (entry,) = metrics["agreement"]
    assert (entry["judge_a"], entry["judge_b"], entry["n"]) == ("a", "b", 32)
    assert set(entry["categories"]) == {"harmful", "helpful"}
    assert {"value", "ci95", "agreement"} <= set(entry["kappa"]) and {"value", "ci95"} <= set(entry["spearman"])
    records = read_log(out / "responses.jsonl")
    assert all(set(r["rewards"]) == {"a", "b"} and r["reward"] == r["rewards"]["a"] for r in records)
    # the agreement block is exactly the statistics of those rewards and labels
    t = {n: metrics["judges"][n]["thresholds"] for n in ("a", "b")}
    good = {n: [r["rewards"][n] >= t[n]["harmless"] if r["category"] == "harmful"
                else r["rewards"][n] > t[n]["helpful"] for r in records] for n in ("a", "b")}
    assert entry["kappa"]["value"] == pytest.approx(kappa_ci(good["a"], good["b"], 10)["kappa"])
    assert entry["spearman"]["value"] == pytest.approx(
        spearman_ci([r["rewards"]["a"] for r in records], [r["rewards"]["b"] for r in records], 10)["rho"])
    report = (out / "report.md").read_text()
    assert "Holm p" in report and "detectable (pts)" in report and "## What the data shows" in report
    assert "Judge check" in report and "### Agreement between judges" in report and "### Judge `b`" in report
    assert all(p.get("p_holm") is not None for c in metrics["comparisons"] for cat in ("harmful", "helpful")
               for p in c[cat].values() if isinstance(p, dict))


def test_judge_check_on_local_hh_pairs_is_right_and_cached(tiny_models, hh_path, tmp_path):
    """Per-subset accuracy of the tiny reward model on held-out HH-RLHF test pairs, recomputed here by hand."""
    from hhalign.engine.reward import score
    from hhalign.loading import load_reward_model

    pairs = jc.check_pairs(str(hh_path), "test", 8)
    assert set(pairs) == {"harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled"}
    assert all(len(p) == 8 for p in pairs.values())
    assert pairs == jc.check_pairs(str(hh_path), "test", 8)  # seeded
    loaded = load_reward_model(str(tiny_models.reward))
    calls = []

    def score_fn(prompts, responses):
        calls.append(len(prompts))
        return score(loaded.model, loaded.tokenizer, prompts, responses, 8)

    key = jc.cache_key(loaded.info, "pair", str(hh_path), "test", 8, {"dtype": "float32"})
    rewards, cached = jc.run_check(loaded, "pair", pairs, key, tmp_path / "cache", score_fn)
    assert not cached and calls == [16] * 4
    block = jc.check_block(loaded.info, key, rewards, cached)
    for subset, items in pairs.items():
        # the study's way: one unpadded pair per forward pass
        one_by_one = score(loaded.model, loaded.tokenizer, [jc.scored_prompt(p) for p in items] * 2,
                           [p.chosen.strip() for p in items] + [p.rejected.strip() for p in items], 1, engine="loop")
        diffs = [c.reward - r.reward for c, r in zip(one_by_one[: len(items)], one_by_one[len(items):])]
        expected = accuracy_ci(sum(d > 1e-4 for d in diffs), sum(abs(d) <= 1e-4 for d in diffs), len(diffs))
        assert block["subsets"][subset] == expected
    print({s: round(v["accuracy"], 1) for s, v in block["subsets"].items()}, block["overall"])
    again, cached = jc.run_check(loaded, "pair", pairs, key, tmp_path / "cache", score_fn)
    assert cached and again == rewards and calls == [16] * 4  # nothing scored the second time
    # another revision of the weights (rewritten file) is another cache entry
    weights = tiny_models.reward / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
    moved = jc.cache_key(loaded.info, "pair", str(hh_path), "test", 8, {"dtype": "float32"})
    few = {"harmless-base": pairs["harmless-base"][:2]}
    assert moved != key and not jc.run_check(loaded, "pair", few, moved, tmp_path / "cache", score_fn)[1]


@pytest.mark.parametrize(
    ("judge", "check", "source", "expected"),
    [
        (Judge(parse_model_ref("x=org/rm"), given=Thresholds(-1, 0)), None, "given", Thresholds(-1, 0)),
        (Judge(parse_model_ref(DEFAULT_REWARD_MODEL)), {"harmless-base": {"chosen": [5.0], "rejected": [1.0]}},
         "study", Thresholds(-3, -2)),
        (Judge(parse_model_ref("x=org/rm")), None, "options", Thresholds(-3, -2)),
        # harmless cut between 1 and 5 on harmless-base; helpful between 0 and 2 on the helpful subsets
        (Judge(parse_model_ref("x=org/rm")), {"harmless-base": {"chosen": [5.0, 6.0], "rejected": [1.0, 0.0]},
                                              "helpful-base": {"chosen": [2.0], "rejected": [0.0]},
                                              "helpful-online": {"chosen": [3.0], "rejected": [-1.0]}},
         "calibrated", Thresholds(3.0, 1.0)),
        # no cut beats chance: the options' values, and the reason recorded
        (Judge(parse_model_ref("x=org/rm")), {"harmless-base": {"chosen": [0.0, 1.0], "rejected": [2.0, 3.0]}},
         "options (calibration failed", Thresholds(-3, -2)),
    ],
)
def test_thresholds_per_judge(judge, check, source, expected):
    thresholds, info = resolve_thresholds(judge, Thresholds(), check)
    assert thresholds == expected and info["source"].startswith(source)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--reward_model", "a=x", "a=y"], "given twice"),
        (["--reward_model", "a=x", "--judge_formats", "b=chat"], "not a judge"),
        (["--reward_model", "a=x", "--judge_formats", "a=xml"], "unknown reward input format 'xml'"),
        (["--reward_model", "a=x", "--judge_thresholds", "a=-3"], "HARMLESS,HELPFUL"),
        (["--reward_model", "a=x", "--judge_thresholds", "a"], "NAME=VALUE"),
    ],
)
def test_bad_judge_options(argv, message):
    from hhalign.config import Parser

    with pytest.raises(HHAlignError, match=message):
        (cfg,) = Parser([EvalConfig]).parse(argv)
        parse_judges(cfg.reward_model, cfg.judge_formats, cfg.judge_thresholds)


def test_old_single_reward_model_still_accepted(tmp_path):
    assert EvalConfig(reward_model="org/rm").reward_model == ["org/rm"]
    (tmp_path / "c.yaml").write_text("reward_model: org/rm\n")
    from hhalign.config import Parser

    (cfg,) = Parser([EvalConfig]).parse(["--config", str(tmp_path / "c.yaml")])
    assert cfg.reward_model == ["org/rm"]
    with pytest.raises(HHAlignError, match="--from_responses never loads"):
        EvalConfig(from_responses=["x"], judge_check=10)
    assert EvalConfig().judge_pairs == 500 and EvalConfig(demo=True).judge_pairs == 0


@pytest.mark.parametrize(
    ("prompt", "response", "messages"),
    [
        ("Human: hi", "hello", [("user", "hi"), ("assistant", "hello")]),
        ("Human: hi\n\nAssistant:", " hello ", [("user", "hi"), ("assistant", "hello")]),
        ("Human: a\n\nAssistant: b\n\nHuman: c", "d", [("user", "a"), ("assistant", "b"), ("user", "c"),
                                                      ("assistant", "d")]),
        # a prompt that ends inside an assistant turn: the reply continues that turn
        ("Human: a\n\nAssistant: One.", "Two.", [("user", "a"), ("assistant", "One.\n\nTwo.")]),
        ("just a question", "ok", [("user", "just a question"), ("assistant", "ok")]),
    ],
)
def test_hh_messages(prompt, response, messages):
    from hhalign.engine.reward_formats import hh_messages

    assert [(m["role"], m["content"]) for m in hh_messages(prompt, response)] == messages


def test_chat_format_scores_what_the_chat_template_renders(tiny_models, second_judge):
    import torch

    from hhalign.engine.reward import score
    from hhalign.engine.reward_formats import get_format, hh_messages
    from hhalign.loading import load_reward_model

    loaded = load_reward_model(str(second_judge))
    prompts, responses = ["Human: hi\n\nAssistant:", "Human: how do I bake bread?"], ["hello there", "With flour."]
    got = score(loaded.model, loaded.tokenizer, prompts, responses, 2, input_format="chat")
    for p, r, s in zip(prompts, responses, got):
        text = loaded.tokenizer.apply_chat_template(hh_messages(p, r), tokenize=False)
        assert text.startswith("[user] ")
        ids = loaded.tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            assert s.reward == pytest.approx(loaded.model(**ids).logits[0, 0].item(), abs=1e-4)
    assert got != score(loaded.model, loaded.tokenizer, prompts, responses, 2)  # the pair format reads otherwise
    plain = load_reward_model(str(tiny_models.reward))
    with pytest.raises(HHAlignError, match="has no chat template"):
        get_format("chat").check(plain.tokenizer, "tiny")


def test_resume_and_from_responses_with_several_judges(tiny_models, second_judge, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--models", f"tiny={tiny_models.policy}", "--reward_model", f"a={tiny_models.reward}",
            f"b={second_judge}", "--judge_formats", "b=chat", "--judge_thresholds", "b=0.5,1.5", "--prompt_set",
            "demo", "--limit", "3", "--max_new_tokens", "5", "--n_bootstrap", "200", "--judge_check", "0",
            "--no_plots", "--out", str(out)]
    assert cli(args, capsys)[0] == 0
    full = {(r["model"], r["prompt_id"]): r["rewards"] for r in read_log(out / "responses.jsonl")}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["judges"]["b"]["format"] == "chat" and metrics["judges"]["b"]["thresholds"]["helpful"] == 1.5
    assert metrics["judges"]["a"]["thresholds"]["source"].startswith("options")  # no check: nothing to calibrate on
    lines = (out / "responses.jsonl").read_text().splitlines(keepends=True)
    (out / "responses.jsonl").write_text("".join(lines[:2]) + lines[2][:30])  # a kill mid-write
    assert cli(args, capsys)[0] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    resumed = read_log(out / "responses.jsonl")
    assert len(resumed) == len(full) == 6
    assert {(r["model"], r["prompt_id"]): r["rewards"] for r in resumed} == {
        k: pytest.approx(v, abs=1e-5) for k, v in full.items()}
    # the same judges from the records alone
    again = tmp_path / "again"
    code, err = cli(["--from_responses", str(out / "responses.jsonl"), "--reward_model", f"a={tiny_models.reward}",
                     "--judge_thresholds", "b=0.5,1.5", "--n_bootstrap", "200", "--no_plots", "--out", str(again)],
                    capsys)
    assert code == 0, err
    imported = json.loads((again / "metrics.json").read_text())
    for name in ("a", "b"):
        assert imported["judges"][name]["models"] == metrics["judges"][name]["models"]
    assert imported["agreement"][0]["kappa"] == metrics["agreement"][0]["kappa"]
    assert [r["labels"] for r in read_log(again / "responses.jsonl")] == [r["labels"] for r in resumed]
    assert "judge" not in imported and "No judge check in this run" in (again / "report.md").read_text()


def test_human_votes_in_the_results_folder_reach_the_report(study_responses, tmp_path, capsys):
    out = tmp_path / "votes"
    out.mkdir()
    votes = [{"model_a": "sft", "model_b": "dpo", "winner": w, "reward_a": ra, "reward_b": rb}
             for w, ra, rb in [("A", 1.0, 0.0), ("A", 2.0, 0.5), ("B", 1.0, 0.0), ("tie", 0.0, 1.0),
                               ("B", -1.0, 0.0)]]
    (out / "votes.jsonl").write_text("".join(json.dumps(v) + "\n" for v in votes))
    assert cli(["--from_responses", str(study_responses), "--n_bootstrap", "200", "--no_plots", "--out",
                str(out)], capsys)[0] == 0
    block = json.loads((out / "metrics.json").read_text())["human_votes"]
    assert (block["n"], block["excluded"], block["agreement"]) == (4, 1, 75.0)
    assert "**Human votes:** the reward model preferred the reply people voted for in 75.0 [" in (
        out / "report.md").read_text()
    (out / "votes.jsonl").write_text('{"model_a": "sft", "model_b": "sft", "winner": "A"}\n')
    code, err = cli(["--from_responses", str(study_responses), "--out", str(out)], capsys)
    assert code == 2 and "votes.jsonl: vote 0" in err


def test_preference_pair_prompt_as_scored():
    pair = preference_pair({"chosen": "\n\nHuman: q\n\nAssistant: good", "rejected": "\n\nHuman: q\n\nAssistant: bad"})
    assert jc.scored_prompt(pair) == "Human: q"
