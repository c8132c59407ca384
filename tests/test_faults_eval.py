"""Faults injected into the evaluator on tiny models: each refusal is one line on stderr with exit status 2 and leaves
every byte of the run folder as it was; resumable damage (torn tails) is repaired and nothing is lost or doubled.

One real run is made per module (two tiny models, two prompts per category, four new tokens); every test works on a
copy of its folder.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hhalign.cli import run as cli_run
from hhalign.eval.config import EvalConfig
from hhalign.eval.run import run as evaluate
from hhalign.files import read_log

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
FAST = ["--prompt_set", "demo", "--limit", "2", "--max_new_tokens", "4", "--n_bootstrap", "50", "--batch_size", "2",
        "--judge_check", "0"]


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """The evaluator's command line in-process: (exit status, stderr)."""
    code = cli_run(evaluate, [EvalConfig], argv, prog="hhalign eval")
    return code, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under ``folder``; {} when it does not exist."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def assert_refused(argv: list[str], capsys, folder: Path, message: str) -> str:
    """Run ``argv``; assert one error line containing ``message``, exit 2, and no byte of ``folder`` changed."""
    before = snapshot(folder)
    code, err = cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert message in lines[0], lines[0]
    assert snapshot(folder) == before, "a refused run changed the folder"
    return lines[0]


@pytest.fixture(scope="module")
def base(tiny_models, tiny_adapter, tmp_path_factory):
    """A finished run of a tiny model and a LoRA adapter on it; returns (its folder, the arguments that made it)."""
    import torch

    out = tmp_path_factory.mktemp("eval-base") / "run"
    argv = ["--models", f"tiny={tiny_models.policy}", f"lora={tiny_adapter}", "--reward_model",
            str(tiny_models.reward), *FAST]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli_run(evaluate, [EvalConfig], [*argv, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out, argv


@pytest.fixture
def run_copy(base, tmp_path):
    """A private copy of the base run's folder and the arguments that resume it."""
    folder, argv = base
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    return copy, [*argv, "--out", str(copy)]


def _set(argv: list[str], flag: str, *values: str) -> list[str]:
    """``argv`` with ``flag``'s values replaced (or the flag added)."""
    if flag in argv:
        i = argv.index(flag)
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        return [*argv[:i], flag, *values, *argv[j:]]
    return [*argv, flag, *values]


# --- refused reruns: the folder keeps every byte ------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "values", "message"), [
    ("--limit", ["1"], "holds a run with other settings (--limit was 2, now 1)"),
    ("--batch_size", ["4"], "--batch_size was 2, now 4"),
    ("--max_new_tokens", ["5"], "--max_new_tokens was 4, now 5"),
    ("--prompt_set", ["{prompts}"], "--prompt_set was demo, now {prompts}"),
    ("--batch_size", ["0"], "--batch_size must be a positive number of prompts, got 0"),
    ("--limit", ["-1"], "--limit must be a positive number of prompts per category, got -1"),
    ("--reward_model", ["/no/such/reward"], "model folder '/no/such/reward' does not exist"),
    ("--models", ["tiny=/no/such/model"], "model folder '/no/such/model' does not exist"),
    ("--models", ["org/not-cached-anywhere"], "is not in the local Hugging Face cache"),
    ("--mode", ["fp32", "--dtype", "bfloat16"], "--mode fp32 computes in float32, which --dtype bfloat16 contradicts"),
    ("--device", ["gpu"], "--device 'gpu' is not a device"),
])
def test_a_refused_rerun_changes_no_byte(run_copy, tmp_path, capsys, flag, values, message):
    folder, argv = run_copy
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"category": "helpful", "prompt": "Human: Hi?"}) + "\n")
    values = [v.replace("{prompts}", str(prompts)) for v in values]
    assert_refused(_set(argv, flag, *values), capsys, folder, message.replace("{prompts}", str(prompts)))


def test_other_model_under_a_used_name_is_refused(run_copy, tiny_adapter, capsys):
    folder, argv = run_copy
    assert_refused(_set(argv, "--models", f"tiny={tiny_adapter}"), capsys, folder, "already has model 'tiny'")


def broken_copy(source: Path, dest: Path, fault: str) -> Path:
    """A copy of a tiny model folder with one fault."""
    shutil.copytree(source, dest)
    if fault == "header":
        with open(dest / "model.safetensors", "r+b") as fh:
            fh.write((10**12).to_bytes(8, "little"))
    elif fault == "cut":
        data = (dest / "model.safetensors").read_bytes()
        (dest / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif fault == "no weights":
        (dest / "model.safetensors").unlink()
    elif fault == "config":
        (dest / "config.json").write_text('{"model_type": "opt",\n  oops')
    elif fault == "base":
        cfg = json.loads((dest / "adapter_config.json").read_text())
        (dest / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "/no/such/base"}))
    return dest


