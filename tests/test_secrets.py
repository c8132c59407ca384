"""Secrets never reach a file, a log line, a card, the registry or an upload; uploads are staged from allowlists.

A tiny SFT run is given a token on the command line (``--hub_token``) and another in ``HF_TOKEN``; every file it
writes, every line it logs, everything a later push uploads and the registry it updates are searched for both.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import os
import shlex
import shutil
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT, captured_log
from hhalign.cli import main as cli_main
from hhalign.errors import HHAlignError
from hhalign.secrets import REDACTED, check_no_secrets, file_has_secret, redact_argv, redact_text
from hhalign.serving import deploy as sd
from hhalign.training.config import DEMO_PAIRS_PATH

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
CLI_TOKEN = "hf_" + "Cli0" * 9
ENV_TOKEN = "hf_" + "Env1" * 9
TOKENS = (CLI_TOKEN.encode(), ENV_TOKEN.encode())
TINY_TRAIN = ["--max_steps", "2", "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1",
              "--max_length", "128", "--logging_steps", "1", "--save_steps", "1", "--max_samples", "8"]


def leaks(data: bytes) -> bool:
    return any(t in data for t in TOKENS)


def leaking_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and leaks(p.read_bytes()))


@pytest.mark.parametrize(("argv", "expected"), [
    (["sft", "--hub_token", CLI_TOKEN], ["sft", "--hub_token", REDACTED]),
    (["sft", f"--hub-token={CLI_TOKEN}"], ["sft", f"--hub-token={REDACTED}"]),
    (["deploy", "--token", "not-shaped-like-one"], ["deploy", "--token", REDACTED]),
    (["eval", "--models", f"x=org/m@{CLI_TOKEN}"], ["eval", "--models", f"x=org/m@{REDACTED}"]),
    (["eval", "--limit", "3"], ["eval", "--limit", "3"]),
])
def test_redact_argv(argv, expected):
    assert redact_argv(argv) == expected


@pytest.mark.parametrize(("text", "found"), [
    (f"token={CLI_TOKEN} end", True), ("hf_short", False), (f"api_org_{'x' * 24}", True), ("no token here", False),
])
def test_token_shapes_are_found_and_redacted(tmp_path, text, found):
    assert (redact_text(text) != text) is found
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(100) + text.encode() + os.urandom(100))
    assert file_has_secret(path) is found


def test_a_known_token_is_found_across_chunk_borders(tmp_path, monkeypatch):
    import hhalign.secrets as hs

    monkeypatch.setattr(hs, "_CHUNK", 16)
    path = tmp_path / "f.txt"
    path.write_text("x" * 13 + "plain-secret-value" + "y" * 40)
    assert file_has_secret(path, ["plain-secret-value"]) and not file_has_secret(path, ["other-secret"])


# --- a training run given two tokens, then pushed -----------------------------------------------------------------


class FakeHub:
    """huggingface_hub.HfApi's create_repo/upload_folder, recording what would be uploaded."""

    def __init__(self, monkeypatch):
        import huggingface_hub
        from huggingface_hub import constants

        self.uploads: list[dict[str, bytes]] = []
        hub = self

        def create_repo(api, repo_id, **kwargs):
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(api, *, repo_id, folder_path, ignore_patterns=(), **kwargs):
            folder = Path(folder_path)
            hub.uploads.append({str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
                                and not any(fnmatch.fnmatch(p.name, pattern) for pattern in ignore_patterns or ())})
            return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/1")

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)


@pytest.fixture(scope="module")
def trained(tiny_models, tmp_path_factory):
    """A tiny SFT run made with --hub_token and HF_TOKEN set (no --push_to_hub), its stderr and its log lines."""
    import torch

    out = tmp_path_factory.mktemp("secret-run") / "sft"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # The command sets up its own log handler on stderr: what it logs is what reaches stderr.
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(io.StringIO()) as err:
            mp.setenv("HF_TOKEN", ENV_TOKEN)
            code = cli_main(["sft", "--config", "paper/sft", "--model_name_or_path", str(tiny_models.policy),
                             "--dataset", str(DEMO_PAIRS_PATH), "--output_dir", str(out), "--hub_token", CLI_TOKEN,
                             *TINY_TRAIN])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return SimpleNamespace(out=out, log=err.getvalue().splitlines())


def test_a_training_run_writes_and_logs_no_token(trained):
    assert (trained.out / "checkpoint-2" / "training_args.bin").exists()  # TRL pickles its arguments there
    assert leaking_files(trained.out) == []
    assert any(line.startswith("sft: saved to") for line in trained.log)  # the log was captured
    assert not any(leaks(line.encode()) for line in trained.log)
    record = json.loads((trained.out / "hhalign_train.json").read_text())
    words = shlex.split(record["command"])
    assert words[:2] == ["hhalign", "sft"] and words[words.index("--hub_token") + 1] == REDACTED
    assert "hub_token" not in record["recipe"] and "hub_token" not in record["fingerprint"]
    assert f"--hub_token '{REDACTED}'" in (trained.out / "README.md").read_text()


