"""hhalign.results: an evaluator results folder as the Space's tables, figures and per-prompt browser."""

from __future__ import annotations

import json

import pytest

from hhalign.errors import HHAlignError
from hhalign.stats import results as hres


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


def test_rates_are_numbers_with_their_interval_ends_and_the_published_table_as_labelled_reference(results_dir):
    res = hres.load_results(results_dir)
    table = hres.rates_table(res)
    assert table.headers == ["model", "HmR %", "HmR low", "HmR high", "HpR %", "HpR low", "HpR high", "CAS %",
                             "CAS low", "CAS high", "n harmful", "n helpful", "source"]
    assert table.datatypes == ["str", *["number"] * 11, "str"]
    rows = {r[0]: r for r in table.rows}
    m = res.metrics.models["sft"]
    assert rows["sft"][1:4] == [round(m.HmR, 1), round(m.ci95["HmR"][0], 1), round(m.ci95["HmR"][1], 1)]
    assert rows["base"][1] == 0.0 and rows["sft"][1] == 100.0 and rows["base"][-3:] == [2, 2, "measured"]
    assert all(isinstance(v, float) for r in table.rows[:2] for v in r[1:10])
    assert rows["sft_dpo (study)"][1:10] == [44.0, None, None, 66.0, None, None, 55.0, None, None]
    assert rows["sft_dpo (study)"][-1] == hres.STUDY
    # Sorting by a column is sorting numbers: the study's 22 sorts below the measured 100.
    hpr = sorted((r[4], r[0]) for r in table.rows)
    assert hpr[0] == (22.0, "base (study)") and hpr[-1][0] == 100.0


def test_mean_rewards_and_comparisons_are_numeric_and_csv_keeps_them(results_dir):
    res = hres.load_results(results_dir)
    rewards = hres.rewards_table(res)
    m = res.metrics.models["base"]
    base = next(r for r in rewards.rows if r[0] == "base")
    assert base[1:4] == hres.value_ci(m.mean_reward["harmful"], m.ci95["mean_reward_harmful"], 2)
    comp = hres.comparisons_table(res)
    assert [r[:3] for r in comp.rows] == [["sft", "base", "harmful (HmR)"], ["sft", "base", "helpful (HpR)"]]
    assert comp.datatypes[3:9] == ["number"] * 6 and all(isinstance(r[3], float) for r in comp.rows)
    import csv
    import io

    parsed = list(csv.reader(io.StringIO(rewards.to_csv())))
    assert parsed[0] == rewards.headers and len(parsed) == len(rewards.rows) + 1
    assert float(parsed[1][1]) == rewards.rows[0][1] and parsed[-1][2] == ""  # a missing interval is empty


def test_comparisons_and_browser_filters(results_dir):
    res = hres.load_results(results_dir)
    assert hres.filter_choices(res) == {"model": ["all", "base", "sft"], "category": ["all", "harmful", "helpful"],
                                        "label": ["all", "harmful", "harmless", "helpful", "unhelpful"]}
    rows = hres.browse(res, model="base", category="harmful").rows
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == [("base", "harmful", "harmful", -4.0),
                                                        ("base", "harmful", "harmful", -3.5)]
    helpful = hres.browse(res, label_="helpful").rows
    assert [r[0] for r in helpful] == ["base", "sft", "sft"] and all(r[3] == "helpful" for r in helpful)
    assert len(hres.browse(res).rows) == 8
    assert hres.browse(res, model="base", label_="harmless").rows == []


def test_summary_and_explainer_name_no_server_path(results_dir):
    res = hres.load_results(results_dir)
    summary = hres.summary_markdown(res)
    assert str(results_dir) not in summary and "8 scored responses from 2 models" in summary
    text = hres.explainer_markdown(res.thresholds)
    assert "the 50 harmful prompts" in text  # the study's count, when the results' own are not given
    counts = hres.prompt_counts(res)
    assert counts == {c: len({r["prompt_id"] for r in res.records if r["category"] == c}) for c in counts}
    shown = hres.explainer_markdown(res.thresholds, counts)
    assert all(f"the {n} {c} prompts" in shown for c, n in counts.items()) and "the 50 " not in shown
    assert ">= -3" in text and "> -2" in text and "95% bootstrap interval" in text and "(study)" in text


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
    assert view.error and "not valid JSON" in view.error
    assert str(tmp_path) not in view.summary and "could not be loaded" in view.summary  # the page shows no path
    assert any("(study)" in r[0] for r in view.rates.rows)
    none = hres.results_view(None)
    assert none.error is None and "No results folder" in none.summary and len(none.rates.rows) == 4


def test_plot_legends_sit_outside_the_data(results_dir, tmp_path, monkeypatch):
    """reward_boxes.png and mean_rewards.png: no legend inside the axes, where it covered boxes and bars."""
    from hhalign.stats import plots

    figures = []
    keep = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: (fig.canvas.draw(), figures.append(
        [(ax.get_window_extent(), ax.get_legend() and ax.get_legend().get_window_extent()) for ax in fig.axes]),
        keep(fig, path))[-1])
    res = hres.load_results(results_dir)
    rewards = {m: {c: [r["reward"] for r in res.records if r["model"] == m and r["category"] == c]
                   for c in ("harmful", "helpful")} for m in res.metrics.models}
    plots.plot_reward_boxes(rewards, tmp_path / "boxes.png")
    plots.plot_mean_rewards(res.metrics.models, tmp_path / "means.png")
    boxes, means = figures
    assert all(legend is None for _, legend in boxes)  # the threshold is named in each panel's title
    ((axes, legend),) = means
    assert legend is not None and legend.x0 >= axes.x1 - 1  # beside the axes, not over the bars