@pytest.mark.parametrize(("which", "fault", "message"), [
    ("reward", "header", "cannot be loaded: model.safetensors has a bad header"),
    ("reward", "cut", "cannot be loaded: model.safetensors is cut off"),
    ("reward", "no weights", "cannot be loaded: no weights file (model.safetensors"),
    ("policy", "config", "cannot be loaded: config.json is not valid JSON (line 2)"),
    ("adapter", "base", "base model '/no/such/base' of adapter"),
])
def test_a_broken_model_folder_is_named_for_what_it_is(run_copy, tiny_models, tiny_adapter, tmp_path, capsys,
                                                       which, fault, message):
    folder, argv = run_copy
    source = {"reward": tiny_models.reward, "policy": tiny_models.policy, "adapter": tiny_adapter}[which]
    broken = broken_copy(source, tmp_path / "broken", fault)
    argv = (_set(argv, "--reward_model", str(broken)) if which == "reward"
            else _set(argv, "--models", f"tiny={tiny_models.policy}", f"other={broken}"))
    line = assert_refused(argv, capsys, folder, message)
    assert "Hugging Face cache" not in line


def test_nothing_is_written_into_a_new_folder_before_every_model_is_found(tiny_models, tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert_refused(["--models", f"tiny={tiny_models.policy}", "--reward_model", str(tmp_path / "nope"), *FAST, "--out",
             str(out)], capsys, tmp_path, "does not exist")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--from_responses", "{records}"], "holds a run generated from models"),
    (["--prompts_only", "--prompt_set", "demo", "--limit", "1"], "--limit was 2, now 1"),
    (["--demo"], "holds a run with other settings"),
])
def test_another_kind_of_run_into_the_folder_is_refused(run_copy, tmp_path, capsys, argv, message):
    folder, _ = run_copy
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"model": "m", "category": "harmful", "prompt_id": "h", "prompt": "Human: q",
                                   "response": "a", "reward": 0.5}) + "\n")
    argv = [a.replace("{records}", str(records)) for a in argv]
    assert_refused([*argv, "--out", str(folder)], capsys, folder, message)
    assert not (folder / "models").exists()  # --demo was refused before building its models there


def test_from_responses_folder_refuses_other_inputs_and_other_limits(tmp_path, capsys):
    def write(path: Path, reward: float) -> Path:
        path.write_text("".join(json.dumps({"model": m, "category": c, "prompt_id": f"{c}-{i}", "prompt": f"{c}{i}",
                                            "response": "a", "reward": reward + i}) + "\n"
                                for m in ("a", "b") for c in ("harmful", "helpful") for i in range(3)))
        return path

    one, two = write(tmp_path / "one.jsonl", -1.0), write(tmp_path / "two.jsonl", -2.0)
    out = tmp_path / "imported"
    common = ["--n_bootstrap", "50", "--out", str(out)]
    assert cli(["--from_responses", str(one), *common], capsys)[0] == 0
    assert cli(["--from_responses", str(one), *common], capsys)[0] == 0  # the same inputs: the same run, redone
    assert_refused(["--from_responses", str(two), *common], capsys, out, f"--from_responses was {one}, now {two}")
    assert_refused(["--from_responses", str(one), "--limit", "1", *common], capsys, out, "--limit was unset, now 1")
    one.write_text(one.read_text().replace('"reward": -1.0', '"reward": -1.5'))  # edited in place
    assert_refused(["--from_responses", str(one), *common], capsys, out, "the records files' contents differ")


