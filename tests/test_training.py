"""Training recipes, the SFT/DPO/SFT+DPO CLIs, the pipeline and publishing, on the tiny models, offline.

Training runs are a few steps of the tiny OPT on the local HH-RLHF test split (the only split here) or on the
project's demo pairs; they check plumbing, not learning.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import captured_log
from hhalign import data as hdata
from hhalign.cli import main as cli_main
from hhalign.errors import HHAlignError
from hhalign.training import config as tconfig
from hhalign.training import data as tdata
from hhalign.training import pipeline as tpipe
from hhalign.training import run as trun
from hhalign.training import trl_config

# PEFT calls a transformers method that transformers 5 renamed; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "training" / "recipes"
PY = sys.executable
# A few steps, short sequences: each run costs seconds.
TINY = ["--max_steps", "2", "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1",
        "--max_length", "128", "--logging_steps", "1", "--save_steps", "1", "--max_samples", "16"]


def _error_line(err: str) -> str:
    """The one ``error:`` line a script printed last (progress bars of the loaders may precede it)."""
    lines = err.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], err
    return lines[-1]




@pytest.fixture(scope="module")
def runs(tiny_models, hh_path, tmp_path_factory, one_thread):
    """SFT, DPO and SFT+DPO (DPO on the SFT output) through the real entry scripts, on the local HH test split."""
    root = tmp_path_factory.mktemp("runs")
    common = ["--dataset", str(hh_path), "--split", "test", *TINY]
    assert cli_main(["sft", "--config", "paper/sft", "--model_name_or_path", str(tiny_models.policy),
                     "--output_dir", str(root / "sft"), *common]) == 0
    assert cli_main(["dpo", "--config", "paper/dpo", "--model_name_or_path", str(tiny_models.policy),
                     "--output_dir", str(root / "dpo"), *common]) == 0
    assert cli_main(["dpo", "--config", "paper/sft_dpo", "--model_name_or_path", str(root / "sft"),
                     "--output_dir", str(root / "sft_dpo"), *common]) == 0
    return SimpleNamespace(root=root, sft=root / "sft", dpo=root / "dpo", sft_dpo=root / "sft_dpo",
                           policy=tiny_models.policy)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, one_thread):
    """The README's offline demo: ``training/pipeline.py --demo --output_dir DIR``."""
    out = tmp_path_factory.mktemp("demo")
    with captured_log() as lines:
        result = tpipe.run_pipeline(tpipe.PipelineConfig(demo=True, output_dir=str(out)))
    return SimpleNamespace(out=out, result=result, log=lines)


# --- recipes ------------------------------------------------------------------------------------------------------


# improved/ recipes for modern small bases (training/README.md, "Other bases"): recipe prefix -> Hub id.
OTHER_BASES = {"smollm2-360m": "HuggingFaceTB/SmolLM2-360M", "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B"}
STUDY_COMMON = {"learning_rate": 2e-5, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}


