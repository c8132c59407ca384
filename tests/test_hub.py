"""hhalign.publish without training: push checks, the model card (template, metadata, model-index parsed back by
huggingface_hub), where data and licences come from, the registry read back from a card, and the interop exports.

Metrics come from the real evaluator run on synthetic response records (``--from_responses``); run records are written
the way training writes them, without weights (the card needs none).
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from hhalign.errors import HHAlignError
from hhalign.eval.schema import load_metrics
from hhalign.publish import card as pcard
from hhalign.publish import hub, sources
from hhalign.publish import registry as preg

HH_PROMPTS = {"name": "paper", "dataset": "Anthropic/hh-rlhf", "hub_id": None, "split": "test", "seed": 100,
              "limit": None, "n": 24, "sha256": "ab" * 32}
SFT_RECORD = {
    "status": "finished", "kind": "sft", "role": "sft", "command": "hhalign sft --config paper/sft",
    "model": {"name_or_path": "facebook/opt-350m", "revision": "main", "adapter": False, "base_model_hub_id": None},
    "data": {"dataset": "Anthropic/hh-rlhf", "subsets": {"harmless-base": 40, "helpful-base": 40}, "split": "train",
             "max_samples": None, "rows": 80, "format": "prompt-completion", "malformed_rows": 2, "examples": 78},
    "recipe": {"learning_rate": 2e-5, "num_train_epochs": 2, "lora_r": None},
    "loss": {"logged_steps": 4, "first": 2.5, "first_step": 1, "last": 1.75, "last_step": 4, "min": 1.7,
             "mean_last_10pct": 1.75},
    "timing": {"global_step": 4, "seconds_per_step": 0.5, "device": "cpu"},
    "packages": {"hhalign": "0.2.0", "trl": "1.16.0", "transformers": "5.23.0", "torch": "2.13.0", "python": "3.11"},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """An evaluator run over synthetic records of two models, 12 prompts per category each."""
    from hhalign.eval.config import EvalConfig
    from hhalign.eval.run import run

    root = tmp_path_factory.mktemp("eval")
    records = [{"model": model, "category": cat, "prompt_id": f"{cat}-{i:03d}", "prompt": f"\n\nHuman: {cat} {i}?",
                "response": f"reply {i}", "reward": -4.0 + shift + (i % 5) * 0.6}
               for model, shift in (("base", 0.0), ("sft", 0.5)) for cat in ("harmful", "helpful") for i in range(12)]
    (root / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run(EvalConfig(from_responses=[str(root / "in.jsonl")], out=str(root / "out"), n_bootstrap=300, plots=False))
    return root / "out"


@pytest.fixture
def hh_metrics(run_dir):
    """The run's metrics as if its prompts were the study's set from the Hub dataset."""
    metrics = load_metrics(run_dir / "metrics.json")
    metrics.settings = dataclasses.replace(metrics.settings, prompt_set=dict(HH_PROMPTS), protocol="paper",
                                           decoding={"max_new_tokens": 50},
                                           reward_model={"ref": "OpenAssistant/reward-model-deberta-v3-large-v2"})
    return metrics


def checkpoint(tmp_path, record=SFT_RECORD, name="sft"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / pcard.RUN_FILE).write_text(json.dumps(record))
    (folder / pcard.LOSS_PLOT).write_bytes(b"\x89PNG")
    return folder


def test_check_push_names_what_is_missing(monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    with pytest.raises(HHAlignError, match="needs --hub_model_id org/name"):
        hub.check_push(None)
    with pytest.raises(HHAlignError, match="is not a Hub repo id"):
        hub.check_push("no-slash")
    with pytest.raises(HHAlignError, match="HF_HUB_OFFLINE.*--dry_run"):
        hub.check_push("me/model")  # the test session is offline
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(HHAlignError, match="--push_results_to_hub needs a Hub token"):
        hub.check_push("me/results", option="--push_results_to_hub")
    assert hub.check_push("me/model", token="hf_given") == "hf_given"
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_logged_in")
    assert hub.check_push("me/model") == "hf_logged_in"


def test_card_metadata_and_model_index_parse_back_with_huggingface_hub(hh_metrics, tmp_path):
    from huggingface_hub import ModelCard

    url = "https://huggingface.co/datasets/me/results"
    card = pcard.build_card(checkpoint(tmp_path), "me/opt-350m-hh-sft", metrics=hh_metrics, metrics_model="sft",
                            results_url=url)
    card.save(str(tmp_path / "README.md"))
    data = ModelCard.load(tmp_path / "README.md").data
    assert (data.license, data.license_name) == ("other", "opt-175b-license")
    assert data.license_link == "https://huggingface.co/facebook/opt-350m/blob/main/LICENSE.md"
    assert data.base_model == "facebook/opt-350m" and data["base_model_relation"] == "finetune"
    assert data.datasets == ["Anthropic/hh-rlhf"] and data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation" and data.model_name == "me/opt-350m-hh-sft"
    assert {"hhalign", "trl", "sft", "hh-rlhf"} <= set(data.tags)
    m = hh_metrics.models["sft"]
    parsed = {r.metric_type: r for r in data.eval_results}
    assert set(parsed) == {"hmr", "hpr", "cas"}
    for key, config in (("HmR", "harmless-base"), ("HpR", "helpful-base"), ("CAS", None)):
        r = parsed[key.lower()]
        assert r.metric_value == round(getattr(m, key), 2)
        assert [r.metric_args["ci95_low"], r.metric_args["ci95_high"]] == [round(v, 2) for v in m.ci95[key]]
        assert "CI" not in r.metric_name and r.metric_name.startswith(key)
        assert (r.dataset_type, r.dataset_config, r.dataset_split) == ("Anthropic/hh-rlhf", config, "test")
        assert r.dataset_args["prompts_sha256"] == HH_PROMPTS["sha256"] and r.source_url == url
    assert parsed["hmr"].metric_args["threshold"] == -3.0 and parsed["hmr"].metric_args["n_prompts"] == 12
    assert parsed["cas"].dataset_args["data_dir"] == ["harmless-base", "helpful-base"]


def test_card_text_has_recipe_loss_versions_citations_and_judge_section(hh_metrics, tmp_path):
    folder = checkpoint(tmp_path)
    text = pcard.build_card(folder, "me/x", metrics=hh_metrics, metrics_model="sft").text
    for needed in ("## Training recipe", "| learning_rate | 2e-05 |", "![Training loss](loss.png)",
                   "| last | 1.7500 | 4 |", "rows skipped for lacking Human/Assistant turns: 2", "- TRL: 1.16.0",
                   "- Transformers: 5.23.0", "rafailov2023direct", "vonwerra2020trl", "2509.09055", "2204.05862",
                   "OPT-175B License Agreement"):
        assert needed in text, needed
    assert "lora_r" not in text  # unset recipe values are left out
    m = hh_metrics.models["sft"]
    assert f"| HmR (Harmlessness rate) | {m.HmR:.1f} [{m.ci95['HmR'][0]:.1f}, {m.ci95['HmR'][1]:.1f}] |" in text
    assert "## Judge check\n\nNot measured" in text

    hh_metrics.judge = {"deberta": {"model": "OpenAssistant/reward-model-deberta-v3-large-v2", "revision": "c3fd",
                                    "subsets": {"harmless-base": {"accuracy": 58.5, "ci95": [55.25, 61.5], "n": 800,
                                                                  "ties": 3}}}}
    text = pcard.build_card(folder, "me/x", metrics=hh_metrics, metrics_model="sft").text
    assert "Not measured" not in text.split("## Judge check")[1].split("##")[0]
    assert "| harmless-base | 58.5 [55.2, 61.5] | 800 | 3 |" in text and "revision `c3fd`" in text
    bare = pcard.build_card(folder).text
    assert "Not evaluated yet: no numbers are claimed" in bare and "python batch/eval.py --models sft=" in bare


@pytest.mark.parametrize(("prompt_set", "type_", "name_has", "config"), [
    (HH_PROMPTS, "Anthropic/hh-rlhf", "Anthropic/hh-rlhf", "harmless-base"),
    ({**HH_PROMPTS, "dataset": "../shared/data/hh-rlhf"}, "local:hh-rlhf", "local folder ../shared/data/hh-rlhf",
     "harmless-base"),
    ({**HH_PROMPTS, "dataset": "../shared/data/hh-rlhf", "hub_id": "Anthropic/hh-rlhf"}, "Anthropic/hh-rlhf",
     "(local copy read from ../shared/data/hh-rlhf)", "harmless-base"),
    ({"name": "demo", "dataset": "", "split": "test"}, "local:demo_prompts.jsonl", "hhalign demo prompts", None),
    ({"name": "/data/my_prompts.jsonl", "dataset": "Anthropic/hh-rlhf", "split": "test"}, "local:my_prompts.jsonl",
     "local file /data/my_prompts.jsonl", None),
])
def test_local_prompts_are_never_named_as_hub_datasets(hh_metrics, prompt_set, type_, name_has, config):
    from huggingface_hub import ModelCardData

    from hhalign.refs import is_hub_id

    settings = dataclasses.replace(hh_metrics.settings, prompt_set=prompt_set)
    results = pcard.eval_results(hh_metrics.models["sft"], settings)
    assert {r.dataset_type for r in results} == {type_} and name_has in results[0].dataset_name
    assert results[0].dataset_config == config and results[0].dataset_revision is None
    if type_.startswith(sources.LOCAL_PREFIX):
        assert not is_hub_id(type_)
    assert results[0].dataset_split == ("test" if config else None)
    # the entry still validates: huggingface_hub writes and reads it back unchanged
    back = ModelCardData(**ModelCardData(model_name="me/x", eval_results=results).to_dict()).eval_results
    assert [(r.dataset_type, r.metric_value, r.metric_args) for r in back] == \
        [(r.dataset_type, r.metric_value, r.metric_args) for r in results]


def test_licence_follows_the_chain_of_runs_to_the_root_base(tmp_path):
    assert sources.licence_for("facebook/opt-1.3b").link == "https://huggingface.co/facebook/opt-1.3b/blob/main/LICENSE.md"
    other = sources.licence_for("org/model")
    assert (other.license, other.name, other.link) == ("other", "base-model-license", "https://huggingface.co/org/model")
    assert sources.licence_for("/local/model").link is None
    sft = checkpoint(tmp_path)  # trained from facebook/opt-350m
    dpo = {**SFT_RECORD, "kind": "dpo", "role": "sft_dpo", "model": {"name_or_path": str(sft), "adapter": True}}
    assert sources.root_base(dpo) == "facebook/opt-350m"
    card = pcard.build_card(checkpoint(tmp_path, dpo, "sft_dpo"), "me/sft-dpo", base_model_hub_id="me/sft")
    assert (card.data.base_model, card.data.license_name) == ("me/sft", "opt-175b-license")
    assert card.data.library_name == "peft" and card.data["base_model_relation"] == "adapter"


def test_registry_and_models_md_take_their_numbers_from_the_card(hh_metrics, tmp_path):
    from huggingface_hub import ModelCard

    shutil.copy(preg.REGISTRY_PATH, tmp_path / "registry.json")
    url = "https://huggingface.co/datasets/me/results"
    pcard.build_card(checkpoint(tmp_path), "me/opt-350m-hh-sft", metrics=hh_metrics, metrics_model="sft",
                     results_url=url).save(str(tmp_path / "README.md"))
    entry = hub.read_card_metrics(tmp_path / "README.md", "me/opt-350m-hh-sft")
    preg.update_registry("sft", role="sft", ref="me/opt-350m-hh-sft", metrics=entry, recipe="paper/sft",
                         command=None, registry_path=tmp_path / "registry.json", models_md=tmp_path / "models.md")
    assert entry["results"] == url and entry["dataset"] == "Anthropic/hh-rlhf" and "(12+12)" in entry["protocol"]
    row = next(line for line in (tmp_path / "models.md").read_text().splitlines() if line.startswith("| sft |"))
    cells = [c.strip() for c in row.split("|")]
    for r in ModelCard.load(tmp_path / "README.md").data.eval_results:  # the pushed card's own numbers
        low, high = r.metric_args["ci95_low"], r.metric_args["ci95_high"]
        assert f"{r.metric_value:.1f} [{low:.1f}, {high:.1f}]" in cells
    assert pcard.registry_metrics([], "x") is None


def test_metrics_from_published_records_are_not_put_on_a_checkpoint(run_dir, tmp_path):
    metrics = load_metrics(run_dir / "metrics.json")
    with pytest.raises(HHAlignError, match="not generated by the evaluator here"):
        pcard.check_metrics_match(metrics, "sft", tmp_path, "me/sft", "metrics.json")


def test_staging_folders_are_ours_or_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("keep me")
    with pytest.raises(HHAlignError, match="not empty and was not made by hhalign"):
        hub.prepare_staging(tmp_path / "mine")
    first = hub.prepare_staging(tmp_path / "s")
    (first / "old.txt").write_text("from the last dry run")
    assert hub.staged_files(hub.prepare_staging(tmp_path / "s")) == []  # our own earlier staging is replaced
    assert (tmp_path / "mine" / "keep.txt").read_text() == "keep me"