def test_a_second_evaluator_on_the_folder_is_refused(run_copy, capsys):
    folder, argv = run_copy
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
         "lock.acquire(); print('held', flush=True); sys.stdin.read()", str(folder / ".hhalign.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert_refused(argv, capsys, folder, "is in use by another evaluator")
    finally:
        holder.communicate("", timeout=30)
    assert cli(argv, capsys)[0] == 0  # once the other one has finished, the run resumes


@pytest.mark.parametrize(("damage", "message"), [
    ("run.json", "run state"),
    ("generations.jsonl", "generations.jsonl:2 is not valid JSON"),
])
def test_corrupt_state_is_one_line(run_copy, capsys, damage, message):
    folder, argv = run_copy
    path = folder / damage
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"
    path.write_text("".join(lines))
    line = assert_refused(argv, capsys, folder, message)
    if damage == "run.json":
        assert "is not valid JSON (line 2)" in line


# --- resumable damage ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("log", ["generations.jsonl", "responses.jsonl"])
def test_a_torn_last_line_is_redone_not_counted_as_done(run_copy, capsys, log):
    folder, argv = run_copy
    full = read_log(folder / "responses.jsonl")
    path = folder / log
    path.write_bytes(path.read_bytes()[:-1])  # the last record is whole but its newline never reached the disk
    code, err = cli(argv, capsys)
    assert code == 0, err
    assert f"warning: {path}: removed a torn last line" in err
    resumed = read_log(folder / "responses.jsonl")
    keys = [(r["model"], r["prompt_id"]) for r in resumed]
    assert len(keys) == len(set(keys)) == len(full)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert all(m["n"] == {"harmful": 2, "helpful": 2} for m in metrics["models"].values())


def test_a_run_that_recorded_nothing_takes_new_settings(run_copy, capsys):
    folder, argv = run_copy
    for name in ("generations.jsonl", "responses.jsonl", "metrics.json"):
        (folder / name).unlink()  # what a run refused after its settings were recorded used to leave
    code, err = cli(_set(argv, "--limit", "1"), capsys)
    assert code == 0, err
    state = json.loads((folder / "run.json").read_text())
    assert state["options"]["limit"] == 1
    assert len(read_log(folder / "responses.jsonl")) == 2 * 2


def test_generations_without_scores_take_a_new_reward_model(run_copy, tiny_models, tmp_path, capsys):
    folder, argv = run_copy
    (folder / "responses.jsonl").unlink()  # generated, never scored (say the reward model failed to load)
    reward = tmp_path / "reward"
    shutil.copytree(tiny_models.reward, reward)
    gens = (folder / "generations.jsonl").read_bytes()
    code, err = cli(_set(argv, "--reward_model", str(reward)), capsys)
    assert code == 0, err
    assert (folder / "generations.jsonl").read_bytes() == gens  # nothing generated again
    assert json.loads((folder / "metrics.json").read_text())["settings"]["reward_model"]["ref"] == str(reward)
    assert_refused(argv, capsys, folder, f"--reward_model was {reward}, now {tiny_models.reward}")


# --- disk full, odd names, strict JSON ------------------------------------------------------------------------------


def test_disk_full_while_writing_a_figure_is_one_line_and_leaves_no_half_file(run_copy, capsys, monkeypatch):
    folder, argv = run_copy
    (folder / "rates.png").unlink()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if ".rates.png." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, err = cli(argv, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and errors == err.splitlines()[-1:] and "Traceback" not in err
    assert errors[0].startswith("error: the disk is full") and "run the same command again" in errors[0]
    assert not (folder / "rates.png").exists()
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    json.loads((folder / "metrics.json").read_text())  # what was written before is whole


def _can_mount_tmpfs(path: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_really_full_disk(tmp_path, capsys):
    """The same on a 96 KiB tmpfs (root only): every file left there is whole, no temporary file remains."""
    disk = tmp_path / "disk"
    if not _can_mount_tmpfs(disk):
        pytest.skip("mounting a tmpfs needs root")
    try:
        records = tmp_path / "records.jsonl"
        records.write_text("".join(json.dumps({"model": f"model_{m}", "category": c, "prompt_id": f"{c}-{i}",
                                               "prompt": "Human: " + "q" * 200, "response": "a" * 300,
                                               "reward": (i % 7) - 3.5}) + "\n"
                                   for m in range(3) for c in ("harmful", "helpful") for i in range(20)))
        code, err = cli(["--from_responses", str(records), "--n_bootstrap", "50", "--out", str(disk / "r")], capsys)
        assert code == 2 and err.count("\n") == 1 and "the disk is full" in err, err
        left = sorted(p.name for p in (disk / "r").iterdir())
        assert not [n for n in left if n.endswith(".tmp")], left
        for name in left:
            data = (disk / "r" / name).read_bytes()
            if name.endswith(".json"):
                json.loads(data)
            elif name.endswith(".png"):
                assert data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82"), name
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_model_names_matplotlib_reads_as_tex_are_plotted_as_written(tmp_path, capsys):
    names = ["a$b$_c", "x$\\frac$", "plain"]
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({"model": m, "category": c, "prompt_id": f"{c}-{i}", "prompt": f"{c}{i}",
                                           "response": "a", "reward": i - 1.5}) + "\n"
                               for m in names for c in ("harmful", "helpful") for i in range(3)))
    code, err = cli(["--from_responses", str(records), "--n_bootstrap", "50", "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    assert list(json.loads((tmp_path / "o" / "metrics.json").read_text())["models"]) == names
    assert (tmp_path / "o" / "rates.png").read_bytes()[:4] == b"\x89PNG"


def test_absurd_rewards_never_reach_metrics_json(tmp_path, capsys):
    records = tmp_path / "records.jsonl"
    rows = [{"model": "m", "category": "harmful", "prompt_id": str(i), "prompt": f"q{i}", "response": "a",
             "reward": 1e300 if i == 2 else -1.0} for i in range(3)]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert_refused(["--from_responses", str(records), "--out", str(tmp_path / "o")], capsys, tmp_path,
            f"{records}: line 3 has reward 1e+300, beyond +-1e+06")


def test_every_json_the_run_wrote_is_strict_and_round_trips(base):
    folder, _ = base

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    for path in sorted(folder.rglob("*.json*")):
        texts = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
        for text in texts:
            obj = json.loads(text, parse_constant=refuse)
            assert json.loads(json.dumps(obj, allow_nan=False)) == obj, path


# --- the evaluator's own logs are checked like a user's file; read-only files refuse the run before any write -------


@pytest.mark.parametrize(("log", "field", "value", "message"), [
    ("responses.jsonl", "reward", True, "has a non-numeric reward True"),
    ("responses.jsonl", "reward", "abc", "has a non-numeric reward 'abc'"),
    ("responses.jsonl", "reward", None, "has a non-numeric reward None"),
    ("responses.jsonl", "reward", {"x": 1}, "has a non-numeric reward {'x': 1}"),
    ("responses.jsonl", "reward", "-1.5", "has a non-numeric reward '-1.5'"),
    ("responses.jsonl", "reward", "nan", "has a non-numeric reward 'nan'"),
    ("responses.jsonl", "reward", float("nan"), "has reward nan; NaN/infinite rewards must be re-scored"),
    ("responses.jsonl", "reward", 1e300, "has reward 1e+300, beyond +-1e+06"),
    ("responses.jsonl", "rewards", {"reward": "1"}, "has a non-numeric rewards['reward'] '1'"),
    ("responses.jsonl", "category", "other", "has category 'other'"),
    ("generations.jsonl", "prompt_id", True, "has prompt_id True"),
    ("generations.jsonl", "response", 5, "has a non-text response 5"),
    ("generations.jsonl", "n_new_tokens", -1, "has n_new_tokens -1"),
    ("generations.jsonl", "model", None, "has a non-text model None"),
])
def test_an_edited_log_record_is_refused_naming_file_and_line(run_copy, capsys, log, field, value, message):
    folder, argv = run_copy
    path = folder / log
    lines = path.read_text().splitlines(keepends=True)
    record = json.loads(lines[2])
    record[field] = value
    lines[2] = json.dumps(record) + "\n"  # json.dumps writes NaN as the bare NaN that Python's reader accepts
    path.write_text("".join(lines))
    line = assert_refused(argv, capsys, folder, f"{path}:3 {message}")
    assert "fix or delete that line" in line


def test_a_read_only_file_refuses_the_run_before_run_json_is_rewritten(run_copy, tiny_models, capsys):
    folder, argv = run_copy
    (folder / "report.md").chmod(0o444)  # the last file the run writes: everything before it must not be touched
    argv = _set(argv, "--models", f"tiny={tiny_models.policy}", f"more={tiny_models.policy}")  # a new model
    assert_refused(argv, capsys, folder, "holds 'report.md', a read-only file the run would replace")


def test_a_read_only_folder_is_called_a_folder(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert_refused(["--prompt_set", "demo", "--prompts_only", "--out", str(folder)], capsys, folder,
                       "is a read-only folder")
    finally:
        folder.chmod(0o755)


# --- every model is found first: an unknown id is named at once and nothing is created ------------------------------


@pytest.mark.parametrize("extra", [[], ["--prompt_set", "demo", "--judge_check", "0"]])
def test_an_unknown_model_offline_is_named_first_and_creates_nothing(tmp_path, extra):
    import time

    out = tmp_path / "new" / "run"
    env = {**{k: v for k, v in os.environ.items() if k != "TRANSFORMERS_OFFLINE"}, "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf")}  # an empty cache
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "hhalign", "eval", "--models", "nobody/no-such-model", *extra,
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=120)
    took = time.monotonic() - start
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    # named before the dataset (the default prompt set would need the Hub's HH-RLHF) and before any folder
    assert lines[0].startswith("error: model 'nobody/no-such-model' is not in the local Hugging Face cache and "
                               "HF_HUB_OFFLINE=1 is set"), lines[0]
    assert not (tmp_path / "new").exists()
    assert took < 30, f"{took:.1f} s"  # the import and one cache lookup: seconds (was 28-77 s)


def test_the_offline_hint_says_what_is_set(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # offline mode on without the variable
    line = assert_refused(["--models", "nobody/no-such-model", *FAST, "--out", str(tmp_path / "o")], capsys, tmp_path,
                          "model 'nobody/no-such-model' is not in the local Hugging Face cache")
    assert "unset HF_HUB_OFFLINE" not in line and "HF_HUB_OFFLINE=" not in line, line
    assert "offline mode is on" in line


# --- a folder is the run that ran: any spelling of its path resumes it; reruns leave no debris -----------------------

DEMO_FAST = ["--demo", "--limit", "2", "--max_new_tokens", "4", "--n_bootstrap", "50", "--batch_size", "2"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A finished small demo in ``real/run`` and a symlink ``link`` to ``real``."""
    import torch

    root = tmp_path_factory.mktemp("demo-spellings")
    (root / "real").mkdir()
    (root / "link").symlink_to(root / "real")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli_run(evaluate, [EvalConfig], [*DEMO_FAST, "--out", str(root / "real" / "run")]) == 0
    finally:
        torch.set_num_threads(threads)
    return root


def test_the_demo_records_the_models_that_ran(demo_run):
    state = json.loads((demo_run / "real" / "run" / "run.json").read_text())
    models = demo_run.resolve() / "real" / "run" / "models"
    assert state["options"]["models"] == [f"tiny={models / 'policy'}", f"tiny_lora={models / 'policy-lora'}"]
    assert state["options"]["reward_model"] == [str(models / "reward")] and state["options"]["prompt_set"] == "demo"
    assert state["models"] == {"tiny": f"tiny={models / 'policy'}", "tiny_lora": f"tiny_lora={models / 'policy-lora'}"}


@pytest.mark.parametrize("spelling", ["symlink", "absolute", "relative from another folder"])
def test_a_demo_folder_resumes_under_any_spelling_of_its_path(demo_run, capsys, monkeypatch, spelling):
    # Resuming a finished demo leaves its records as they are, so every case works on the module's one folder.
    (demo_run / "elsewhere").mkdir(exist_ok=True)
    if spelling == "symlink":
        out = str(demo_run / "link" / "run")
    elif spelling == "absolute":
        out = str(demo_run / "real" / "run")
    else:
        monkeypatch.chdir(demo_run / "elsewhere")
        out = "../real/run"
    gens = (demo_run / "real" / "run" / "generations.jsonl").read_bytes()
    code, err = cli([*DEMO_FAST, "--out", out], capsys)
    assert code == 0, err
    assert (demo_run / "real" / "run" / "generations.jsonl").read_bytes() == gens  # resumed: nothing made again


def test_a_rerun_replaces_its_exports_and_removes_stale_temporaries(run_copy, capsys):
    folder, argv = run_copy
    exports = folder / "exports" / "tiny"
    for path in [*exports.glob("results_*.json"), *exports.glob("samples_*.jsonl")]:  # as an earlier run left them
        stem, _, rest = path.name.partition("_20")
        path.rename(exports / f"{stem}_2001-01-01T00-00-00{rest[rest.index('.'):]}")
    stale = [folder / ".rates.png.k1ll3d.tmp", folder / ".metrics.json.x8y.tmp", exports / ".model_outputs.json.q.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    code, err = cli(argv, capsys)
    assert code == 0, err
    created = json.loads((folder / "metrics.json").read_text())["settings"]["created"]
    for model in ("tiny", "lora"):
        names = sorted(p.name for p in (folder / "exports" / model).iterdir())
        assert len([n for n in names if n.startswith("results_")]) == 1, names
        assert len([n for n in names if n.startswith("samples_")]) == 2, names
        assert not [n for n in names if "2001-01-01" in n], names
        assert [n for n in names if n.startswith("results_")][0][8:21] == created[:13], (names, created)
    assert not [p for p in stale if p.exists()]


def test_a_killed_demo_build_is_removed_on_the_next_run(demo_run, capsys):
    models = demo_run / "real" / "run" / "models"
    (models / ".tiny-build-k1ll3d").mkdir()  # a kill before anything was built
    (models / ".tiny-build-half" / "policy").mkdir(parents=True)
    (models / ".tiny-build-half" / "policy" / "config.json").write_text("{")
    (models / ".adapter-cut").mkdir()
    code, err = cli([*DEMO_FAST, "--out", str(demo_run / "real" / "run")], capsys)
    assert code == 0, err
    assert sorted(p.name for p in models.iterdir()) == ["policy", "policy-lora", "reward"]