@pytest.mark.parametrize("recipe, kind", [
    ("paper/sft.yaml", "sft"), ("paper/dpo.yaml", "dpo"), ("paper/sft_dpo.yaml", "dpo"),
    ("improved/sft.yaml", "sft"), ("improved/dpo.yaml", "dpo"), ("improved/sft_dpo.yaml", "dpo"),
    ("improved/dpo_filtered.yaml", "dpo"),
    *[(f"improved/{base}_{kind}.yaml", kind) for base in OTHER_BASES for kind in ("sft", "dpo")],
])
def test_every_recipe_loads_into_its_config_classes(recipe, kind):
    from trl import DPOConfig, ModelConfig, SFTConfig

    script, training, model = tconfig.parse_args(kind, ["--config", str(RECIPES / recipe)])
    assert isinstance(training, SFTConfig if kind == "sft" else DPOConfig)
    assert isinstance(model, ModelConfig) and isinstance(script, tconfig.script_arguments_class(kind))
    for key, value in STUDY_COMMON.items():
        assert getattr(training, key) == value, key
    assert script.subsets == list(hdata.SUBSETS) and script.dataset_train_split == "train" and script.pad_with_eos
    assert script.dataset_name == "Anthropic/hh-rlhf"
    # improved: training text starts like the evaluation prompts ("</s>Human:"); the study's started "</s>\n\nHuman:"
    assert script.trim_transcripts == recipe.startswith("improved")
    base = next((b for b in OTHER_BASES if recipe == f"improved/{b}_{kind}.yaml"), None)
    if base is not None:  # chat messages when the base has a template; LoRA on every linear layer of any family
        assert model.model_name_or_path == OTHER_BASES[base] and script.conversational == "auto"
        assert training.max_length == (512 if kind == "sft" else 1024)
        if kind == "sft":
            assert not model.use_peft and script.sft_format == "prompt_completion"
        else:
            assert model.use_peft and model.lora_target_modules == "all-linear" and script.drop_identical_pairs
        return
    assert script.conversational == "auto"
    if kind == "sft":
        assert model.model_name_or_path == "facebook/opt-350m" and not model.use_peft
        assert training.num_train_epochs == 2 and training.max_length == 512
        assert script.sft_format == ("prompt_completion" if recipe.startswith("improved") else "text")
    else:
        assert model.use_peft and (model.lora_r, model.lora_alpha, model.lora_dropout) == (8, 16, 0.05)
        assert sorted(model.lora_target_modules) == ["q_proj", "v_proj"]
        assert training.num_train_epochs == 1 and training.beta == 0.1
        assert script.drop_identical_pairs == recipe.startswith("improved")
        start = "outputs/opt-350m-hh-sft" + ("-improved" if recipe.startswith("improved") else "")
        assert model.model_name_or_path == (start if "sft_dpo" in recipe else "facebook/opt-350m")
    if recipe.startswith("improved") and not trl_config._bf16_available():
        assert training.bf16 is False and "float32" in training.hhalign_precision_note
    if not recipe.startswith("improved"):
        assert training.bf16 is False and training.hhalign_precision_note is None


def test_the_recipe_test_covers_every_shipped_training_recipe():
    from hhalign.config import recipe_names

    cases = test_every_recipe_loads_into_its_config_classes.pytestmark[0].args[1]
    tested = {r.removesuffix(".yaml") for r, _ in cases}
    shipped = {n for n in recipe_names() if n.split("/")[0] in ("paper", "improved") and not n.endswith("pipeline")}
    assert shipped == tested


@pytest.mark.parametrize("recipe", ["paper/pipeline.yaml", "improved/pipeline.yaml"])
def test_pipeline_recipes_load_and_name_existing_stage_recipes(recipe):
    from hhalign.config import Parser

    cfg = Parser([tpipe.PipelineConfig]).parse(["--config", str(RECIPES / recipe)])[0]
    family = recipe.split("/")[0]
    for stage, kind in tpipe.STAGE_KIND.items():
        name = getattr(cfg, f"{stage}_recipe")
        assert name.startswith(f"{family}/"), f"{recipe} names {name}, a recipe of another family"
        _, training, _ = tconfig.parse_args(kind, ["--config", name])
        assert type(training).__name__ == ("SFTConfig" if kind == "sft" else "DPOConfig")


def test_recipe_typo_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "typo.yaml"
    bad.write_text((RECIPES / "paper" / "sft.yaml").read_text().replace("learning_rate:", "learnig_rate:"))
    assert cli_main(["sft", "--config", str(bad)]) == 2
    err = _error_line(capsys.readouterr().err)
    assert "'learnig_rate' (did you mean 'learning_rate'?)" in err


def test_unknown_command_line_option_is_an_error(capsys):
    assert cli_main(["dpo", "--config", "paper/dpo", "--betta", "0.2"]) == 2
    assert "'betta' (did you mean 'beta'?)" in _error_line(capsys.readouterr().err)


def test_command_line_overrides_the_recipe():
    script, training, model = tconfig.parse_args("dpo", ["--config", "paper/dpo", "--beta", "0.3",
                                                        "--subsets", "harmless-base", "--lora_r", "4"])
    assert training.beta == 0.3 and script.subsets == ["harmless-base"] and model.lora_r == 4
    assert training.learning_rate == 2e-5  # the rest stays the recipe's


