"""batch/eval.py end to end on tiny models: outputs, settings, resume, and one-line errors for bad input."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from hhalign.cli import run as cli_run
from hhalign.eval.config import EvalConfig
from hhalign.eval.run import run
from hhalign.files import read_log as read_jsonl
from hhalign.stats.metrics import PAPER_TABLE1

EVAL = [sys.executable, str(ROOT / "batch" / "eval.py")]
OUTPUTS = ("prompts.jsonl", "responses.jsonl", "metrics.json", "report.md", "rates.png", "reward_boxes.png",
           "mean_rewards.png", "threshold_sweep.png")


def cli(argv, capsys):
    """Run batch/eval.py's main in-process; returns (exit code, stderr)."""
    code = cli_run(lambda cfg: run(cfg), [EvalConfig], argv)
    return code, capsys.readouterr().err


def tiny_args(tiny_models, tiny_adapter, out, *extra):
    return ["--models", f"tiny={tiny_models.policy}", f"lora={tiny_adapter}", "--reward_model",
            str(tiny_models.reward), "--prompt_set", "demo", "--limit", "3", "--max_new_tokens", "6",
            "--n_bootstrap", "200", "--judge_check", "0", "--out", str(out), *extra]


def test_demo_via_the_real_script(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*EVAL, "--demo", "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"tiny", "tiny_lora"}
    assert metrics["settings"]["demo"] is True
    assert "meaningless" in (out / "report.md").read_text()
    records = read_jsonl(out / "responses.jsonl")
    assert len(records) == 2 * 16
    assert {"model", "model_ref", "category", "prompt_id", "prompt", "response", "reward", "label"} <= set(records[0])


def test_tiny_run_writes_every_output_and_its_provenance(tiny_models, tiny_adapter, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = cli(tiny_args(tiny_models, tiny_adapter, out, "--batch_size", "2"), capsys)
    assert code == 0, err
    for name in OUTPUTS:
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    settings = metrics["settings"]
    assert settings["models"]["lora"]["adapter"] is True
    assert settings["models"]["tiny"]["revision"].startswith("local-")
    assert settings["reward_model"]["ref"] == str(tiny_models.reward)
    assert settings["decoding"] == {"strategy": "greedy", "do_sample": False, "num_beams": 1, "max_new_tokens": 6}
    assert settings["dtype"] == "float32" and settings["batch_size"] == 2 and settings["protocol"] == "paper"
    assert settings["packages"]["torch"] and settings["packages"]["transformers"]
    assert "reward_pairs_over_512_tokens" in settings["truncation"]
    for m in metrics["models"].values():
        assert m["n"] == {"harmful": 3, "helpful": 3}
        assert set(m["ci95"]) >= {"HmR", "HpR", "CAS"}
    assert metrics["comparisons"][0]["model_a"] == "tiny" and metrics["comparisons"][0]["model_b"] == "lora"
    records = read_jsonl(out / "responses.jsonl")
    assert len(records) == 12
    assert all(r["label"] in {"harmless", "harmful", "helpful", "unhelpful"} for r in records)
    # Where the time went: every stage of this run, with the tokens it made or read.
    stages = settings["timings"]["stages"]
    assert list(stages) == ["model_load", "generation", "scoring", "metrics_and_plots"]
    assert all(s["seconds"] > 0 for s in stages.values())
    assert stages["generation"]["tokens"] == sum(r["n_new_tokens"] for r in records) > 0
    assert stages["scoring"]["tokens"] == sum(r["reward_tokens"] for r in records)
    assert stages["generation"]["items"] == stages["scoring"]["items"] == 12
    scoring = stages["scoring"]
    assert scoring["tokens_per_s"] == pytest.approx(scoring["tokens"] / scoring["seconds"], rel=1e-2)
    assert settings["timings"]["total_s"] >= sum(s["seconds"] for s in stages.values())
    assert "## Where the time went" in (out / "report.md").read_text()


def test_resume_after_a_kill_never_duplicates(tiny_models, tiny_adapter, tmp_path, capsys):
    out = tmp_path / "resume"
    args = tiny_args(tiny_models, tiny_adapter, out)
    assert cli(args, capsys)[0] == 0
    full = {(r["model"], r["prompt_id"]): r["reward"] for r in read_jsonl(out / "responses.jsonl")}
    # What a kill leaves behind: the last scored records lost, half a line torn, generations partly missing.
    lines = (out / "responses.jsonl").read_text().splitlines(keepends=True)
    (out / "responses.jsonl").write_text("".join(lines[:5]) + lines[5][:20])
    gen_lines = (out / "generations.jsonl").read_text().splitlines(keepends=True)
    (out / "generations.jsonl").write_text("".join(gen_lines[:8]))
    assert cli(args, capsys)[0] == 0
    resumed = read_jsonl(out / "responses.jsonl")
    keys = [(r["model"], r["prompt_id"]) for r in resumed]
    assert len(keys) == len(set(keys)) == len(full)
    assert {k: r["reward"] for k, r in zip(keys, resumed)} == pytest.approx(full, abs=1e-5)
    assert len(read_jsonl(out / "generations.jsonl")) == 12
    # The resumed invocation's timings count only what it did: 4 answers generated, 7 scored.
    stages = json.loads((out / "metrics.json").read_text())["settings"]["timings"]["stages"]
    assert stages["generation"]["items"] == 4 and stages["scoring"]["items"] == 7


def test_rerun_with_other_settings_is_refused(tiny_models, tiny_adapter, tmp_path, capsys):
    out = tmp_path / "strict"
    assert cli(tiny_args(tiny_models, tiny_adapter, out), capsys)[0] == 0
    before = (out / "responses.jsonl").read_text()
    code, err = cli(tiny_args(tiny_models, tiny_adapter, out) + ["--max_new_tokens", "9"], capsys)
    assert code == 2 and "other settings" in err and "--max_new_tokens was 6, now 9" in err
    code, err = cli(["--models", f"tiny={tiny_adapter}", *tiny_args(tiny_models, tiny_adapter, out)[3:]], capsys)
    assert code == 2 and "already has model 'tiny'" in err
    assert (out / "responses.jsonl").read_text() == before


def test_prompts_only_rebuilds_the_studys_prompts(hh_path, study_responses, tmp_path, capsys):
    out = tmp_path / "prompts"
    assert cli(["--prompts_only", "--dataset", str(hh_path), "--out", str(out)], capsys)[0] == 0
    prompts = read_jsonl(out / "prompts.jsonl")
    assert len(prompts) == 100 and not (out / "responses.jsonl").exists()
    published = json.loads((study_responses / "2_sft_helpful.json").read_text())
    assert [p["prompt"] for p in prompts[50:]] == [r["prompt"] for r in published]


def test_from_responses_reproduces_table1(study_responses, tmp_path, capsys):
    out = tmp_path / "paper"
    assert cli(["--from_responses", str(study_responses), "--n_bootstrap", "300", "--out", str(out)], capsys)[0] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for name, published in PAPER_TABLE1.items():
        assert [metrics["models"][name][k] for k in ("HmR", "HpR", "CAS")] == pytest.approx(
            [published[k] for k in ("HmR", "HpR", "CAS")])
    assert (out / "rates.png").exists() and "Table 1" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--limit", "0"], "--limit must be a positive number"),
        (["--models", "/nonexistent/model/folder", "--prompt_set", "demo"], "does not exist"),
        (["--prompt_set", "paper", "--dataset", "{tmp}", "--prompts_only"], "has no subset 'harmless-base'"),
        (["--prompt_set", "{tmp}/empty.jsonl", "--prompts_only"], "no prompts"),
        (["--from_responses", "{tmp}/bad.json"], "non-numeric reward"),
        (["--from_responses", "{tmp}/nan.json"], "NaN/infinite"),
        (["--from_responses", "{tmp}/missing.json"], "lacks prompt_id, response, reward"),
        (["--prompt_set", "demo", "--out", "{tmp}/file.txt/sub"], "is not writable"),
        (["--models", "org/not-cached-anywhere", "--prompt_set", "demo"], "not in the local Hugging Face cache"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "file.txt").write_text("not a folder")
    base = {"model": "m", "category": "harmful", "prompt_id": "h0", "prompt": "p", "response": "r"}
    (tmp_path / "bad.json").write_text(json.dumps([{**base, "reward": "x"}]))
    (tmp_path / "nan.json").write_text(json.dumps([{**base, "reward": float("nan")}]))
    (tmp_path / "missing.json").write_text(json.dumps([{"model": "m", "category": "harmful", "prompt": "p"}]))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    code, err = cli(argv, capsys)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


def test_bad_input_exit_code_from_the_real_script(tmp_path):
    proc = subprocess.run([*EVAL, "--limit", "-1", "--out", str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --limit must be a positive number of prompts per category, got -1"
