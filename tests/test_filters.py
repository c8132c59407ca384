"""Cleaner DPO data: the pair filter on the local HH-RLHF copy with the tiny reward model as judge, the counts of what
TRL drops at max_length (checked against TRL itself), and the transcripts' start."""

from __future__ import annotations

import dataclasses
import json

import pytest

from hhalign import data as hdata
from hhalign.cli import main as cli_main
from hhalign.errors import HHAlignError
from hhalign.training import config as tconfig
from hhalign.training import data as tdata
from hhalign.training import filters

# Tiny models run fastest on one thread; on a busy machine two are several times slower.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("reply", "truncated"),
    [
        ("Sure, here it is.", False),
        ("Vulva", False),  # a one-word answer is complete
        ("Okay, but", True),
        ("You can try it with the", True),
        ("Here are some ideas:", True),
        ("at a clinic, in a", True),
        ("long-", True),
        ("It's yours", False),
        ("", False),  # empty is its own reason
        ("Thank you!", False),
    ],
)
def test_truncated_reply(reply, truncated):
    assert filters.is_truncated(reply) is truncated


def test_cheap_reasons_on_all_hh_test_pairs(hh_path):
    pairs = [hdata.preference_pair(r) for s in hdata.SUBSETS for r in hdata.load_hh(str(hh_path), s)]
    kept, info = filters.filter_pairs(pairs, identical=True, empty=True, truncated=True)
    print(info)
    assert info["dropped"] == {"identical": 36, "empty": 11, "truncated": 392, "reversed": 0}
    assert info["kept"] == len(kept) == 8552 - 36 - 11 - 392
    assert sum(filters.is_truncated(p.chosen) or filters.is_truncated(p.rejected) for p in pairs) == 392


def test_judge_filter_keeps_exactly_the_pairs_above_the_margin(tiny_models, hh_path):
    from hhalign.engine.reward import score
    from hhalign.eval.judge_check import scored_prompt
    from hhalign.loading import load_reward_model

    script = tconfig.DPOScriptArguments(dataset_name=str(hh_path), subsets=["harmless-base"],
                                        dataset_train_split="test", max_samples=120, drop_identical_pairs=True,
                                        drop_empty_pairs=True, drop_truncated_pairs=True,
                                        filter_reward_model=str(tiny_models.reward), filter_margin=0.5)
    built = tdata.build_training_data("dpo", script)
    f = built.info["filters"]
    print(f)
    rows = tdata._sample(hdata.load_hh(str(hh_path), "harmless-base"), 120, 42)
    pairs = [hdata.preference_pair(r) for r in rows]
    cheap = [p for p in pairs if filters.reason(p) is None]
    assert f["dropped"]["identical"] + f["dropped"]["empty"] + f["dropped"]["truncated"] == 120 - len(cheap) > 0
    # the judge's margins, scored one pair per forward pass (the study's way), independently of the filter
    loaded = load_reward_model(str(tiny_models.reward))
    prompts = [scored_prompt(p) for p in cheap]
    rewards = score(loaded.model, loaded.tokenizer, prompts * 2, [p.chosen.strip() for p in cheap]
                    + [p.rejected.strip() for p in cheap], 1, engine="loop")
    margins = [c.reward - r.reward for c, r in zip(rewards[: len(cheap)], rewards[len(cheap):])]
    assert not any(abs(m + 0.5) < 1e-3 for m in margins)  # no pair so near the cut that float noise could move it
    above = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
             for p, m in zip(cheap, margins) if m >= -0.5]
    assert built.examples == above
    assert f["dropped"]["reversed"] == len(cheap) - len(above) > 0 and f["kept"] == len(above)
    assert f["judge"]["model"] == str(tiny_models.reward) and f["judge"]["margin"] == 0.5
    with pytest.raises(HHAlignError, match="--filter_margin must be >= 0"):
        tdata.build_training_data("dpo", dataclasses.replace(script, filter_margin=-1.0))


def test_length_counts_match_what_trl_drops(tiny_models, hh_path, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hhalign.training.run import build_trainer
    from hhalign.training.trl_config import DPOConfig

    rows = tdata._sample(hdata.load_hh(str(hh_path), "helpful-online"), 40, 0)
    examples, _ = tdata.dpo_examples(rows, drop_identical=False)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_models.policy))
    counts = filters.length_counts(examples, tokenizer, 128)
    print(counts)
    assert counts["dropped_prompt_too_long"] > 0 and counts["truncated"] > 0
    args = DPOConfig(output_dir=str(tmp_path), max_length=128, per_device_train_batch_size=1, report_to="none",
                     use_cpu=True, bf16=False, pad_token=tokenizer.eos_token)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_models.policy))
    from trl import ModelConfig

    trainer = build_trainer("dpo", model, tokenizer, tdata.to_dataset(examples), args, ModelConfig())
    assert len(trainer.train_dataset) == counts["examples_trained"] == 40 - counts["dropped_prompt_too_long"]
    assert filters.length_counts(examples, tokenizer, None)["dropped_prompt_too_long"] == 0


def test_trim_makes_training_text_start_like_evaluation_prompts(hh_path):
    script = tconfig.SFTScriptArguments(dataset_name=str(tconfig.DEMO_PAIRS_PATH), trim_transcripts=True)
    built = tdata.build_training_data("sft", script)
    assert all(e["text"].startswith("Human:") for e in built.examples) and built.info["text_start"] == "Human:"
    untrimmed = tdata.build_training_data("sft", dataclasses.replace(script, trim_transcripts=False))
    assert [e["text"].lstrip("\n") for e in untrimmed.examples] == [e["text"] for e in built.examples]
    assert untrimmed.info["text_start"] == "\n\nHuman:"
    pc = tdata.build_training_data("dpo", tconfig.DPOScriptArguments(dataset_name=str(tconfig.DEMO_PAIRS_PATH),
                                                                     trim_transcripts=True))
    assert all(e["prompt"].startswith("Human:") for e in pc.examples)


def test_filtered_dpo_run_records_counts_and_trimmed_text(tiny_models, tmp_path, capsys):
    out = tmp_path / "dpo"
    code = cli_main(["dpo", "--config", "improved/dpo_filtered", "--dataset", str(tconfig.DEMO_PAIRS_PATH),
                     "--model_name_or_path", str(tiny_models.policy), "--filter_reward_model", str(tiny_models.reward),
                     "--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "1",
                     "--gradient_accumulation_steps", "1", "--max_length", "64", "--save_steps", "1", "--bf16",
                     "false", "--logging_steps", "1"])
    assert code == 0, capsys.readouterr().err[-2000:]
    data = json.loads((out / tconfig.RUN_FILE).read_text())["data"]
    assert data["filters"]["dropped"]["identical"] == 1  # the demo pairs hold one identical pair
    assert set(data["filters"]["dropped"]) == set(filters.REASONS) and data["filters"]["judge"]["margin"] == 1.0
    assert data["examples"] == data["filters"]["kept"]
    assert data["text_start"] == "Human:" and data["length"]["max_length"] == 64
    record = json.loads((out / tconfig.RUN_FILE).read_text())
    assert record["fingerprint"]["filter_reward_model"] == str(tiny_models.reward)
    assert record["fingerprint"]["trim_transcripts"] is True
