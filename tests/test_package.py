"""The package as users meet it: a light import, the public API, models.md in step with the registry."""

import subprocess
import sys
from pathlib import Path

import hhalign
from conftest import ROOT
from hhalign.publish.registry import load_registry, render_models_md


def test_import_is_light():
    code = ("import sys, hhalign; heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'gradio', 'datasets') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


def test_every_export_resolves_without_loading_trainers_or_the_ui():
    """Every name in hhalign.__all__ loads from the module it is listed under; none of them pulls in TRL or gradio."""
    code = ("import importlib, sys, hhalign; "
            "same = all(getattr(hhalign, n) is getattr(importlib.import_module('hhalign.' + hhalign._EXPORTS[n]), "
            "hhalign._RENAMED.get(n, n)) for n in hhalign.__all__); "
            "print(len(hhalign.__all__), same, 'trl' in sys.modules, 'gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == [str(len(hhalign.__all__)), "True", "False", "False"]


def test_models_md_is_rendered_from_the_registry():
    assert (ROOT / "models.md").read_text() == render_models_md(load_registry()), (
        "models.md is stale: run python -m hhalign.publish.registry")


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text().split("```")[1]
    assert "batch/eval.py --demo" in head and "pip install -r requirements.txt" in head
    assert "python -m pytest" in head
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci and "chromium" in ci


SCRIPTS = sorted(str(p.relative_to(ROOT)) for d in ("batch", "training", "space") for p in (ROOT / d).glob("*.py")
                 if p.name != "__init__.py")


def test_every_script_prints_its_help():
    # Started together: each pays the torch/transformers import once, in parallel.
    procs = {s: subprocess.Popen([sys.executable, s, "--help"], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for s in SCRIPTS}
    assert "batch/eval.py" in procs and len(procs) >= 3
    for script, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{script}: {err[-500:]}"
        assert "usage" in out.lower() and "python " in out, script


def test_every_subcommand_prints_its_help():
    from hhalign.cli import COMMANDS

    hhalign = Path(sys.executable).with_name("hhalign")
    procs = {name: subprocess.Popen([str(hhalign), name, "--help"], cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name in COMMANDS}
    assert set(procs) == {"eval", "bench", "sft", "dpo", "pipeline", "push", "space", "deploy", "tiny"}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"hhalign {name}: {err[-500:]}"
        assert out.startswith(f"usage: hhalign {name}") and f"hhalign {name} " in out and "--config" in out, name

