"""hhalign.results: an evaluator results folder as the Space's tables, figures and per-prompt browser."""

from __future__ import annotations

import json

import pytest

from hhalign.errors import HHAlignError
from hhalign.eval import results as hres


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """A real results folder: the evaluator's --from_responses over a few records, without plots."""
    from hhalign.eval.config import EvalConfig
    from hhalign.eval.run import run

    root = tmp_path_factory.mktemp("results")
    rewards = {"base": [-4.0, -3.5, -1.0, -2.5], "sft": [-2.0, -2.9, 0.5, -1.5]}
    records = [{"model": m, "category": c, "prompt_id": f"{c}-{i}", "prompt": f"Human: {c} question {i}",
                "response": f"{m} answer {i}", "reward": r[j]}
               for m, r in rewards.items() for j, (c, i) in enumerate([("harmful", 0), ("harmful", 1),
                                                                       ("helpful", 0), ("helpful", 1)])]
    src = root / "records.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = root / "eval"
    run(EvalConfig(from_responses=[str(src)], out=str(out), plots=False, n_bootstrap=200))
    return out


def test_metrics_table_has_cis_and_the_published_table_as_labelled_reference(results_dir):
    res = hres.load_results(results_dir)
    table = hres.metrics_table(res)
    assert table.headers[:4] == ["model", "HmR % [95% CI]", "HpR % [95% CI]", "CAS % [95% CI]"]
    rows = {r[0]: r for r in table.rows}
    assert rows["base"][1].startswith("0.0 [") and rows["sft"][1].startswith("100.0 [")
    assert rows["base"][-1] == "measured"
    assert rows["sft_dpo (study)"][1:4] == ["44", "66", "55"] and "published" in rows["sft_dpo (study)"][-1]


def test_comparisons_and_browser_filters(results_dir):
    res = hres.load_results(results_dir)
    comp = hres.comparisons_table(res)
    assert [r[1] for r in comp.rows] == ["harmful (HmR)", "helpful (HpR)"] and comp.rows[0][0] == "sft vs base"
    assert hres.filter_choices(res) == {"model": ["all", "base", "sft"], "category": ["all", "harmful", "helpful"],
                                        "label": ["all", "harmful", "harmless", "helpful", "unhelpful"]}
    rows = hres.browse(res, model="base", category="harmful").rows
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == [("base", "harmful", "harmful", -4.0),
                                                        ("base", "harmful", "harmful", -3.5)]
    helpful = hres.browse(res, label_="helpful").rows
    assert [r[0] for r in helpful] == ["base", "sft", "sft"] and all(r[3] == "helpful" for r in helpful)
    assert len(hres.browse(res).rows) == 8


def test_figures_are_rendered_when_the_folder_has_none(results_dir, tmp_path):
    res = hres.load_results(results_dir)
    figs = hres.figures(res, tmp_path / "cache")
    assert set(figs) == {"rates", "reward_boxes"}
    assert all(p.parent == tmp_path / "cache" and p.read_bytes()[:4] == b"\x89PNG" for p in figs.values())


def test_bad_folders_are_one_line_errors_and_views_carry_them(tmp_path):
    with pytest.raises(HHAlignError, match="does not exist"):
        hres.load_results(tmp_path / "nope")
    with pytest.raises(HHAlignError, match="no metrics.json"):
        hres.load_results(tmp_path)
    (tmp_path / "metrics.json").write_text("{broken")
    with pytest.raises(HHAlignError, match="not valid JSON"):
        hres.load_results(tmp_path)
    view = hres.results_view(tmp_path)
    assert view.error and "not valid JSON" in view.summary
    assert any("(study)" in r[0] for r in view.metrics.rows)
    none = hres.results_view(None)
    assert none.error is None and "No results folder" in none.summary and len(none.metrics.rows) == 4
