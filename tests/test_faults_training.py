"""Faults injected into training and into the files a user hands in: incomplete checkpoints (a kill while saving),
a damaged run record, diverged (NaN) losses, impossible option values, malformed pair and prompt files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import captured_log
from hhalign.cli import main as cli_main
from hhalign.errors import HHAlignError
from hhalign.training import config as tconfig
from hhalign.training import run as trun
from hhalign.training.losses import loss_summary, write_loss_files

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
TINY = ["--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1", "--max_length", "96",
        "--logging_steps", "1", "--save_steps", "1", "--max_samples", "8", "--max_steps", "3"]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def one_error_line(err: str) -> str:
    """The ``error:`` line a command printed last; nothing else may be an error or a traceback."""
    lines = err.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:] and "Traceback" not in err, err
    return lines[-1]


@pytest.fixture(scope="module")
def crashed(tiny_models, tmp_path_factory):
    """An SFT run of 3 steps killed right after checkpoint-2 was saved: checkpoint-1 and checkpoint-2 on disk."""
    import torch
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise RuntimeError("killed")

    out = tmp_path_factory.mktemp("crashed") / "sft"
    argv = ["--config", "paper/sft", "--model_name_or_path", str(tiny_models.policy), "--dataset",
            str(tconfig.DEMO_PAIRS_PATH), "--output_dir", str(out), *TINY]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            trun.run_training("sft", *tconfig.parse_args("sft", argv), callbacks=[Crash()])
    finally:
        torch.set_num_threads(threads)
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-1", "checkpoint-2"}
    return out, argv


def damage(checkpoint: Path, how: str) -> str:
    """What a kill -9 while the Trainer saves ``checkpoint`` leaves; returns the expected reason."""
    if how == "no state":
        (checkpoint / "trainer_state.json").unlink()
        return "no trainer_state.json"
    if how == "torn state":
        path = checkpoint / "trainer_state.json"
        path.write_text(path.read_text()[:40])
        return "trainer_state.json is damaged"
    if how == "cut weights":
        path = checkpoint / "model.safetensors"
        size = path.stat().st_size
        path.write_bytes(path.read_bytes()[:-1000])
        return f"model.safetensors is cut off ({size - 1000} of {size} bytes)"
    shutil.rmtree(checkpoint)
    checkpoint.mkdir()  # the folder was created, nothing in it yet
    return "no trainer_state.json"


@pytest.mark.parametrize("how", ["no state", "torn state", "cut weights", "empty"])
def test_an_incomplete_checkpoint_is_skipped_with_one_warning(crashed, tmp_path, how):
    import torch

    source, argv = crashed
    out = tmp_path / "sft"
    shutil.copytree(source, out)
    reason = damage(out / "checkpoint-2", how)
    argv = [a if a != str(source) else str(out) for a in argv]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with captured_log() as lines:
            record = trun.run_training("sft", *tconfig.parse_args("sft", argv))
    finally:
        torch.set_num_threads(threads)
    warnings = [line for line in lines if " is incomplete (" in line]
    assert warnings == [f"{out / 'checkpoint-2'} is incomplete ({reason}: the run was killed while saving it); "
                        "skipped, resuming from checkpoint-1"]
    assert record["resumed_from"] == str(out / "checkpoint-1")
    assert record["timing"]["global_step"] == 3 and record["timing"]["steps_this_run"] == 2
    assert [r["step"] for r in json.loads((out / tconfig.LOSS_JSON).read_text())] == [1, 2, 3]


def test_resume_from_an_incomplete_checkpoint_by_name_is_one_line(crashed, tmp_path, capsys):
    source, argv = crashed
    out = tmp_path / "sft"
    shutil.copytree(source, out)
    damage(out / "checkpoint-2", "no state")
    argv = [a if a != str(source) else str(out) for a in argv]
    before = snapshot(out)
    assert cli_main(["sft", *argv, "--resume_from_checkpoint", str(out / "checkpoint-2")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == (f"error: --resume_from_checkpoint {str(out / 'checkpoint-2')!r} cannot be resumed from (no "
                    "trainer_state.json): name a complete checkpoint-N folder, or drop the option to resume from the "
                    "newest one")
    assert snapshot(out) == before


@pytest.mark.parametrize("text", ['{"status": "running", "kind"', "", "[1, 2]"])
def test_a_damaged_run_record_is_one_line_naming_the_file_and_the_fix(crashed, tmp_path, capsys, text):
    source, argv = crashed
    out = tmp_path / "sft"
    shutil.copytree(source, out)
    (out / tconfig.RUN_FILE).write_text(text)
    argv = [a if a != str(source) else str(out) for a in argv]
    before = snapshot(out)
    assert cli_main(["sft", *argv]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"the run record {str(out / tconfig.RUN_FILE)!r}" in line
    assert "delete it and run the same training command again" in line
    assert snapshot(out) == before


@pytest.mark.parametrize(("extra", "message"), [
    (["--learning_rate=-1e-5"], "--learning_rate must be a positive number (e.g. 2e-5), got -1e-05"),
    (["--learning_rate", "-0.5"], "--learning_rate must be a positive number (e.g. 2e-5), got -0.5"),
    (["--learning_rate", "nan"], "--learning_rate must be a positive number"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be at least 1, got 0"),
    (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be at least 1"),
    (["--max_steps", "0"], "--max_steps must be a positive number of steps"),
    (["--max_steps", "-1", "--num_train_epochs", "0"], "--num_train_epochs must be positive"),
    (["--max_length", "0"], "--max_length must be a positive number of tokens"),
    (["--warmup_steps", "-3"], "warmup_steps >= 0"),
    (["--logging_steps", "0"], "requires non-zero --logging_steps"),
    (["--learning_rat", "1e-5"], "unknown option(s) 'learning_rat' (did you mean 'learning_rate'?)"),
    (["--max_samples", "many"], "invalid int value: 'many'"),
])
def test_impossible_training_values_are_one_line_and_write_nothing(tiny_models, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    code = cli_main(["sft", "--config", "paper/sft", "--model_name_or_path", str(tiny_models.policy), "--dataset",
                     str(tconfig.DEMO_PAIRS_PATH), "--output_dir", str(out), *extra])
    assert code == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_dpo_beta_must_be_positive(tiny_models, tmp_path, capsys):
    code = cli_main(["dpo", "--config", "paper/dpo", "--model_name_or_path", str(tiny_models.policy),
                     "--output_dir", str(tmp_path / "o"), "--beta", "0"])
    assert code == 2 and "--beta must be a positive number (e.g. 0.1), got 0.0" in capsys.readouterr().err


def test_nan_losses_are_null_in_strict_json(tmp_path):
    history = [{"loss": 2.5, "step": 1, "epoch": 0.1, "grad_norm": 1.0},
               {"loss": float("nan"), "step": 2, "epoch": 0.2, "grad_norm": float("inf")},
               {"loss": 2.0, "step": 3, "epoch": 0.3, "grad_norm": 0.5}, {"train_loss": float("nan"), "step": 3}]
    paths = write_loss_files(tmp_path, history)
    rows = json.loads(Path(paths["json"]).read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert [r["loss"] for r in rows] == [2.5, None, 2.0] and rows[1]["grad_norm"] is None
    assert Path(paths["csv"]).read_text().splitlines()[2].startswith("2,0.2,,")
    assert Path(paths["png"]).read_bytes()[:4] == b"\x89PNG"
    summary = loss_summary(history)
    assert summary == {"logged_steps": 2, "nonfinite_steps": 1, "first_step": 1, "last_step": 3, "first": 2.5,
                       "last": 2.0, "min": 2.0, "mean_last_10pct": 2.0, "train_loss": None}
    json.dumps(summary, allow_nan=False)


# --- files a user hands in ------------------------------------------------------------------------------------------


PAIR = json.dumps({"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away"})


@pytest.mark.parametrize(("text", "message"), [
    (f"{PAIR}\n{{broken\n{PAIR}\n", "pairs.jsonl:2: not valid JSON"),
    (f"{PAIR}\n{PAIR[:30]}", "pairs.jsonl:2: not valid JSON"),  # a torn last line is an error, not a resume log
    (f"{PAIR}\n[1, 2]\n", "pairs.jsonl:2: expected a JSON object"),
    (f'{PAIR}\n{{"chosen": "x"}}\n', "pairs.jsonl:2: needs string fields 'chosen' and 'rejected'"),
])
def test_a_malformed_pairs_file_names_file_and_line(tiny_models, tmp_path, capsys, text, message):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(text)
    out = tmp_path / "out"
    assert cli_main(["dpo", "--config", "paper/dpo", "--model_name_or_path", str(tiny_models.policy), "--dataset",
                     str(pairs), "--output_dir", str(out)]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not out.exists()


PROMPT = json.dumps({"category": "helpful", "prompt": "Human: Hi?"})


@pytest.mark.parametrize(("text", "message"), [
    (f"{PROMPT}\n{PROMPT[:20]}", "prompts.jsonl:2: not valid JSON"),
    (f'{PROMPT}\n{{"category": "neutral", "prompt": "Human: x"}}\n', "prompts.jsonl:2: needs 'category'"),
    ('{"category": "helpful", "prompt": "Human: a", "prompt_id": 0}\n'
     '{"category": "helpful", "prompt": "Human: b", "prompt_id": "0"}\n', "duplicate prompt_id"),
    ('{"category": "helpful", "prompt": "Human: a", "prompt_id": null}\n', "prompts.jsonl:1: prompt_id None"),
])
def test_a_malformed_prompts_file_names_file_and_line(tmp_path, capsys, text, message):
    from hhalign.cli import run as cli_run
    from hhalign.eval.config import EvalConfig
    from hhalign.eval.run import run

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(text)
    out = tmp_path / "out"
    assert cli_run(run, [EvalConfig], ["--prompts_only", "--prompt_set", str(prompts), "--out", str(out)]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_prompt_id_zero_is_kept(tmp_path):
    from hhalign.data import load_prompts_file

    path = tmp_path / "p.jsonl"
    path.write_text('{"category": "helpful", "prompt": "Human: a", "prompt_id": 0}\n'
                    '{"category": "helpful", "prompt": "Human: b"}\n')
    assert [p.prompt_id for p in load_prompts_file(path)] == ["0", "helpful-001"]
    with pytest.raises(HHAlignError, match="p.jsonl:1: prompt_id True is not an id"):
        path.write_text('{"category": "helpful", "prompt": "Human: a", "prompt_id": true}\n')
        load_prompts_file(path)
