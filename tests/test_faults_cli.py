"""One error path for every command: a misspelled flag, bad YAML, a wrong type, an impossible value or combination
(options a mode would ignore included), a missing file: one ``error:`` line on stderr naming the thing and the fix,
exit status 2, no traceback, nothing written.

Every case fails in option checking or in the first cheap check, so each costs milliseconds (the commands' heavy
imports are paid once).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hhalign.cli import COMMANDS
from hhalign.cli import main as cli_main

COMMAND_NAMES = list(COMMANDS)
A_FLAG = {"eval": "limit", "bench": "repeat", "sft": "learning_rate", "dpo": "beta", "pipeline": "demo_steps",
          "push": "checkpoint", "space": "memory_budget_gb", "deploy": "space_id", "tiny": "overwrite"}


def error_line(argv: list[str], capsys, tmp_path: Path) -> str:
    """Run ``hhalign ARGV`` in tmp_path; assert exit 2, a single error line, no traceback and nothing written."""
    before = sorted(tmp_path.rglob("*"))
    code = cli_main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert sorted(tmp_path.rglob("*")) == before, "a refused command wrote files"
    return lines[0]


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("limit: 1\n  oops: [2\n")
    return tmp_path


@pytest.mark.parametrize("command", COMMAND_NAMES)
def test_a_misspelled_flag_suggests_the_right_one(command, here, capsys):
    right = A_FLAG[command]
    line = error_line([command, f"--{right[:-1]}", "1"], capsys, here)
    assert f"unknown option(s) '{right[:-1]}' (did you mean '{right}'?)" in line
    assert f"see hhalign {command} --help" in line


@pytest.mark.parametrize(("typo", "right"), [("ouf", "out"), ("oot", "out"), ("uot", "out"), ("limt", "limit")])
def test_a_one_letter_typo_of_a_short_flag_suggests_it(typo, right, here, capsys):
    line = error_line(["eval", f"--{typo}", "X"], capsys, here)
    assert f"unknown option(s) '{typo}' (did you mean '{right}'?)" in line


@pytest.mark.parametrize("command", COMMAND_NAMES)
def test_bad_yaml_names_the_line(command, here, capsys):
    line = error_line([command, "--config", "bad.yaml"], capsys, here)
    assert line.startswith("error: --config 'bad.yaml' is not valid YAML at line 2")


@pytest.mark.parametrize("command", COMMAND_NAMES)
def test_a_missing_config_file_is_one_line(command, here, capsys):
    line = error_line([command, "--config", "nope/missing.yaml"], capsys, here)
    assert "--config 'nope/missing.yaml' is neither a file nor a shipped recipe" in line


@pytest.mark.parametrize(("argv", "message"), [
    # wrong types
    (["eval", "--limit", "ten"], "option --limit: invalid int value: 'ten'"),
    (["bench", "--n", "2.5"], "option --n: invalid int value: '2.5'"),
    (["sft", "--max_steps", "x"], "invalid int value: 'x'"),
    (["dpo", "--beta", "high"], "invalid float value: 'high'"),
    (["pipeline", "--demo_steps", "x"], "invalid int value: 'x'"),
    (["push", "--private", "maybe"], "--private"),
    (["space", "--port", "http"], "option --port: invalid int value: 'http'"),
    (["eval", "--mode", "turbo"], "option --mode: invalid choice: 'turbo'"),
    (["space", "--dtype", "float8"], "option --dtype: invalid choice: 'float8'"),
    # impossible values
    (["eval", "--n_bootstrap", "0"], "--n_bootstrap must be a positive number of resamples, got 0"),
    (["eval", "--batch_size", "0"], "--batch_size must be a positive number of prompts, got 0"),
    (["eval", "--harmless_threshold", "nan"], "--harmless_threshold must be a finite number"),
    (["eval", "--device", "gpu0"], "--device 'gpu0' is not a device"),
    (["bench", "--repeat", "0"], "--repeat must be a positive number of rounds, got 0"),
    (["bench", "--backend", "tensorrt"], "--backend: invalid choice: 'tensorrt' (choose from 'engine', 'vllm')"),
    (["sft", "--learning_rate=-2e-5"], "--learning_rate must be a positive number"),
    (["dpo", "--beta", "0"], "--beta must be a positive number"),
    (["pipeline", "--demo", "--demo_steps", "0"], "--demo_steps must be a positive number of steps, got 0"),
    (["pipeline", "--eval_options", "limit=0"], "--limit must be a positive number of prompts per category"),
    (["pipeline", "--eval_options", "limit"], "--eval_options entries are key=value, got 'limit'"),
    (["pipeline", "--sft_recipe", "paper/sfft"], "--sft_recipe 'paper/sfft' is neither a file nor a shipped recipe: "
                                                 "did you mean 'paper/sft'?"),
    (["space", "--port", "70000"], "--port must be between 0 and 65535, got 70000"),
    (["space", "--memory_budget_gb", "0"], "--memory_budget_gb must be positive"),
    (["space", "--device", "gpu"], "--device 'gpu' is not a device"),
    (["space", "--max_new_tokens", "0"], "--max_new_tokens must be a positive number of tokens, got 0"),
    (["deploy", "--space_id", "not a space", "--dry_run"], "is not a valid Space id"),
    # impossible combinations, and options this mode would ignore
    (["eval", "--from_responses", "r.jsonl", "--models", "a=b"], "--models does nothing with --from_responses"),
    (["eval", "--from_responses", "r.jsonl", "--max_new_tokens", "9"], "--max_new_tokens does nothing with "
                                                                        "--from_responses"),
    (["eval", "--prompts_only", "--reward_model", "x/y"], "--reward_model does nothing with --prompts_only"),
    (["eval", "--prompts_only", "--n_bootstrap", "10"], "--n_bootstrap does nothing with --prompts_only"),
    (["eval", "--demo", "--models", "a=b"], "--models does nothing with --demo"),
    (["eval", "--mode", "fp32", "--dtype", "bfloat16"], "--mode fp32 computes in float32, which --dtype bfloat16 "
                                                        "contradicts"),
    (["eval", "--mode", "fast", "--dtype", "float16"], "--mode fast picks the number format itself"),
    (["pipeline", "--demo_steps", "3"], "--demo_steps does nothing without --demo"),
    (["pipeline", "--demo", "--push_to_hub"], "--demo trains throwaway tiny models"),
    (["pipeline", "--demo", "--base_model", "x/y"], "--base_model does nothing with --demo"),
    (["pipeline", "--hub_model_prefix", "me/x"], "--hub_model_prefix does nothing without --push_to_hub"),
    (["pipeline", "--evaluate", "false", "--eval_options", "limit=2"], "--eval_options does nothing with "
                                                                       "--evaluate false"),
    (["pipeline", "--eval_options", "out=x"], "--eval_options cannot set out"),
    (["push", "--checkpoint", "c", "--role", "sft"], "--role does nothing without --registry_name"),
    (["push", "--checkpoint", "c", "--metrics_model", "sft"], "--metrics_model does nothing without --metrics_json"),
    (["sft", "--output_dir", "o", "--merge_adapter"], "--merge_adapter does nothing without --push_to_hub"),
    (["dpo", "--output_dir", "o", "--metrics_json", "m.json"], "--metrics_json does nothing without --push_to_hub"),
    # missing files
    (["eval", "--prompt_set", "prompts/mine.jsonl", "--prompts_only"], "prompts file 'prompts/mine.jsonl' does "
                                                                         "not exist"),
    (["eval", "--prompt_set", "prompts/mine.jsonl", "--models", "a=./m"], "model folder './m' does not exist"),
    (["eval", "--from_responses", "nope.jsonl"], "--from_responses 'nope.jsonl' does not exist"),
    (["eval", "--models", "m=./no-model", "--prompt_set", "demo", "--reward_model", "./no-model"],
     "model folder './no-model' does not exist"),
    (["sft", "--model_name_or_path", "./no-model", "--output_dir", "o"], "./no-model"),
    (["pipeline", "--base_model", "./no-model", "--output_dir", "o"], "model folder './no-model' does not exist"),
    (["pipeline", "--output_dir", "o"], "model 'facebook/opt-350m' is not in the local Hugging Face cache"),
    (["push", "--checkpoint", "no-such-run"], "--checkpoint 'no-such-run' is not a folder"),
    (["deploy", "--space_id", "me/space", "--results", "no-results", "--dry_run"], "--results 'no-results' has no "
                                                                                    "metrics.json"),
    (["space", "--results", "no-results"], "--results 'no-results' has no metrics.json"),
])
def test_one_line_for_every_mistake(argv, message, here, capsys):
    assert message in error_line(argv, capsys, here)


def test_corrupt_state_of_each_kind_is_one_line(here, capsys):
    (here / "run").mkdir()
    (here / "run" / "hhalign_train.json").write_text("{")
    assert "the run record 'run/hhalign_train.json' is not valid JSON (line 1)" in error_line(
        ["sft", "--output_dir", "run"], capsys, here)
    (here / "ev").mkdir()
    (here / "ev" / "run.json").write_text('{"fingerprint": ')
    assert "run state 'ev/run.json' is not valid JSON (line 1)" in error_line(
        ["eval", "--prompts_only", "--prompt_set", "demo", "--out", "ev"], capsys, here)


def test_yaml_strings_for_list_options_are_split_like_a_command_line(here, capsys):
    """``models: tiny=/path`` is one model (not one per character); ``eval_options: "limit=2 batch_size=3"`` two
    options."""
    from hhalign.config import Parser
    from hhalign.eval.config import EvalConfig
    from hhalign.training.pipeline import PipelineConfig

    (here / "eval.yaml").write_text("models: tiny=/some/path\nprompt_set: demo\n")
    (cfg,) = Parser([EvalConfig]).parse(["--config", "eval.yaml"])
    assert cfg.models == ["tiny=/some/path"]
    (here / "eval2.yaml").write_text("models: 'a=/x b=\"/with space\"'\n")
    assert Parser([EvalConfig]).parse(["--config", "eval2.yaml"])[0].models == ["a=/x", "b=/with space"]
    (here / "pipe.yaml").write_text("eval_options: limit=2 batch_size=3\nsubsets: harmless-base\n")
    (pipe,) = Parser([PipelineConfig]).parse(["--config", "pipe.yaml"])
    assert (pipe.eval.limit, pipe.eval.batch_size, pipe.subsets) == (2, 3, ["harmless-base"])


def test_a_path_the_machine_refuses_is_one_line(here, capsys, tiny_models):
    (here / "ro").mkdir()
    (here / "ro" / "file").write_text("")
    line = error_line(["sft", "--model_name_or_path", str(tiny_models.policy), "--output_dir", "ro/file/out"],
                      capsys, here)
    assert line == ("error: --output_dir 'ro/file/out' is not writable (lies under 'ro/file', which is not a writable "
                    "folder): choose another folder")
    # Any other path the machine refuses, wherever it is met: one line naming it.
    line = error_line(["deploy", "--space_id", "me/space", "--dry_run", "--staging", "ro/file/stage"], capsys, here)
    assert line == (f"error: cannot use {str(here / 'ro/file/stage')!r} (Not a directory): check the path and its "
                    "permissions")


def test_the_tables_cover_every_command():
    assert set(A_FLAG) == set(COMMANDS)
