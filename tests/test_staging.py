"""What an upload stages (``hhalign deploy``, ``--push_results_to_hub``, ``hhalign push``): regular files only, no
hard links, no control characters in names, no file over the size cap; and ``--dry_run`` makes every check of the
real upload, so it fails where the upload would."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hhalign.cli import run as cli_run
from hhalign.errors import HHAlignError
from hhalign.serving import deploy as sd

TOKEN = "hf_" + "Stg9" * 9  # token-shaped, never a real one


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A small evaluator results folder (imported records: no model needed)."""
    from hhalign.eval.config import EvalConfig
    from hhalign.eval.run import run

    root = tmp_path_factory.mktemp("staging-results")
    records = [{"model": m, "category": c, "prompt_id": f"{c}-0", "prompt": f"Human: {c}?", "response": "ok",
                "reward": r} for m, r in (("base", -3.5), ("sft", -1.0)) for c in ("harmful", "helpful")]
    (root / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run(EvalConfig(from_responses=[str(root / "in.jsonl")], out=str(root / "eval"), n_bootstrap=50, plots=False))
    return root / "eval"


@pytest.fixture
def folder(results, tmp_path) -> Path:
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    return copy


def deploy(argv: list[str], capsys) -> tuple[int, str]:
    code = cli_run(sd.main, [sd.DeployConfig], ["--space_id", "my-org/hhalign", *argv], prog="hhalign deploy")
    return code, capsys.readouterr().err


def refused(argv: list[str], capsys, message: str) -> str:
    code, err = deploy(argv, capsys)
    errors = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and err.strip().endswith(errors[0]) and "Traceback" not in err, err
    assert message in errors[0], errors[0]
    return errors[0]


def test_a_hard_link_to_a_file_elsewhere_is_refused(folder, tmp_path, capsys):
    secret = tmp_path / "passwd"  # stands for /etc/passwd: any file this user can read
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    os.link(secret, folder / "passwd.png")
    line = refused(["--results", str(folder), "--dry_run", "--staging", str(tmp_path / "s")], capsys,
                   "passwd.png': it has 2 hard links")
    assert "cp, not ln" in line
    assert not (tmp_path / "s" / "results" / "passwd.png").exists()


def test_a_file_over_the_size_cap_is_refused_and_the_cap_is_an_option(folder, tmp_path, capsys):
    with open(folder / "huge.png", "wb") as fh:  # sparse: 60 MB long, next to nothing on disk
        fh.truncate(60 * 10**6)
    refused(["--results", str(folder), "--dry_run", "--staging", str(tmp_path / "s")], capsys,
            "huge.png': 60.0 MB is over the 50 MB cap; leave it out, or raise --max_file_mb")
    code, err = deploy(["--results", str(folder), "--dry_run", "--staging", str(tmp_path / "s"),
                        "--max_file_mb", "61"], capsys)
    assert code == 0, err
    assert (tmp_path / "s" / "results" / "huge.png").stat().st_size == 60 * 10**6
    refused(["--max_file_mb", "0", "--dry_run"], capsys, "--max_file_mb must be a positive number of MB, got 0.0")


def test_the_cap_default_is_stated_in_the_help(capsys):
    with pytest.raises(SystemExit):
        cli_run(sd.main, [sd.DeployConfig], ["--help"], prog="hhalign deploy")
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--max_file_mb" in help_text and "(default: 50.0)" in help_text


@pytest.mark.parametrize("name", ["line\nbreak.png", "bell\x07.png", "esc\x1b[31m.png"])
def test_a_name_with_a_control_character_is_refused(folder, tmp_path, capsys, name):
    (folder / name).write_bytes(b"\x89PNG")
    line = refused(["--results", str(folder), "--dry_run", "--staging", str(tmp_path / "s")], capsys,
                   "its name holds the control character")
    control = next(c for c in name if ord(c) < 32)
    assert repr(control) in line  # the offending character is named, escaped, so the line stays one line
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.png"))


def test_only_regular_files_are_staged(folder, tmp_path, capsys):  # held before this pass too: a regression test
    os.mkfifo(folder / "pipe.png")  # copying a FIFO would block forever
    code, err = deploy(["--results", str(folder), "--dry_run", "--staging", str(tmp_path / "s")], capsys)
    assert code == 0, err
    assert not (tmp_path / "s" / "results" / "pipe.png").exists()


def test_a_dry_run_fails_where_the_upload_would(folder, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    calls = []

    class Api:
        def __init__(self, token=None):
            pass

        def __getattr__(self, name):
            return lambda *a, **k: calls.append(name)

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setenv("HF_TOKEN", "hf_" + "Env0" * 9)
    with open(folder / "report.md", "a") as fh:
        fh.write(f"\nsee https://huggingface.co/x?token={TOKEN}\n")
    dry = refused(["--results", str(folder), "--dry_run", "--staging", str(tmp_path / "s")], capsys,
                  "refusing to upload: 'results/report.md' contains a Hugging Face token")
    real = refused(["--results", str(folder)], capsys, "refusing to upload: 'results/report.md'")
    assert dry == real and calls == []
    refused(["--dry_run", "--space_args", f"--token {TOKEN}"], capsys, "--space_args holds a token")


def test_a_results_dataset_dry_run_scans_for_tokens(folder, tmp_path):
    from hhalign.publish.results_hub import push_results

    path = folder / "responses.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["response"] = f"my token is {TOKEN}"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(HHAlignError, match="refusing to upload: 'base/responses_.*' contains a Hugging Face token"):
        push_results(folder, "my-org/results", dry_run=True, staging=tmp_path / "s")


def test_a_checkpoint_file_with_two_links_is_refused(tmp_path):
    from hhalign.publish.hub import stage_checkpoint

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    os.link(tmp_path / "ckpt" / "config.json", tmp_path / "elsewhere.json")
    with pytest.raises(HHAlignError, match="refusing to stage 'config.json': it has 2 hard links"):
        stage_checkpoint(ckpt, tmp_path / "staged")
