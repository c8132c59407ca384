"""Model references: parsing, local folders, PEFT adapters, and the errors a user can cause."""

import json
import shutil

import pytest

from hhalign.errors import HHAlignError
from hhalign.loading import load_policy, load_reward_model
from hhalign.refs import ModelRef, parse_model_ref, parse_model_refs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("facebook/opt-350m", ModelRef("opt-350m", "facebook/opt-350m", None)),
        ("base=facebook/opt-350m", ModelRef("base", "facebook/opt-350m", None)),
        ("sft=org/opt-350m-hh-sft@v1.0", ModelRef("sft", "org/opt-350m-hh-sft", "v1.0")),
        ("org/model@0123abc", ModelRef("model", "org/model", "0123abc")),
        ("gpt2", ModelRef("gpt2", "gpt2", None)),
        ("local=./out/sft", ModelRef("local", "./out/sft", None)),
    ],
)
def test_parse_model_ref(text, expected):
    assert parse_model_ref(text) == expected


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["a=x/y", "a=x/z"], "given twice"),
        (["bad name=x/y"], "may only hold"),
        (["x/y@"], "names no revision"),
        (["name="], "no model after"),
    ],
)
def test_parse_model_refs_errors(texts, message):
    with pytest.raises(HHAlignError, match=message):
        parse_model_refs(texts)


def test_load_local_policy_and_reward(tiny_models):
    policy = load_policy(parse_model_ref(f"p={tiny_models.policy}"))
    assert policy.tokenizer.padding_side == "left"
    assert policy.info["local"] and policy.info["revision"].startswith("local-")
    assert not policy.info["adapter"]
    reward = load_reward_model(str(tiny_models.reward))
    assert reward.model.config.num_labels == 1


def test_adapter_is_detected_and_applied(tiny_models, tiny_adapter):
    loaded = load_policy(parse_model_ref(f"lora={tiny_adapter}"))
    assert loaded.info["adapter"] and loaded.info["merged"]
    assert loaded.info["base_model"] == str(tiny_models.policy)
    base = load_policy(parse_model_ref(str(tiny_models.policy)))
    import torch

    ids = base.tokenizer("Human: hello", return_tensors="pt")
    with torch.no_grad():
        diff = (loaded.model(**ids).logits - base.model(**ids).logits).abs().max().item()
    assert diff > 1e-4, "the adapter's weights must change the model"


def test_adapter_with_missing_base(tmp_path, tiny_adapter):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_adapter, broken)
    cfg = json.loads((broken / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone")
    (broken / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(HHAlignError, match="base model .* of adapter .* cannot be found"):
        load_policy(parse_model_ref(str(broken)))


def test_missing_folder_and_invalid_id(tmp_path):
    with pytest.raises(HHAlignError, match="does not exist"):
        load_policy(parse_model_ref(str(tmp_path / "nothing")))
    with pytest.raises(HHAlignError, match="neither config.json nor adapter_config.json"):
        load_policy(parse_model_ref(str(tmp_path)))
    with pytest.raises(HHAlignError, match="neither an existing folder nor a valid Hub id"):
        load_policy(parse_model_ref("x=not a repo!"))


def test_uncached_hub_id_offline_is_one_clear_line():
    # Tests run with HF_HUB_OFFLINE=1 (conftest), so an id that is not cached must say so.
    with pytest.raises(HHAlignError, match="not in the local Hugging Face cache") as info:
        load_policy(parse_model_ref("hhalign-test/definitely-not-cached-model"))
    assert "\n" not in str(info.value)


def test_reward_model_must_have_one_label(tiny_models):
    with pytest.raises(HHAlignError, match="one score"):
        load_reward_model(str(tiny_models.policy))