def test_push_uploads_model_files_only_and_the_registry_holds_no_token(trained, tmp_path, monkeypatch, capsys):
    from hhalign.publish import registry

    checkpoint = tmp_path / "sft"
    shutil.copytree(trained.out, checkpoint)
    # What a user may leave in the folder: none of it is uploaded, and the symlink's target is never read.
    secret = tmp_path / "secret.txt"
    secret.write_text(f"HF_TOKEN={ENV_TOKEN}\n")
    (checkpoint / ".env").write_text(f"HF_TOKEN={ENV_TOKEN}\n")
    (checkpoint / ".hf_token").write_text(ENV_TOKEN)
    (checkpoint / ".venv" / "lib").mkdir(parents=True)
    (checkpoint / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (checkpoint / "notes.txt").write_text("my notes\n")
    (checkpoint / "merges.txt").symlink_to(secret)  # an allowlisted name, but a link
    # A record written by an older hhalign, with the token in its command: the card and the registry redact it.
    record = json.loads((checkpoint / "hhalign_train.json").read_text())
    record["command"] = record["command"].replace(REDACTED, CLI_TOKEN)
    (checkpoint / "hhalign_train.json").write_text(json.dumps(record))
    hub = FakeHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    (tmp_path / "reg").mkdir()
    monkeypatch.setattr(registry, "REGISTRY_PATH", tmp_path / "reg" / "registry.json")
    monkeypatch.setattr(registry, "MODELS_MD", tmp_path / "reg" / "models.md")
    shutil.copy(ROOT / "hhalign" / "assets" / "registry.json", tmp_path / "reg" / "registry.json")

    code = cli_main(["push", "--checkpoint", str(checkpoint), "--hub_model_id", "me/tiny-sft", "--registry_name",
                     "sft_test"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[0].startswith("warning: not uploading merges.txt: it is a symbolic link")
    assert err[1:] == [err[-1]] and not leaks("".join(err).encode())
    assert err[-1].startswith("error: refusing to upload: 'hhalign_train.json' contains a Hugging Face token")
    assert hub.uploads == []
    (checkpoint / "hhalign_train.json").write_text(json.dumps({**record, "command": record["command"].replace(
        CLI_TOKEN, REDACTED)}))
    code = cli_main(["push", "--checkpoint", str(checkpoint), "--hub_model_id", "me/tiny-sft", "--registry_name",
                     "sft_test"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 0, lines
    assert not leaks("".join(lines).encode())
    (files,) = hub.uploads
    assert set(files) == {"README.md", "config.json", "generation_config.json", "model.safetensors",
                          "tokenizer.json", "tokenizer_config.json", "hhalign_train.json", "losses.csv",
                          "losses.json", "loss.png"}
    assert not any(leaks(data) for data in files.values())
    assert any("warning: not uploading merges.txt: it is a symbolic link" in line for line in lines)
    for name in ("registry.json", "models.md"):
        text = (tmp_path / "reg" / name).read_text()
        assert "sft_test" in text and not leaks(text.encode())


def test_an_old_record_with_a_token_is_redacted_on_the_card_and_in_the_registry(tmp_path):
    from hhalign.publish.card import build_card
    from hhalign.publish.registry import update_registry

    (tmp_path / "hhalign_train.json").write_text(json.dumps({
        "status": "finished", "kind": "sft", "command": f"hhalign sft --hub_token {CLI_TOKEN}", "model": {}}))
    assert CLI_TOKEN not in str(build_card(tmp_path))
    registry, md = tmp_path / "registry.json", tmp_path / "models.md"
    registry.write_text(json.dumps({"models": []}))
    update_registry("x", role="sft", ref="me/x", metrics=None, recipe=None, command=f"sft --x {CLI_TOKEN}",
                    registry_path=registry, models_md=md)
    assert leaking_files(tmp_path) == ["hhalign_train.json"]


# --- the Space: staged from an allowlist, scanned before upload ---------------------------------------------------


def test_package_patterns_ship_what_pyproject_ships():
    """The Space's allowlist covers the package data pyproject.toml installs inside hhalign/ (besides modules)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = set(meta.get("package-dir", {}))  # packages installed from folders outside hhalign/

    def inside(pkg: str) -> bool:
        parts = pkg.split(".")
        return not any(".".join(parts[:i]) in mapped for i in range(2, len(parts) + 1))

    wanted = {f"{pkg.removeprefix('hhalign.').replace('.', '/')}/{pattern}"
              for pkg, patterns in meta["package-data"].items() if inside(pkg) for pattern in patterns}
    assert wanted == set(sd.PACKAGE_PATTERNS) - {"*.py"}


@pytest.fixture
def planted_package(tmp_path):
    """A copy of the hhalign package with what a checkout may also hold: dotfiles, a venv, links, stray files."""
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "hhalign", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    secret = tmp_path / "secret.py"
    secret.write_text(f"TOKEN = {ENV_TOKEN!r}\n")
    (pkg / ".env").write_text(f"HF_TOKEN={ENV_TOKEN}\n")
    (pkg / ".hf_token").write_text(ENV_TOKEN)
    (pkg / "assets" / ".hidden.json").write_text("{}")
    (pkg / ".git").mkdir()
    (pkg / ".git" / "config.py").write_text("x = 1\n")
    for venv in (pkg / ".venv", pkg / "venv"):
        (venv / "lib").mkdir(parents=True)
        (venv / "pyvenv.cfg").write_text("home = /usr\n")
        (venv / "lib" / "site.py").write_text("x = 1\n")
    (pkg / "eval" / "leak.py").symlink_to(secret)
    (pkg / "linked").symlink_to(tmp_path, target_is_directory=True)
    (pkg / "notes.md").write_text("not package data\n")
    (pkg / "eval" / "stray.bin").write_bytes(b"\0")
    return pkg


def test_space_staging_ships_only_the_packages_real_files(planted_package, tmp_path):
    with captured_log() as lines:
        staged = sd.stage(tmp_path / "space", package_dir=planted_package)
    shipped = {f.removeprefix("hhalign/") for f in staged.files if f.startswith("hhalign/")}
    real = {str(p.relative_to(ROOT / "hhalign")) for p in (ROOT / "hhalign").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
    assert shipped == real
    assert leaking_files(staged.path) == []
    assert not any(p.is_symlink() for p in staged.path.rglob("*"))
    assert any("not staging" in line and "leak.py: it is a symbolic link" in line for line in lines)
    assert any("linked: it is a symbolic link to a folder" in line for line in lines)


def test_space_upload_refuses_a_staged_token_naming_the_file(tmp_path, monkeypatch):
    from hhalign.eval.config import EvalConfig
    from hhalign.eval.run import run

    records = tmp_path / "in.jsonl"
    records.write_text("".join(json.dumps({"model": "m", "category": c, "prompt_id": c, "prompt": "Human: q?",
                                           "response": "a", "reward": -1.0}) + "\n" for c in ("harmful", "helpful")))
    run(EvalConfig(from_responses=[str(records)], out=str(tmp_path / "eval"), plots=False, n_bootstrap=20))
    report = tmp_path / "eval" / "report.md"
    report.write_text(report.read_text() + f"\nuploaded with {ENV_TOKEN}\n")
    staged = sd.stage(tmp_path / "space", tmp_path / "eval")

    class Api:
        calls: list = []

        def __getattr__(self, name):
            return lambda *a, **k: self.calls.append(name)

    with pytest.raises(HHAlignError, match=r"refusing to upload: 'results/report.md' contains a Hugging Face token"):
        sd.upload(staged, "me/space", api=Api())
    assert Api.calls == []
    monkeypatch.setenv("HF_TOKEN", "a-plain-secret-value")  # a token of any shape, once known, is searched for
    report.write_text(report.read_text().replace(ENV_TOKEN, "a-plain-secret-value"))
    staged = sd.stage(tmp_path / "space", tmp_path / "eval")
    with pytest.raises(HHAlignError, match="'results/report.md' contains"):
        sd.upload(staged, "me/space", api=Api())
    report.write_text("clean\n")
    staged = sd.stage(tmp_path / "space", tmp_path / "eval")
    check_no_secrets([staged.path / f for f in staged.files], staged.path, ["a-plain-secret-value"])
    sd.upload(staged, "me/space", api=Api())
    assert "upload_folder" in Api.calls


def test_a_token_in_a_log_message_or_an_error_line_is_not_shown(capsys):
    import logging

    from hhalign.cli import run
    from hhalign.testing.tiny import TinyConfig

    def main(cfg: TinyConfig) -> None:
        logging.getLogger("hhalign.somewhere").warning(f"a message quoting {CLI_TOKEN}")
        raise HHAlignError(f"--hub_model_id {ENV_TOKEN!r} is not a Hub repo id")

    assert run(main, [TinyConfig], [], prog="hhalign tiny") == 2
    err = capsys.readouterr().err
    assert err == (f"warning: a message quoting {REDACTED}\nerror: --hub_model_id '{REDACTED}' is not a Hub repo "
                   "id\n")


def test_space_args_with_a_token_are_not_made_a_public_variable(tmp_path):
    staged = sd.stage(tmp_path / "space")

    class Api:
        calls: list = []

        def __getattr__(self, name):
            return lambda *a, **k: self.calls.append(name)

    with pytest.raises(HHAlignError, match="--space_args holds a token, and Space variables are public"):
        sd.upload(staged, "me/space", space_args=f"--models a=b --token {CLI_TOKEN}", api=Api())
    assert Api.calls == []


def test_every_hub_upload_scans_its_staged_files(tmp_path):
    """Model repos and results datasets both go through publish.staging.upload_repo: a token in any file stops it."""
    from hhalign.publish.staging import upload_repo

    class Api:
        calls: list = []

        def __getattr__(self, name):
            return lambda *a, **k: self.calls.append(name)

    folder = tmp_path / "repo"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "responses.jsonl").write_text(json.dumps({"response": f"my token is {CLI_TOKEN}"}) + "\n")
    with pytest.raises(HHAlignError, match=r"refusing to upload: 'data/responses.jsonl' contains a Hugging Face"):
        upload_repo(folder, "me/results", "dataset", None, False, "m", api=Api())
    assert Api.calls == []
