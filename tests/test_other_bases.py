"""Training and judging beyond OPT and DeBERTa, on tiny random models of other families (tests/families.py):
LoRA targets per model type, a recipe naming modules a model lacks refused in one line, one LoRA DPO step on a Llama
(chat template: conversational data) and a GPT-NeoX base (no template: HH text) from an improved/ recipe with only
the model changed, and decoder-backbone reward models scored exactly in batches."""

from __future__ import annotations

import json

import pytest
from families import build_family, tiny_tokenizer

from hhalign.cli import main as cli_main
from hhalign.errors import HHAlignError

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
# One step, short sequences, a handful of rows: plumbing, not learning.
ONE_STEP = ["--max_steps", "1", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
            "--max_length", "160", "--logging_steps", "1", "--save_steps", "10", "--max_samples", "4"]


@pytest.fixture(scope="module")
def bases(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {"llama": build_family("llama", tiny_models.policy, root / "llama", template="chatml", seed=1),
            "gpt_neox": build_family("gpt_neox", tiny_models.policy, root / "gpt_neox", seed=2)}


def test_lora_targets_default_to_peft_then_all_linear(bases):
    from transformers import AutoModelForCausalLM

    from hhalign.training.lora import default_target_modules, resolve_target_modules

    assert default_target_modules("llama") == ["q_proj", "v_proj"]
    assert default_target_modules("gpt_neox") == ["query_key_value"]
    assert default_target_modules("phi3") == "all-linear"  # a type PEFT's table lacks
    neox = AutoModelForCausalLM.from_pretrained(bases["gpt_neox"])
    assert resolve_target_modules(neox, None, "neox") == ["query_key_value"]
    assert resolve_target_modules(neox, "dense", "neox") == ["dense"]  # TRL's one-element list, not a regex
    assert resolve_target_modules(neox, "all-linear", "neox") == "all-linear"
    with pytest.raises(HHAlignError) as refused:
        resolve_target_modules(neox, ["q_proj", "v_proj"], "neox")
    line = str(refused.value)
    assert "\n" not in line and "q_proj, v_proj" in line and "--lora_target_modules" in line
    assert "query_key_value, dense, dense_h_to_4h, dense_4h_to_h" in line


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_one_lora_dpo_step_from_an_improved_recipe(family, bases, hh_path, tmp_path, one_thread):
    out = tmp_path / family
    assert cli_main(["dpo", "--config", "improved/smollm2-360m_dpo", "--model_name_or_path", str(bases[family]),
                     "--dataset_name", str(hh_path), "--dataset_train_split", "test", "--subsets", "helpful-base",
                     "--output_dir", str(out), *ONE_STEP]) == 0
    record = json.loads((out / "hhalign_train.json").read_text())
    assert record["status"] == "finished" and record["timing"]["global_step"] == 1
    assert record["recipe"]["lora_target_modules"] == "all-linear"
    adapter = json.loads((out / "adapter_config.json").read_text())
    linear = {"llama": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
              "gpt_neox": {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}}[family]
    assert {t.rsplit(".", 1)[-1] for t in adapter["target_modules"]} == linear
    # The Llama base has a chat template: TRL's conversational format; GPT-NeoX has none: HH text, as for OPT.
    assert record["data"].get("conversational", False) == (family == "llama")
    assert ("chat messages" in record["data"]["format"]) == (family == "llama")


def test_one_sft_step_on_chat_messages_from_an_improved_recipe(bases, hh_path, tmp_path, one_thread):
    out = tmp_path / "sft"
    assert cli_main(["sft", "--config", "improved/qwen2.5-0.5b_sft", "--model_name_or_path", str(bases["llama"]),
                     "--dataset_name", str(hh_path), "--dataset_train_split", "test", "--subsets", "helpful-base",
                     "--output_dir", str(out), *ONE_STEP]) == 0
    record = json.loads((out / "hhalign_train.json").read_text())
    assert record["status"] == "finished" and record["data"]["conversational"] is True
    assert "prompt_completion" in record["data"]["format"]


def test_paper_recipe_refuses_a_gpt_neox_base_in_one_line(bases, hh_path, tmp_path, capsys):
    out = tmp_path / "refused"
    code = cli_main(["dpo", "--config", "paper/dpo", "--model_name_or_path", str(bases["gpt_neox"]),
                     "--dataset_name", str(hh_path), "--dataset_train_split", "test", "--subsets", "helpful-base",
                     "--output_dir", str(out), *ONE_STEP])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "Traceback" not in "".join(err)
    assert "q_proj, v_proj" in err[-1] and "gpt_neox" in err[-1] and "--lora_target_modules" in err[-1]
    assert not out.exists()  # nothing written by a refused run
    assert not any(line.startswith("loaded ") for line in err)  # refused from the config, before the data load


def test_conversational_data_keep_the_hh_turns(tiny_models, hh_path):
    from hhalign.training.config import DPOScriptArguments, SFTScriptArguments
    from hhalign.training.data import build_training_data, conversational

    args = DPOScriptArguments(dataset_name=str(hh_path), subsets=["harmless-base"], dataset_train_split="test",
                              max_samples=3)
    data = build_training_data("dpo", args)
    chat = conversational(data, "dpo")
    for text, msgs in zip(data.examples, chat.examples):
        assert msgs["prompt"][0]["role"] == "user" and msgs["prompt"][-1]["role"] == "user"
        assert msgs["prompt"][-1]["content"] in text["prompt"]
        assert msgs["chosen"] == [{"role": "assistant", "content": text["chosen"].strip()}]
        assert msgs["rejected"] == [{"role": "assistant", "content": text["rejected"].strip()}]
    sft = conversational(build_training_data("sft", SFTScriptArguments(
        dataset_name=str(hh_path), subsets=["harmless-base"], dataset_train_split="test", max_samples=2)), "sft")
    assert all(m["role"] in ("user", "assistant") for e in sft.examples for m in e["messages"])


# --- judges on decoder backbones -----------------------------------------------------------------------------------

PAIRS = [("Human: hi", "hello there"),
         ("Human: how do I bake bread?\n\nAssistant: With flour.\n\nHuman: and then?", "Knead it, let it rise, bake."),
         ("Human: ok", ""),
         ("Human: tell me a long story about a dragon who lived in a cave by the sea and guarded gold",
          "Once upon a time a dragon slept on its gold, and the sea sang to it every night."),
         ("Human: why?", "Because.")]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2", "gpt2"])
def test_decoder_judges_score_batches_exactly(family, tiny_models, tmp_path, one_thread):
    """Batched scores equal one pair at a time and the model's own unbatched forward, padded on either side, for
    pairs of mixed lengths; a judge without a pad token pads with EOS."""
    import torch

    from hhalign.engine.reward import score
    from hhalign.engine.reward_formats import get_format
    from hhalign.loading import load_reward_model

    folder = build_family(family, tiny_models.policy, tmp_path / family, seed=5, head="sequence_classification")
    judge = load_reward_model(str(folder))
    if family == "llama":  # a judge without a pad token, as Llama-3 reward models often are
        judge.tokenizer.pad_token = None
        judge.model.config.pad_token_id = None
    prompts, responses = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    for fmt in ("pair", "chat") if family == "qwen2" else ("pair",):
        if fmt == "chat":
            judge.tokenizer.chat_template = tiny_tokenizer(tiny_models.policy, "chatml").chat_template
        loop = [s.reward for s in score(judge.model, judge.tokenizer, prompts, responses, engine="loop",
                                        input_format=fmt)]
        rows, _ = get_format(fmt).encode(judge.tokenizer, prompts, responses)
        with torch.inference_mode():
            own = [judge.model(input_ids=torch.tensor([r["input_ids"]])).logits[0, 0].item() for r in rows]
        assert loop == pytest.approx(own, abs=1e-6)
        assert len({round(v, 4) for v in own}) == len(own)  # the pairs score differently: a real comparison
        for side in ("right", "left"):
            judge.tokenizer.padding_side = side
            batched = [s.reward for s in score(judge.model, judge.tokenizer, prompts, responses, batch_size=8,
                                               token_budget=10_000, input_format=fmt)]
            assert batched == pytest.approx(loop, abs=1e-5), (family, fmt, side)
    assert judge.tokenizer.pad_token_id is not None and judge.model.config.pad_token_id == judge.tokenizer.pad_token_id


def test_conversational_option_follows_the_chat_template(tiny_models):
    from hhalign.training.config import SFTScriptArguments
    from hhalign.training.run import use_messages

    chat, plain = tiny_tokenizer(tiny_models.policy, "chatml"), tiny_tokenizer(tiny_models.policy)
    for mode, with_template, without in (("auto", True, False), ("never", False, False)):
        args = SFTScriptArguments(conversational=mode)
        assert use_messages(args, chat, "m") is with_template and use_messages(args, plain, "m") is without
    assert use_messages(SFTScriptArguments(conversational="always"), chat, "m") is True
    with pytest.raises(HHAlignError, match="--conversational always needs a chat template, and 'opt' has none"):
        use_messages(SFTScriptArguments(conversational="always"), plain, "opt")
