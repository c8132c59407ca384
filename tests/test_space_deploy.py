"""space/deploy.py: staging holds everything the Space runs, and the upload makes the right Hub calls (offline)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hhalign.errors import HHAlignError
from hhalign.serving import deploy as sd

ROOT = Path(__file__).resolve().parents[1]
# import name -> requirement name, where they differ; gradio comes from the Space's sdk_version
PROVIDED = {"gradio": "sdk_version", "PIL": "gradio", "pandas": "gradio", "spaces": "ZeroGPU hardware"}
DIST = {"yaml": "pyyaml"}
# Imported only inside functions the Space never calls: hhalign.data.load_hh (HH-RLHF downloads for evaluation runs),
# the training code (TRL) and the evaluator's optional GPU backend (vLLM). hhalign/__init__ re-exports those modules,
# so the walk below reaches them, but their heavy imports never run in the Space.
NOT_IN_THE_SPACE = {"datasets": "load_hh", "vllm": "generation backend='vllm'"}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    from hhalign.eval.config import EvalConfig
    from hhalign.eval.run import run

    root = tmp_path_factory.mktemp("deploy-results")
    records = [{"model": m, "category": c, "prompt_id": f"{c}-0", "prompt": f"Human: {c}?", "response": "ok",
                "reward": r} for m, r in (("base", -3.5), ("sft", -1.0)) for c in ("harmful", "helpful")]
    (root / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run(EvalConfig(from_responses=[str(root / "in.jsonl")], out=str(root / "eval"), n_bootstrap=100))
    (root / "eval" / "models").mkdir()  # a stray folder that must not be shipped
    return root / "eval"


@pytest.fixture(scope="module")
def staged(results_dir, tmp_path_factory):
    return sd.stage(tmp_path_factory.mktemp("staging") / "space", results_dir)


def _run_cli(argv: list[str]) -> int:
    from hhalign.cli import run as cli_run

    return cli_run(sd.main, [sd.DeployConfig], argv)


def test_staging_has_the_app_package_results_and_a_valid_front_matter(staged):
    import gradio

    files = set(staged.files)
    assert {"app.py", "README.md", "requirements.txt", "hhalign/__init__.py", "hhalign/serving/app.py",
            "hhalign/stats/results.py", "hhalign/assets/registry.json", "results/metrics.json",
            "results/responses.jsonl", "results/report.md", "results/rates.png"} <= files
    assert not any(f.startswith("results/models") or "__pycache__" in f for f in files)
    meta, body = sd.read_front_matter((staged.path / "README.md").read_text())
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__ == "6.31.0"
    assert str(meta["python_version"]) == "3.12" and (staged.path / meta["app_file"]).is_file()
    assert meta["models"] == sd.space_models() and "OpenAssistant/reward-model-deberta-v3-large-v2" in meta["models"]
    assert meta["datasets"] == ["Anthropic/hh-rlhf"] and meta.get("suggested_hardware")
    assert "python space/app.py --demo" in body


def _module_file(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(root: Path, path: Path) -> tuple[set[Path], set[str], set[str]]:
    """(staged hhalign files, missing hhalign modules, third-party top-level packages) that ``path`` imports anywhere,
    lazy imports included; ``root`` is the staged Space folder."""
    rel = path.relative_to(root).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    files, missing, other = set(), set(), set()

    def want(dotted: str) -> None:
        found = _module_file(root, dotted)
        if found is None:
            missing.add(dotted)
        else:
            files.add(found)

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "hhalign":
                    want(alias.name)
                else:
                    other.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                dotted = ".".join([*base, *([node.module] if node.module else [])])
            else:
                dotted = node.module or ""
            if dotted.split(".")[0] != "hhalign":
                other.add(dotted.split(".")[0])
                continue
            want(dotted)
            for alias in node.names:  # `from hhalign.x import module`
                if _module_file(root, f"{dotted}.{alias.name}") is not None:
                    want(f"{dotted}.{alias.name}")
    return files, missing, other


def test_staging_contains_everything_app_imports(staged):
    """Every hhalign module app.py reaches (lazily too) is staged, its third-party imports are in requirements.txt,
    and the staged app imports and builds from the staged folder alone."""
    todo, seen, third_party = [staged.path / "app.py"], set(), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        files, missing, other = _imports(staged.path, path)
        assert not missing, f"{path.relative_to(staged.path)} imports modules that are not staged: {missing}"
        third_party |= {n for n in other if n not in sys.stdlib_module_names}
        todo += files
    assert {staged.path / "hhalign" / "serving" / "app.py", staged.path / "hhalign" / "eval" / "run.py"} <= seen
    required = {re.split(r"[=<>\[ ]", line)[0].lower()
                for line in (staged.path / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    missing = {n for n in third_party - set(PROVIDED) if DIST.get(n, n).lower() not in required}
    assert missing == set(NOT_IN_THE_SPACE), f"requirements.txt lacks {sorted(missing - set(NOT_IN_THE_SPACE))}"

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HHALIGN_SPACE_ARGS")}
    env["HF_HUB_OFFLINE"] = "1"
    code = "import app, hhalign; print(hhalign.__file__); print(type(app.demo).__name__); print(app.APP_DIR)"
    out = subprocess.run([sys.executable, "-c", code], cwd=staged.path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    module_file, kind, app_dir = out.stdout.strip().splitlines()[-3:]
    assert Path(module_file).is_relative_to(staged.path) and kind == "Blocks" and Path(app_dir) == staged.path


def test_staging_refuses_foreign_folders_and_bad_results(tmp_path, results_dir):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(HHAlignError, match="not empty"):
        sd.stage(tmp_path, results_dir)
    with pytest.raises(HHAlignError, match="no metrics.json"):
        sd.stage(tmp_path / "new", tmp_path)
    again = sd.stage(tmp_path / "twice")
    assert sd.stage(again.path).files == again.files  # its own earlier staging is replaced


class FakeHfApi:
    """Records the calls space/deploy.py makes, and what the staged folder held at upload time."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_repo", repo_id, kwargs, self.token))

    def add_space_variable(self, repo_id, key, value):
        FakeHfApi.calls.append(("add_space_variable", repo_id, key, value))

    def upload_folder(self, **kwargs):
        files = sorted(str(p.relative_to(kwargs["folder_path"])) for p in Path(kwargs["folder_path"]).rglob("*")
                       if p.is_file())
        FakeHfApi.calls.append(("upload_folder", kwargs, files))


