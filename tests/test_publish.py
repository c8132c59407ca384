"""Publishing end to end on tiny models, offline: the evaluator's results dataset and interop exports, push.py and
the pipeline with --dry_run --staging, and real pushes against a recording HfApi (every call, repo type and file).
Whatever is written must parse with huggingface_hub's own card classes and load with ``datasets``.
"""

from __future__ import annotations

import json
import shutil
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace

import pytest

from hhalign.cli import main as cli_main
from hhalign.errors import HHAlignError
from hhalign.eval import exports
from hhalign.eval.schema import load_metrics
from hhalign.publish import results_hub

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
EXISTING = ["README.md", ".gitattributes", "metrics/metrics_2020-01-01T00-00-00.json",
            "tiny/responses_2020-01-01T00-00-00.jsonl"]


class RecordingApi:
    """Stands in for ``huggingface_hub.HfApi``: records each call with its repo type and the files uploaded."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        RecordingApi.calls.append(("create_repo", repo_id, kwargs, self.token))
        return SimpleNamespace(repo_id=repo_id)

    def list_repo_files(self, repo_id, **kwargs):
        RecordingApi.calls.append(("list_repo_files", repo_id, kwargs, self.token))
        return list(EXISTING)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        ignored = kwargs.get("ignore_patterns") or []  # as HfApi applies them: these files never leave the machine
        files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
                 if p.is_file() and not any(fnmatch(str(p.relative_to(folder)), pat) for pat in ignored)}
        RecordingApi.calls.append(("upload_folder", repo_id, {**kwargs, "files": files}, self.token))
        return SimpleNamespace(commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/abc")


class NoHub:
    def __init__(self, *args, **kwargs):
        raise AssertionError("a dry run must not reach the Hub")


@pytest.fixture
def no_hub(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", NoHub)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", NoHub)


@pytest.fixture
def recording_hub(monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    RecordingApi.calls = []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    return RecordingApi.calls


@pytest.fixture(scope="module")
def demo_eval(tmp_path_factory):
    """``hhalign eval --demo --output_path R --push_results_to_hub me/results --dry_run --staging D``."""
    import huggingface_hub

    root = tmp_path_factory.mktemp("demo-eval")
    real = huggingface_hub.HfApi
    huggingface_hub.HfApi = NoHub
    try:
        code = cli_main(["eval", "--demo", "--output_path", str(root / "R"), "--push_results_to_hub", "me/results",
                         "--dry_run", "--staging", str(root / "D"), "--threads", "1", "--n_bootstrap", "200"])
    finally:
        huggingface_hub.HfApi = real
    assert code == 0
    metrics = load_metrics(root / "R" / "metrics.json")
    return SimpleNamespace(run=root / "R", staged=root / "D", metrics=metrics,
                           ts=exports.file_timestamp(metrics.settings.created))


def test_eval_dry_run_writes_the_dataset_repo_tree(demo_eval):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    ts, staged, models = demo_eval.ts, demo_eval.staged, list(demo_eval.metrics.models)
    assert models == ["tiny", "tiny_lora"]
    expected = {"README.md", f"metrics/metrics_{ts}.json"} | {
        f"{m}/{name}" for m in models for name in (f"responses_{ts}.jsonl", f"results_{ts}.json", "model_outputs.json",
                                                   f"samples_hhalign_harmful_{ts}.jsonl",
                                                   f"samples_hhalign_helpful_{ts}.jsonl")}
    assert set(results_hub.staged_files(staged)) == expected
    assert not (demo_eval.run / results_hub.PUSH_RECORD).exists()  # nothing was pushed
    card = DatasetCard.load(staged / "README.md")
    split = results_hub.split_name(ts)
    assert {c["config_name"]: [f["split"] for f in c["data_files"]] for c in card.data.configs} == {
        "tiny": [split, "latest"], "tiny_lora": [split, "latest"], "metrics": [split, "latest"]}
    for needed in ("--push_results_to_hub me/results", demo_eval.metrics.settings.prompt_set["sha256"],
                   demo_eval.metrics.settings.reward_model_ref, "local:demo_prompts.jsonl", "Judge check"):
        assert needed in card.text or needed in str(card.data), needed
    on_disk = [json.loads(line) for line in (demo_eval.run / "responses.jsonl").read_text().splitlines()]
    for model in models:
        rows = load_dataset(str(staged), model, split="latest")
        mine = [r for r in on_disk if r["model"] == model]
        assert sorted(zip(rows["prompt_id"], rows["reward"])) == sorted((r["prompt_id"], r["reward"]) for r in mine)
    metrics_row = load_dataset(str(staged), "metrics", split=split)[0]
    assert metrics_row["models"]["tiny"]["CAS"] == demo_eval.metrics.models["tiny"].CAS


def test_lm_eval_and_alpaca_exports_load_as_plain_json(demo_eval):
    ts, run = demo_eval.ts, demo_eval.run
    for model, m in demo_eval.metrics.models.items():
        folder = run / exports.EXPORTS_DIR / model
        results = json.loads((folder / f"results_{ts}.json").read_text())
        assert {"results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config", "git_hash",
                "date", "task_hashes", "model_name"} <= set(results)
        for category, (task, metric, key) in exports.TASKS.items():
            samples = [json.loads(line) for line in (folder / f"samples_{task}_{ts}.jsonl").read_text().splitlines()]
            values = [s[metric] for s in samples]
            assert results["results"][task][f"{metric},none"] == getattr(m, key) / 100 == sum(values) / len(values)
            assert results["results"][task][f"{metric}_stderr,none"] == pytest.approx(exports.mean_stderr(values))
            assert results["higher_is_better"][task] == {metric: True, "reward": True}
            assert results["n-samples"][task]["effective"] == len(samples) == m.n[category]
            assert {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "doc_hash", "prompt_hash",
                    "target_hash", "metrics"} <= set(samples[0])
            assert results["configs"][task]["output_type"] == "generate_until"
        assert results["results"]["hhalign"]["cas,none"] == m.CAS / 100
        outputs = json.loads((folder / exports.ALPACA_FILE).read_text())
        assert len(outputs) == sum(m.n.values())
        assert all(set(o) == {"instruction", "output", "generator", "dataset", "datasplit"} and o["generator"] == model
                   for o in outputs)


def test_the_space_reads_a_staged_results_dataset(demo_eval, tmp_path):
    from hhalign.serving.config import SpaceConfig, build_backend
    from hhalign.stats import results as hres

    backend = build_backend(SpaceConfig(results=str(demo_eval.staged)))
    assert load_metrics(backend.results / "metrics.json").to_dict() == demo_eval.metrics.to_dict()
    view = hres.results_view(str(demo_eval.staged), tmp_path / "cache")
    assert view.error is None and [r[0] for r in view.rates.rows[:2]] == ["tiny", "tiny_lora"]
    assert len(view.rows.rows) == sum(sum(m.n.values()) for m in demo_eval.metrics.models.values())


def test_pushing_results_records_every_call_keeps_earlier_splits_and_reads_back(demo_eval, recording_hub, tmp_path,
                                                                                monkeypatch):
    import huggingface_hub
    from huggingface_hub import DatasetCard

    run = tmp_path / "run"
    shutil.copytree(demo_eval.run, run, ignore=shutil.ignore_patterns("models"))
    record = results_hub.push_results(run, "me/results")
    assert [(c[0], c[1]) for c in recording_hub] == [("create_repo", "me/results"), ("list_repo_files", "me/results"),
                                                     ("upload_folder", "me/results")]
    create, listing, upload = (c[2] for c in recording_hub)
    assert create == {"repo_type": "dataset", "private": False, "exist_ok": True}
    assert listing == {"repo_type": "dataset"} and upload["repo_type"] == "dataset"
    assert {c[3] for c in recording_hub} == {"hf_from_env"}
    files = upload["files"]
    assert set(files) == set(results_hub.staged_files(demo_eval.staged))
    card_path = tmp_path / "README.md"
    card_path.write_bytes(files["README.md"])
    configs = {c["config_name"]: c["data_files"] for c in DatasetCard.load(card_path).data.configs}
    split = results_hub.split_name(demo_eval.ts)
    assert [f["split"] for f in configs["tiny"]] == ["2020_01_01T00_00_00", split, "latest"]
    assert configs["tiny"][-1]["path"] == [f"tiny/responses_{demo_eval.ts}.jsonl"]  # latest = the newest
    assert record["url"] == "https://huggingface.co/datasets/me/results" and record["split"] == split
    assert results_hub.linked_results(run / "metrics.json") == record["url"]
    assert json.loads((run / results_hub.PUSH_RECORD).read_text())["metrics_sha256"] == record["metrics_sha256"]

    def snapshot_download(repo_id, repo_type, revision=None, allow_patterns=None):
        assert (repo_id, repo_type, revision) == ("me/results", "dataset", "v1")
        out = tmp_path / "snapshot"
        for name, blob in files.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(blob)
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    folder = results_hub.results_folder("hf://datasets/me/results@v1", tmp_path / "read")
    assert load_metrics(folder / "metrics.json").to_dict() == demo_eval.metrics.to_dict()


def test_a_changed_metrics_file_is_not_linked_to_an_old_push(demo_eval, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text((demo_eval.run / "metrics.json").read_text())
    (run / results_hub.PUSH_RECORD).write_text(json.dumps({"url": "https://x", "metrics_sha256": "0" * 64}))
    assert results_hub.linked_results(run / "metrics.json") is None
    assert results_hub.linked_results(run / "metrics.json", "me/other").endswith("/datasets/me/other")


@pytest.mark.parametrize(("argv", "message"), [
    (["--push_results_to_hub", "me/results"], "HF_HUB_OFFLINE=1 set: .*--dry_run"),
    (["--push_results_to_hub", "not-an-id", "--dry_run", "--staging", "S"], "is not a Hub repo id"),
    (["--dry_run", "--staging", "S"], "add --push_results_to_hub ORG/NAME"),
    (["--push_results_to_hub", "me/results", "--dry_run"], "add --staging"),
    (["--dataset_hub_id", "Anthropic/hh-rlhf"], "is not a local folder"),
])
def test_publishing_options_are_checked_before_any_work(argv, message, tmp_path, capsys):
    assert cli_main(["eval", "--demo", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error:")
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


# --- checkpoints: push.py and the pipeline ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The demo pipeline's checkpoints, and an evaluation of its SFT model on an HH-RLHF-layout folder declared a
    copy of Anthropic/hh-rlhf (a few rows written here, so the test runs without the shared data)."""
    import torch

    from hhalign.training import pipeline as tpipe

    root = tmp_path_factory.mktemp("trained")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tpipe.run_pipeline(tpipe.PipelineConfig(demo=True, output_dir=str(root / "out")))
    finally:
        torch.set_num_threads(threads)
    hh = root / "hh"
    for subset, words in (("harmless-base", "kill"), ("helpful-base", "bake")):
        (hh / subset).mkdir(parents=True)
        rows = [{"chosen": f"\n\nHuman: How do I {words} thing {i}?\n\nAssistant: Like this.",
                 "rejected": f"\n\nHuman: How do I {words} thing {i}?\n\nAssistant: No."} for i in range(4)]
        (hh / subset / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli_main(["eval", "--models", f"sft={root / 'out' / 'sft'}", "--reward_model",
                     str(root / "out" / "tiny" / "reward"), "--dataset", str(hh), "--dataset_hub_id",
                     "Anthropic/hh-rlhf", "--prompt_set", "sample", "--n_per_category", "2", "--out",
                     str(root / "eval"), "--n_bootstrap", "200", "--threads", "1"]) == 0
    return SimpleNamespace(out=root / "out", eval=root / "eval")


def test_push_dry_run_writes_a_card_model_card_load_reads(trained, no_hub, tmp_path, capsys):
    from huggingface_hub import ModelCard

    from hhalign.publish.registry import REGISTRY_PATH

    registry_before = REGISTRY_PATH.read_text()
    assert cli_main(["push", "--checkpoint", str(trained.out / "sft"), "--hub_model_id", "me/tiny-sft",
                     "--base_model_hub_id", "me/tiny-base", "--metrics_json", str(trained.eval / "metrics.json"),
                     "--results_repo", "me/results", "--registry_name", "sft_tiny", "--dry_run", "--staging",
                     str(tmp_path / "S")]) == 0
    listed = capsys.readouterr().out.split()
    assert "README.md" in listed and "model.safetensors" in listed
    card = ModelCard.load(tmp_path / "S" / "README.md")
    assert card.data.license == "other" and card.data.base_model == "me/tiny-base"
    measured = load_metrics(trained.eval / "metrics.json").models["sft"]
    results = {r.metric_type: r for r in card.data.eval_results}
    assert {r.dataset_type for r in results.values()} == {"Anthropic/hh-rlhf"}
    assert results["hmr"].dataset_config == "harmless-base" and results["hmr"].dataset_split == "test"
    assert "local copy" in results["hmr"].dataset_name and results["hmr"].dataset_revision is None
    assert results["hpr"].metric_value == round(measured.HpR, 2)
    assert results["cas"].source_url == "https://huggingface.co/datasets/me/results"
    assert not (trained.out / "sft" / "hhalign_push.json").exists() and REGISTRY_PATH.read_text() == registry_before


def test_pipeline_dry_run_stages_every_repo_it_would_push(trained, no_hub, tmp_path):
    from huggingface_hub import DatasetCard, ModelCard

    from hhalign.training import pipeline as tpipe

    registry = tmp_path / "registry.json"
    shutil.copy(Path(tpipe.__file__).parents[1] / "assets" / "registry.json", registry)
    before = registry.read_text()
    cfg = tpipe.PipelineConfig(demo=True, output_dir=str(trained.out), push_to_hub=True, hub_model_prefix="me/tiny",
                               base_model_hub_id="me/tiny-base", push_results_to_hub="me/tiny-results", dry_run=True,
                               staging=str(tmp_path / "S"), registry_path=str(registry),
                               models_md=str(tmp_path / "models.md"))
    result = tpipe.run_pipeline(cfg)
    assert result["pushed"] == {"sft": "me/tiny-sft", "dpo": "me/tiny-dpo", "sft_dpo": "me/tiny-sft-dpo"}
    for repo in result["pushed"].values():
        card = ModelCard.load(tmp_path / "S" / "models" / repo / "README.md")
        assert {r.source_url for r in card.data.eval_results} == {"https://huggingface.co/datasets/me/tiny-results"}
    assert ModelCard.load(tmp_path / "S" / "models" / "me/tiny-sft-dpo" / "README.md").data.base_model == "me/tiny-sft"
    dataset = DatasetCard.load(tmp_path / "S" / "datasets" / "me" / "tiny-results" / "README.md")
    assert {c["config_name"] for c in dataset.data.configs} == {"base", "sft", "dpo", "sft_dpo", "metrics"}
    assert registry.read_text() == before and not (tmp_path / "models.md").exists()


def test_pipeline_refuses_a_dry_run_without_staging_and_demo_pushes(tmp_path):
    from hhalign.training import pipeline as tpipe

    with pytest.raises(HHAlignError, match="add --staging"):
        tpipe.run_pipeline(tpipe.PipelineConfig(demo=True, output_dir=str(tmp_path), push_results_to_hub="me/r",
                                                dry_run=True))
    with pytest.raises(HHAlignError, match="cannot be pushed"):
        tpipe.run_pipeline(tpipe.PipelineConfig(demo=True, output_dir=str(tmp_path), push_results_to_hub="me/r"))
    assert not any(tmp_path.iterdir())