@pytest.mark.parametrize("script", ["sft", "dpo", "pipeline", "push"])
def test_help_lists_the_documented_options(script, capsys):
    from hhalign.config import Parser
    from hhalign.publish.hub import PushConfig

    with pytest.raises(SystemExit) as exc:
        if script in tconfig.KINDS:
            cli_main([script, "--help"])
        else:
            Parser([tpipe.PipelineConfig if script == "pipeline" else PushConfig]).parse(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    wanted = {"sft": "--sft_format", "dpo": "--drop_identical_pairs", "pipeline": "--hub_model_prefix",
              "push": "--metrics_json"}[script]
    assert wanted in out


def test_accelerate_configs_parse_for_accelerate_launch():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    expected = {"multi_gpu.yaml": ("MULTI_GPU", None), "deepspeed_zero2.yaml": ("DEEPSPEED", 2),
                "deepspeed_zero3.yaml": ("DEEPSPEED", 3)}
    found = {p.name for p in (RECIPES / "accelerate").glob("*.yaml")}
    assert found == set(expected)
    for name, (kind, stage) in expected.items():
        path = RECIPES / "accelerate" / name
        assert load_config_from_file(str(path)).distributed_type.value == kind
        args = launch_command_parser().parse_args(["--config_file", str(path), "training/sft.py", "--config",
                                                   "paper/sft"])
        args = _validate_launch_command(args)[0]
        assert args.training_script == "training/sft.py" and args.num_processes >= 1
        assert (args.use_deepspeed, getattr(args, "zero_stage", None)) == ((True, stage) if stage else (False, None))


def test_library_imports_without_heavy_packages():
    code = ("import sys, hhalign, hhalign.training.config, hhalign.publish.hub, hhalign.eval.config, hhalign.cli; "
            "print([m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') if m in sys.modules])")
    out = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- data ---------------------------------------------------------------------------------------------------------


def test_pairs_are_built_by_the_evaluators_parser(hh_path):
    assert tdata.preference_pair is hdata.preference_pair  # shared code, not a copy
    rows = hdata.load_hh(str(hh_path), "helpful-rejection-sampled", "test")
    script = tconfig.DPOScriptArguments(dataset_name=str(hh_path), subsets=["helpful-rejection-sampled"],
                                          dataset_train_split="test")
    built = tdata.build_training_data("dpo", script)
    assert built.examples == [dataclasses.asdict(hdata.preference_pair(r)) for r in rows]
    identical = sum(p.chosen == p.rejected for p in map(hdata.preference_pair, rows))
    assert identical > 0 and built.info["identical_pairs"] == identical
    assert built.info["dropped_identical_pairs"] == 0

    dropped = tdata.build_training_data("dpo", dataclasses.replace(script, drop_identical_pairs=True))
    assert dropped.info["examples"] == len(rows) - identical
    assert all(e["chosen"] != e["rejected"] for e in dropped.examples)

    sft = tconfig.SFTScriptArguments(dataset_name=str(hh_path), subsets=["helpful-rejection-sampled"],
                                          dataset_train_split="test")
    text = tdata.build_training_data("sft", sft)
    assert text.examples == [{"text": r["chosen"]} for r in rows]
    pc = tdata.build_training_data("sft", dataclasses.replace(sft, sft_format="prompt_completion"))
    assert pc.examples[0] == {"prompt": hdata.preference_pair(rows[0]).prompt,
                              "completion": hdata.preference_pair(rows[0]).chosen}
    assert pc.examples[0]["prompt"].endswith("\n\nAssistant:")


def test_demo_pairs_are_hh_dialogues_with_one_identical_pair():
    rows = tdata.read_pairs_file(tconfig.DEMO_PAIRS_PATH)
    assert len(rows) >= 20
    pairs = hdata.preference_pairs(rows)
    assert sum(p.chosen == p.rejected for p in pairs) == 1
    assert all(p.prompt.startswith("\n\nHuman:") and p.prompt.endswith("\n\nAssistant:") for p in pairs)


def test_empty_dataset_after_filtering_fails_before_training(tiny_models, tmp_path, capsys):
    same = tmp_path / "same.jsonl"
    t = "\n\nHuman: Hi there\n\nAssistant: Hello!"
    same.write_text(json.dumps({"chosen": t, "rejected": t}) + "\n")
    out = tmp_path / "out"
    code = cli_main(["dpo", "--config", "improved/dpo", "--dataset", str(same),
                                "--model_name_or_path", str(tiny_models.policy), "--output_dir", str(out)])
    err = _error_line(capsys.readouterr().err)
    assert code == 2
    assert "no training examples left after filtering" in err and "1 identical pairs dropped" in err
    assert not (out / tconfig.RUN_FILE).exists()


@pytest.mark.parametrize("model", ["no-such-org/no-such-model-hhalign", "./no/such/folder"])
def test_missing_base_model_is_one_line(model, tmp_path, capsys):
    code = cli_main(["sft", "--config", "paper/sft", "--model_name_or_path", model,
                                "--output_dir", str(tmp_path / "out"), "--dataset", str(tconfig.DEMO_PAIRS_PATH)])
    assert code == 2 and model.lstrip("./") in _error_line(capsys.readouterr().err)


def test_push_without_hub_id_or_token_fails_before_training(tiny_models, tmp_path, capsys, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    base = ["--config", "paper/sft", "--model_name_or_path", str(tiny_models.policy),
            "--dataset", str(tconfig.DEMO_PAIRS_PATH), "--output_dir", str(tmp_path / "out"), "--push_to_hub"]
    assert cli_main(["sft", *base]) == 2
    assert "--push_to_hub needs --hub_model_id org/name" in capsys.readouterr().err
    assert cli_main(["sft", *base, "--hub_model_id", "someone/tiny"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err  # this test session is offline
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert cli_main(["sft", *base, "--hub_model_id", "someone/tiny"]) == 2
    assert "needs a Hub token" in _error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_script_errors_print_one_line_without_traceback(tmp_path):
    proc = subprocess.run([PY, "training/dpo.py", "--config", "paper/dpo", "--push_to_hub",
                           "--output_dir", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --push_to_hub needs --hub_model_id")
    assert "Traceback" not in proc.stderr


# --- runs ---------------------------------------------------------------------------------------------------------


def test_runs_write_checkpoints_records_losses_and_cards(runs):
    for stage, kind in (("sft", "sft"), ("dpo", "dpo"), ("sft_dpo", "dpo")):
        folder = getattr(runs, stage)
        record = json.loads((folder / tconfig.RUN_FILE).read_text())
        assert record["status"] == "finished" and record["kind"] == kind
        assert record["timing"]["global_step"] == 2 and record["timing"]["seconds_per_step"] > 0
        assert record["data"]["rows"] == 16 and record["data"]["split"] == "test"
        assert (folder / "checkpoint-2").is_dir()
        lines = (folder / tconfig.LOSS_CSV).read_text().splitlines()
        assert lines[0].startswith("step,epoch,loss") and len(lines) == 3
        assert len(json.loads((folder / tconfig.LOSS_JSON).read_text())) == 2
        assert (folder / tconfig.LOSS_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        card = (folder / "README.md").read_text()
        assert "Not evaluated yet: no numbers are claimed" in card and "learning_rate" in card
    assert (runs.sft / "model.safetensors").exists() and not (runs.sft / "adapter_config.json").exists()
    for adapter in (runs.dpo, runs.sft_dpo):
        assert (adapter / "adapter_config.json").exists() and not (adapter / "model.safetensors").exists()
    base = json.loads((runs.sft_dpo / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base).resolve() == runs.sft.resolve()
    dpo_record = json.loads((runs.dpo / tconfig.RUN_FILE).read_text())
    assert dpo_record["recipe"]["beta"] == 0.1 and dpo_record["recipe"]["lora_r"] == 8


def test_outputs_load_through_model_references_and_generate(runs):
    from hhalign.engine import generate
    from hhalign.loading import load_policy
    from hhalign.refs import parse_model_ref

    outputs = {}
    for stage in ("sft", "dpo", "sft_dpo"):
        loaded = load_policy(parse_model_ref(f"{stage}={getattr(runs, stage)}"))
        assert loaded.info["adapter"] is (stage != "sft")
        if stage == "sft_dpo":
            assert Path(loaded.info["base_model"]).resolve() == runs.sft.resolve()
        gens = generate(loaded.model, loaded.tokenizer, ["\n\nHuman: How do I water a cactus?"], max_new_tokens=8)
        assert len(gens) == 1 and gens[0].n_new_tokens > 0
        outputs[stage] = gens[0].response
    # the same checkpoints loaded by transformers/PEFT directly answer the same: the references load what was trained
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for stage in ("sft", "dpo", "sft_dpo"):
        path = str(getattr(runs, stage))
        model = (AutoModelForCausalLM if stage == "sft" else AutoPeftModelForCausalLM).from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        direct = generate(model.eval(), tokenizer, ["\n\nHuman: How do I water a cactus?"], max_new_tokens=8)
        assert direct[0].response == outputs[stage], stage


def test_finished_run_is_reused_and_other_settings_are_refused(runs, hh_path, capsys):
    argv = ["--config", "paper/dpo", "--model_name_or_path", str(runs.policy), "--output_dir",
            str(runs.dpo), "--dataset", str(hh_path), "--split", "test", *TINY]
    before = (runs.dpo / "adapter_model.safetensors").stat().st_mtime_ns
    assert cli_main(["dpo", *argv]) == 0
    assert "finished dpo run found (2 steps); not training again" in capsys.readouterr().err
    assert (runs.dpo / "adapter_model.safetensors").stat().st_mtime_ns == before
    assert cli_main(["dpo", *argv, "--learning_rate", "1e-4"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with other settings (learning_rate: 2e-05 -> 0.0001)" in err


def test_interrupted_run_resumes_from_its_last_checkpoint(tiny_models, tmp_path, one_thread):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise RuntimeError("simulated crash after checkpoint-2")

    argv = ["--config", "paper/sft", "--model_name_or_path", str(tiny_models.policy),
            "--dataset", str(tconfig.DEMO_PAIRS_PATH), "--output_dir", str(tmp_path / "sft"), *TINY,
            "--max_steps", "3"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        trun.run_training("sft", *tconfig.parse_args("sft", argv), callbacks=[Crash()])
    assert json.loads((tmp_path / "sft" / tconfig.RUN_FILE).read_text())["status"] == "running"
    assert len((tmp_path / "sft" / tconfig.LOSS_CSV).read_text().splitlines()) == 3  # kept during the run
    with captured_log() as lines:
        record = trun.run_training("sft", *tconfig.parse_args("sft", argv))
    assert any(line.startswith("resuming from") and line.endswith("checkpoint-2") for line in lines)
    assert record["resumed_from"].endswith("checkpoint-2") and record["timing"]["global_step"] == 3
    assert record["timing"]["steps_this_run"] == 1
    assert [r["step"] for r in json.loads((tmp_path / "sft" / tconfig.LOSS_JSON).read_text())] == [1, 2, 3]


# --- the demo pipeline --------------------------------------------------------------------------------------------


def test_demo_pipeline_trains_and_evaluates_four_models(demo):
    out = demo.out
    for stage in ("sft", "dpo", "sft_dpo"):
        assert json.loads((out / stage / tconfig.RUN_FILE).read_text())["status"] == "finished"
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert list(metrics["models"]) == ["base", "sft", "dpo", "sft_dpo"]
    for m in metrics["models"].values():
        assert m["CAS"] is not None and len(m["ci95"]["CAS"]) == 2
    assert (out / "eval" / "report.md").exists() and (out / "eval" / "responses.jsonl").exists()
    dpo_data = json.loads((out / "dpo" / tconfig.RUN_FILE).read_text())["data"]
    assert dpo_data["identical_pairs"] == 1 and dpo_data["dropped_identical_pairs"] == 0
    assert any("1 of 24 pairs have identical chosen and rejected replies" in line for line in demo.log)


def test_demo_pipeline_rerun_skips_finished_stages(demo):
    with captured_log() as lines:
        tpipe.run_pipeline(tpipe.PipelineConfig(demo=True, output_dir=str(demo.out)))
    assert sum("not training again" in line for line in lines) == 3
    assert sum("responses already generated" in line for line in lines) == 4


def test_pipeline_launcher_runs_stages_as_subprocesses(demo):
    with captured_log() as lines:
        result = tpipe.run_pipeline(tpipe.PipelineConfig(demo=True, output_dir=str(demo.out), launcher=PY,
                                                           evaluate=False))
    assert sum(line.startswith("== ") for line in lines) == 3
    assert all(result["records"][s]["status"] == "finished" for s in tconfig.STAGES)


# --- publishing ---------------------------------------------------------------------------------------------------


@pytest.fixture
def hub_calls(monkeypatch):
    """A patched huggingface_hub client: records create_repo/upload_folder calls and what the folder held."""
    import huggingface_hub
    from huggingface_hub import constants

    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, "token": self.token, **kwargs}))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        calls.append(("upload_folder", {"repo_id": repo_id, "files": files, **kwargs}))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc123")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def test_push_stages_adapter_card_and_metrics(demo, hub_calls, tmp_path):
    from huggingface_hub import ModelCard

    from hhalign.publish.hub import push_checkpoint

    metrics_path = demo.out / "eval" / "metrics.json"
    result = push_checkpoint(demo.out / "sft_dpo", "me/tiny-sft-dpo", token="hf_x", merge_adapter=True,
                             metrics_json=metrics_path, metrics_model="sft_dpo",
                             base_model_hub_id="me/tiny-sft")
    assert [name for name, _ in hub_calls] == ["create_repo", "upload_folder"]
    create, upload = hub_calls[0][1], hub_calls[1][1]
    assert create == {"repo_id": "me/tiny-sft-dpo", "token": "hf_x", "private": False, "exist_ok": True,
                      "repo_type": "model"}
    files = upload["files"]
    assert upload["repo_id"] == "me/tiny-sft-dpo" and upload["repo_type"] == "model"
    for name in ("README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
                 tconfig.RUN_FILE, tconfig.LOSS_CSV, tconfig.LOSS_PNG, "merged/config.json",
                 "merged/model.safetensors"):
        assert name in files, name
    assert not any(n.startswith("checkpoint-") or n == "training_args.bin" for n in files)
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == "me/tiny-sft"
    assert result["repo_id"] == "me/tiny-sft-dpo" and result["commit_url"].endswith("abc123")
    assert json.loads((demo.out / "sft_dpo" / "hhalign_push.json").read_text())["repo_id"] == "me/tiny-sft-dpo"

    card_path = tmp_path / "README.md"
    card_path.write_bytes(files["README.md"])
    card = ModelCard.load(card_path)
    measured = json.loads(metrics_path.read_text())["models"]["sft_dpo"]
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values == {k.lower(): round(measured[k], 2) for k in ("HmR", "HpR", "CAS")}
    assert card.data.base_model == "me/tiny-sft" and card.data.library_name == "peft"
    hmr = next(r for r in card.data.eval_results if r.metric_type == "hmr")
    assert hmr.metric_args["ci95_low"] == round(measured["ci95"]["HmR"][0], 2)
    text = card.text
    ci = measured["ci95"]["CAS"]
    assert f"| CAS (Combined alignment score) | {measured['CAS']:.1f} [{ci[0]:.1f}, {ci[1]:.1f}] |" in text
    assert "paper protocol on hhalign demo prompts" in text and "Training loss" in text
    assert 'subfolder="merged"' in text and "identical chosen and rejected replies: 1" in text

    # The merged weights load without PEFT and give the adapter's outputs.
    from hhalign.loading import load_policy
    from hhalign.refs import parse_model_ref

    merged_dir = tmp_path / "merged"
    merged_dir.mkdir()
    for name, blob in files.items():
        if name.startswith("merged/"):
            (merged_dir / name.split("/", 1)[1]).write_bytes(blob)
    assert load_policy(parse_model_ref(f"m={merged_dir}")).info["adapter"] is False


def test_push_refuses_metrics_measured_on_another_model(demo, hub_calls):
    from hhalign.publish.hub import push_checkpoint

    with pytest.raises(HHAlignError, match="measured on .*, not on"):
        push_checkpoint(demo.out / "dpo", "me/tiny-dpo", token="hf_x", metrics_json=demo.out / "eval" / "metrics.json",
                        metrics_model="sft", base_model_hub_id="me/base")
    with pytest.raises(HHAlignError, match="base_model_hub_id"):
        push_checkpoint(demo.out / "dpo", "me/tiny-dpo", token="hf_x")
    assert hub_calls == []


def test_pipeline_publish_records_hub_ids_and_metrics_in_models_md(demo, hub_calls, tmp_path):
    from hhalign.publish.registry import REGISTRY_PATH, load_registry

    registry = tmp_path / "registry.json"
    shutil.copy(REGISTRY_PATH, registry)
    models_md = tmp_path / "models.md"
    cfg = tpipe.PipelineConfig(output_dir=str(demo.out), push_to_hub=True, hub_model_prefix="me/tiny",
                                registry_path=str(registry), models_md=str(models_md), registry_suffix="_demo",
                                base_model_hub_id="me/tiny-base")
    records = {s: json.loads((demo.out / s / tconfig.RUN_FILE).read_text()) for s in tconfig.STAGES}
    pushed = tpipe.publish_stages(cfg, demo.out, demo.out / "eval" / "metrics.json",
                                   str(demo.out / "tiny" / "policy"), records)
    assert pushed == {"sft": "me/tiny-sft", "dpo": "me/tiny-dpo", "sft_dpo": "me/tiny-sft-dpo"}
    assert {c["token"] for name, c in hub_calls if name == "create_repo"} == {"hf_from_env"}
    uploads = [c for name, c in hub_calls if name == "upload_folder"]
    assert json.loads(uploads[1]["files"]["adapter_config.json"])["base_model_name_or_path"] == "me/tiny-base"
    assert json.loads(uploads[2]["files"]["adapter_config.json"])["base_model_name_or_path"] == "me/tiny-sft"
    entries = {e.name: e for e in load_registry(registry)}
    measured = json.loads((demo.out / "eval" / "metrics.json").read_text())["models"]
    for stage in tconfig.STAGES:
        entry = entries[f"{stage}_demo"]
        assert entry.ref == pushed[stage] and entry.role == stage
        # the registry holds what the pushed card says: the measured values, rounded as in model-index
        assert entry.metrics["CAS"] == round(measured[stage]["CAS"], 2)
        assert entry.metrics["ci95"]["CAS"] == [round(v, 2) for v in measured[stage]["ci95"]["CAS"]]
        assert entry.command.startswith("hhalign ")
    assert entries["sft"].ref is None  # the study's entries are untouched by another run's names
    md = models_md.read_text()
    ci = [round(v, 2) for v in measured["sft"]["ci95"]["HmR"]]
    assert "[`me/tiny-sft`](https://huggingface.co/me/tiny-sft)" in md
    assert f"{round(measured['sft']['HmR'], 2):.1f} [{ci[0]:.1f}, {ci[1]:.1f}]" in md


def test_dpo_lowers_its_loss_and_widens_the_margin_on_the_tiny_model(tiny_models, tmp_path, one_thread):
    """A few DPO steps on one fixed batch of the project's preference pairs: the loss starts at log 2 (the policy is
    its own reference) and falls, and the chosen-minus-rejected reward margin grows (a sign error in the loss, the
    pairs' order or the reference would move them the other way)."""
    out = tmp_path / "dpo"
    assert cli_main(["dpo", "--config", "paper/dpo", "--model_name_or_path", str(tiny_models.policy),
                     "--dataset", str(hdata.DEMO_PAIRS_PATH), "--output_dir", str(out), "--max_samples", "4",
                     "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--max_steps", "6",
                     "--learning_rate", "5e-2", "--beta", "0.5", "--lora_dropout", "0", "--max_length", "64",
                     "--logging_steps", "1", "--save_steps", "100"]) == 0
    log = json.loads((out / "losses.json").read_text())
    losses = [row["loss"] for row in log if "loss" in row]
    margins = [row["rewards/margins"] for row in log if "rewards/margins" in row]
    assert len(losses) == len(margins) == 6
    assert abs(losses[0] - 0.6931) < 0.01  # log 2: the policy starts as its own reference
    # measured: 0.6931 -> 0.651 and margin 0 -> +0.088 over the six steps, every step in the right direction
    assert all(b < a for a, b in zip(losses[1:], losses[2:])), losses
    assert all(b > a for a, b in zip(margins[1:], margins[2:])), margins
    assert losses[-1] < losses[0] - 0.02 and margins[-1] > margins[0] + 0.04, (losses, margins)
