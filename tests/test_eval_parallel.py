"""Scaling the evaluator out: data-parallel under accelerate launch (2 processes on CPU), the shard merge, and the
vLLM backend's options (vLLM is not installed here: it must fail with one line, before any work)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from hhalign.cli import run as cli_run
from hhalign.eval.config import EvalConfig
from hhalign.eval.parallel import Shard, merge_shards
from hhalign.eval.run import run
from hhalign.files import read_log, write_json, write_jsonl


def _args(tiny_models, tiny_adapter, out):
    return ["--models", f"tiny={tiny_models.policy}", f"lora={tiny_adapter}", "--reward_model",
            str(tiny_models.reward), "--prompt_set", "demo", "--limit", "3", "--max_new_tokens", "6",
            "--n_bootstrap", "200", "--judge_check", "0", "--plots", "false", "--out", str(out)]


def _rewards(out):
    records = read_log(out / "responses.jsonl")
    keys = [(r["model"], r["prompt_id"]) for r in records]
    assert len(keys) == len(set(keys)), "a (model, prompt) recorded twice"
    return {k: r["reward"] for k, r in zip(keys, records)}


def test_two_processes_under_accelerate_launch_share_one_run(tiny_models, tiny_adapter, tmp_path, capsys):
    pytest.importorskip("accelerate")
    single = tmp_path / "single"
    assert cli_run(lambda cfg: run(cfg), [EvalConfig], _args(tiny_models, tiny_adapter, single)) == 0
    out = tmp_path / "parallel"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command = [*launch, str(ROOT / "batch" / "eval.py"), *_args(tiny_models, tiny_adapter, out), "--threads", "1"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Every prompt of every model once, with the rewards of a single process; the shards are gone.
    assert _rewards(out) == pytest.approx(_rewards(single), abs=1e-5) and len(_rewards(out)) == 12
    assert len(read_log(out / "generations.jsonl")) == 12 and not (out / "shards").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["data_parallel"] == {"processes": 2}
    # The same rates and means; the bootstrap intervals may differ a little, as the records' order does.
    for name, model in json.loads((single / "metrics.json").read_text())["models"].items():
        assert {k: metrics["models"][name][k] for k in ("HmR", "HpR", "CAS", "n")} == {
            k: model[k] for k in ("HmR", "HpR", "CAS", "n")}
        assert metrics["models"][name]["mean_reward"] == pytest.approx(model["mean_reward"], abs=1e-5)
    # Run again: nothing is redone or duplicated.
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = json.loads((out / "metrics.json").read_text())["settings"]["timings"]["stages"]
    assert "generation" not in stages and "scoring" not in stages
    assert len(_rewards(out)) == 12


def test_shards_merge_into_the_run_without_duplicates(tmp_path):
    def rec(prompt_id: str, reward: float) -> dict:  # a whole responses.jsonl record: the logs are read checked
        return {"model": "a", "category": "helpful", "prompt_id": prompt_id, "prompt": f"q {prompt_id}",
                "response": "r", "reward": reward}

    out = tmp_path / "run"
    out.mkdir()
    write_json(out / "run.json", {"fingerprint": {}, "models": {}})
    write_jsonl(out / "responses.jsonl", [rec("p1", 1.0)])
    write_jsonl(out / "generations.jsonl", [])
    for index, rows in (("0", [rec("p1", 9.0),  # already in the run
                               rec("p2", 2.0)]),
                        ("1", [rec("p3", 3.0),
                               rec("p2", 2.0)])):  # a killed run's repeat
        (out / "shards" / index).mkdir(parents=True)
        write_jsonl(out / "shards" / index / "responses.jsonl", rows)
    write_json(out / "shards" / "0" / "run.json", {"judges": [{"name": "j"}], "reward_info": {"ref": "r"}})
    assert merge_shards(out) == 2
    assert {(r["prompt_id"], r["reward"]) for r in read_log(out / "responses.jsonl")} == {("p1", 1.0), ("p2", 2.0),
                                                                                           ("p3", 3.0)}
    state = json.loads((out / "run.json").read_text())
    assert state["judges"] == [{"name": "j"}] and state["reward_info"] == {"ref": "r"}
    assert not (out / "shards").exists() and merge_shards(out) == 0


@pytest.mark.parametrize("index, count, expected", [(0, 1, [0, 1, 2, 3, 4]), (0, 2, [0, 2, 4]), (1, 2, [1, 3]),
                                                    (2, 3, [2])])
def test_each_process_takes_every_nth_prompt(index, count, expected):
    assert Shard(index, count).take(list(range(5))) == expected


def test_vllm_backend_fails_in_one_line_before_any_work(tiny_models, tmp_path, capsys):
    if shutil.which("nvidia-smi") or "vllm" in sys.modules:
        pytest.skip("vLLM may be usable here")
    pytest.importorskip("transformers")
    out = tmp_path / "vllm"
    argv = ["--models", f"tiny={tiny_models.policy}", "--reward_model", str(tiny_models.reward), "--prompt_set",
            "demo", "--limit", "1", "--judge_check", "0", "--backend", "vllm", "--tensor_parallel_size", "2",
            "--out", str(out)]
    assert cli_run(lambda cfg: run(cfg), [EvalConfig], argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --backend vllm needs the vllm package and a CUDA GPU: pip install vllm on a CUDA machine, "
                   "or use --backend engine"]
    assert not out.exists() or not any(out.iterdir()), "a refused run writes nothing"


@pytest.mark.parametrize("argv, message", [
    (["--tensor_parallel_size", "2"], "--tensor_parallel_size 2 splits a model over GPUs with vLLM: add --backend"),
    (["--backend", "vllm", "--mode", "exact"], "--mode exact is the study's loop"),
    (["--backend", "vllm", "--tensor_parallel_size", "0"], "--tensor_parallel_size must be a positive number"),
])
def test_backend_options_are_checked(argv, message, tmp_path, capsys):
    assert cli_run(lambda cfg: run(cfg), [EvalConfig], [*argv, "--demo", "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