def test_deploy_creates_the_space_and_uploads_the_staging(monkeypatch, results_dir, capsys):
    import huggingface_hub

    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    code = _run_cli(["--space-id", "my-org/hhalign", "--results", str(results_dir),
                     "--space-args", "--models sft=my-org/opt-350m-hh-sft"])
    assert code == 0, capsys.readouterr().err
    (create, variable, upload) = FakeHfApi.calls
    assert create == ("create_repo", "my-org/hhalign", {"repo_type": "space", "space_sdk": "gradio",
                                                        "exist_ok": True, "private": False}, "hf_test_token")
    assert variable == ("add_space_variable", "my-org/hhalign", "HHALIGN_SPACE_ARGS",
                        "--models sft=my-org/opt-350m-hh-sft")
    kwargs, files = upload[1], upload[2]
    assert kwargs["repo_id"] == "my-org/hhalign" and kwargs["repo_type"] == "space"
    assert {"app.py", "README.md", "requirements.txt", "hhalign/serving/app.py", "results/metrics.json"} <= set(files)
    assert not Path(kwargs["folder_path"]).exists(), "the temporary staging folder is removed after upload"
    assert "https://huggingface.co/spaces/my-org/hhalign" in capsys.readouterr().out


def test_dry_run_stages_only(monkeypatch, tmp_path, capsys):
    import huggingface_hub

    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert _run_cli(["--space-id", "my-org/hhalign", "--dry-run", "--staging", str(tmp_path / "s")]) == 0
    assert FakeHfApi.calls == [] and (tmp_path / "s" / "app.py").is_file()
    assert "app.py" in capsys.readouterr().out


def test_missing_token_and_bad_space_id_are_one_line_errors(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert _run_cli(["--space-id", "my-org/hhalign"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no Hugging Face token") and "\n" not in err
    for bad in ("not-a-space-id", "org/../x", "a/b/c"):
        assert _run_cli(["--space-id", bad, "--dry-run"]) == 2
        err = capsys.readouterr().err.strip()
        assert "is not a valid Space id" in err and "\n" not in err
    assert _run_cli(["--dry-run"]) == 2
    assert "--space_id is required" in capsys.readouterr().err


def test_hub_refusal_is_a_one_line_error(tmp_path):
    class Refused(Exception):
        response = type("R", (), {"status_code": 403})()

    class Api(FakeHfApi):
        def create_repo(self, repo_id, **kwargs):
            raise Refused("403 Forbidden: you cannot write to my-org")

    staged = sd.stage(tmp_path / "s")
    with pytest.raises(HHAlignError, match="refused to write 'my-org/x' \\(HTTP 403\\)"):
        sd.upload(staged, "my-org/x", api=Api())


def test_front_matter_is_read_and_written_through_space_card(tmp_path):
    from huggingface_hub import SpaceCard

    text = (sd.space_files_dir() / "README.md").read_text()
    out = sd.render_readme(text, ["org/a", "org/b"], ["Anthropic/hh-rlhf", "org/results", "org/results"])
    (tmp_path / "README.md").write_text(out)
    card = SpaceCard.load(tmp_path / "README.md")
    assert card.data.models == ["org/a", "org/b"] and card.data.datasets == ["Anthropic/hh-rlhf", "org/results"]
    original, body = sd.read_front_matter(text)
    meta, new_body = sd.read_front_matter(out)
    assert list(meta) == list(original) and new_body == body  # keys keep their order, the body is untouched
    assert {k: v for k, v in meta.items() if k not in ("models", "datasets")} == \
        {k: v for k, v in original.items() if k not in ("models", "datasets")}
    with pytest.raises(HHAlignError, match="no YAML front matter"):
        sd.read_front_matter("# just a title\n")
    with pytest.raises(HHAlignError, match="broken YAML front matter"):
        sd.read_front_matter("---\nmodels: [unclosed\n---\nbody\n")


def test_deploy_with_a_hub_results_dataset_lists_it_and_tells_the_app(monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub import SpaceCard

    seen = {}

    class Api(FakeHfApi):
        def upload_folder(self, **kwargs):
            seen["readme"] = (Path(kwargs["folder_path"]) / "README.md").read_text()
            super().upload_folder(**kwargs)

    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    code = _run_cli(["--space-id", "my-org/hhalign", "--results", "hf://datasets/my-org/results",
                     "--space-args", "--memory_budget_gb 6"])
    assert code == 0, capsys.readouterr().err
    (_, variable, upload) = FakeHfApi.calls
    assert variable[2:] == ("HHALIGN_SPACE_ARGS", "--memory_budget_gb 6 --results hf://datasets/my-org/results")
    assert not any(f.startswith("results/") for f in upload[2])  # nothing shipped: the app downloads the dataset
    card = SpaceCard(seen["readme"])
    assert card.data.datasets == ["Anthropic/hh-rlhf", "my-org/results"]
    from hhalign.config import Parser
    from hhalign.serving.config import SpaceConfig

    (space,) = Parser([SpaceConfig]).parse(variable[3].split())  # the launch arguments the deployed app parses
    assert space.results == "hf://datasets/my-org/results" and space.memory_budget_gb == 6


def test_deploy_ships_a_staged_results_dataset_as_a_results_folder(results_dir, tmp_path, capsys):
    from hhalign.publish.results_hub import push_results

    dataset = tmp_path / "dataset"
    push_results(results_dir, "my-org/results", dry_run=True, staging=dataset)
    assert _run_cli(["--space-id", "my-org/hhalign", "--results", str(dataset), "--dry-run", "--staging",
                     str(tmp_path / "space")]) == 0, capsys.readouterr().err
    shipped = json.loads((tmp_path / "space" / "results" / "metrics.json").read_text())
    assert shipped == json.loads((results_dir / "metrics.json").read_text())
    assert len((tmp_path / "space" / "results" / "responses.jsonl").read_text().splitlines()) == 4
