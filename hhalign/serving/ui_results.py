"""The Results tab: the evaluator's numbers as cards (readable on a phone) and as sortable, searchable tables with CSV
downloads, an explainer of HmR/HpR/CAS and the intervals, the plots, and a per-prompt browser whose filters survive a
page reload (kept in the visitor's browser)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from ..fmt import with_ci
from ..stats import results as hres
from .render import clean_text
from .ui_common import Dropdown, ui_error

if TYPE_CHECKING:
    from .config import Backend

FIGURE_CAPTIONS = {
    "rates": "HmR, HpR and CAS per model; error bars are 95% bootstrap intervals.",
    "reward_boxes": "Reward distributions per model and prompt category; the dashed line is the study's threshold.",
}
FILTERS = ("model", "category", "label")
FILTERS_KEY = "hhalign-results-filters"
RESTORE_FILTERS = f"""() => {{
  let saved = {{}};
  try {{ saved = JSON.parse(localStorage.getItem("{FILTERS_KEY}") || "{{}}"); }} catch (e) {{}}
  return [saved.model || "all", saved.category || "all", saved.label || "all"];
}}"""
SAVE_FILTERS = f"""(model, category, label) => {{
  localStorage.setItem("{FILTERS_KEY}", JSON.stringify({{model, category, label}}));
}}"""
NO_MATCH = "No responses match these filters: choose *all* in one of them."


def rate_cards(table: hres.Table) -> str:
    """One card per row of the rates table: HmR, HpR, CAS with their intervals (published rows have none)."""
    cards = []
    for row in table.rows:
        name, cells, source = row[0], row[1:10], row[-1]
        items = "".join(f"<dt>{metric}</dt><dd>{with_ci(v, None if lo is None else (lo, hi))}%</dd>"
                        for metric, (v, lo, hi) in zip(hres.RATES, (cells[0:3], cells[3:6], cells[6:9])))
        cards.append(f'<div class="hh-card"><div class="hh-card-head">{html.escape(str(name))}</div><dl>{items}</dl>'
                     f'<div class="hh-explainer">{html.escape(source)}</div></div>')
    return f'<div class="hh-cards">{"".join(cards)}</div>'


def csv_link(table: hres.Table, filename: str, text: str = "Download CSV") -> str:
    """A download link carrying the table itself (no file on the server, no server path in the page)."""
    data = base64.b64encode(table.to_csv().encode("utf-8")).decode("ascii")
    return (f'<div class="hh-csv"><a download="{html.escape(filename)}" href="data:text/csv;charset=utf-8;base64,'
            f'{data}">{html.escape(text)} ({len(table.rows)} rows)</a></div>')


def figures_html(figures: dict[str, Path]) -> str:
    """The plots inline, each with its caption below it (nothing drawn over the plot's own title)."""
    parts = []
    for key, caption in FIGURE_CAPTIONS.items():
        if key in figures:
            data = base64.b64encode(Path(figures[key]).read_bytes()).decode("ascii")
            parts.append(f'<figure class="hh-figure"><img alt="{html.escape(caption)}" src="data:image/png;base64,'
                         f'{data}"><figcaption>{html.escape(caption)}</figcaption></figure>')
    return "".join(parts) or "<em>No plots: no results folder is attached.</em>"


def shown(value: hres.Table) -> dict:
    """The table for the page: model text without control characters or replacement glyphs (the CSV keeps it)."""
    return {"headers": value.headers, "data": [[clean_text(v) if isinstance(v, str) else v for v in row]
                                               for row in value.rows]}


# Pixel widths (not percentages, which shrink on a phone until a header wraps a letter per line); the table scrolls
# sideways inside its box instead.
WIDTHS = {"model": 140, "source": 170, "prompt": 280, "response": 340, "category": 110, "prompt_id": 130,
          "label": 100, "model B": 110, "vs model A": 110, "significant (p<0.05)": 150}


def widths(value: hres.Table) -> list[str]:
    return [f"{WIDTHS.get(h, 80)}px" for h in value.headers]


def table(value: hres.Table, label: str, elem_id: str, **kwargs) -> gr.Dataframe:
    return gr.Dataframe(shown(value), datatype=value.datatypes, label=label, interactive=False, wrap=True,
                        show_search="search", elem_id=elem_id, buttons=["fullscreen", "copy"], **kwargs)


def results_tab(backend: Backend, demo: gr.Blocks) -> None:
    cache = Path(backend.config.cache_dir) / "figures"

    def load() -> hres.ResultsView:
        view = hres.results_view(backend.results, cache)
        if view.error:
            gr.Warning("The results folder could not be loaded; see the server log.")
        return view

    def rows_out(view_rows: hres.Table):
        empty = not view_rows.rows
        return (shown(view_rows), gr.update(value=NO_MATCH if empty else "", visible=empty),
                csv_link(view_rows, "hhalign-responses.csv"))

    def filtered(model, category, label):
        if backend.results is None:
            return rows_out(hres.Table(list(hres.BROWSE_HEADERS)))
        try:
            return rows_out(hres.browse(hres.load_results(backend.results), model, category, label))
        except Exception as exc:  # noqa: BLE001
            raise ui_error(exc) from None

    def chosen(value, choices):
        return value if value in choices else hres.ALL

    def refresh(model=hres.ALL, category=hres.ALL, label=hres.ALL):
        """Everything the tab shows, re-read from the results folder; the filters keep their values."""
        view = load()
        picks = [chosen(v, view.choices[k]) for k, v in (("model", model), ("category", category), ("label", label))]
        dropdowns = [gr.Dropdown(choices=view.choices[k], value=v) for k, v in zip(FILTERS, picks)]
        return (view.summary, rate_cards(view.rates), shown(view.rates), csv_link(view.rates, "hhalign-rates.csv"),
                shown(view.rewards), figures_html(view.figures), shown(view.comparisons), view.judge, *dropdowns,
                *filtered(*picks))

    def browse(model: str = "all", category: str = "all", label: str = "all") -> dict:
        """Per-prompt records of the results folder matching the filters ("all" matches everything)."""
        if backend.results is None:
            raise gr.Error("no results folder is attached: launch with --results DIR", print_exception=False)
        return filtered(model, category, label)[0]

    # Built with the page, so a visitor sees the numbers at once and the filters know their choices.
    view = hres.results_view(backend.results, cache)
    summary = gr.Markdown(view.summary, elem_id="results-summary")
    with gr.Row():
        with gr.Column(scale=3, min_width=300):
            cards = gr.HTML(rate_cards(view.rates), elem_id="results-cards")
        with gr.Column(scale=2, min_width=260):
            gr.Markdown(hres.explainer_markdown(view.thresholds, view.prompts), elem_id="results-explainer")
    gr.Markdown("### Rates\nIn %, each with its 95% interval (low, high). Search the table, sort it with a "
                "column's ⋮ menu, download it as CSV.")
    rates = table(view.rates, "Rates (%)", "metrics-table", pinned_columns=1, column_widths=widths(view.rates))
    rates_csv = gr.HTML(csv_link(view.rates, "hhalign-rates.csv"), elem_id="rates-csv")
    gr.Markdown("### Mean reward\nThe reward model's raw logit per prompt category, with its 95% interval.")
    rewards = table(view.rewards, "Mean reward", "rewards-table", pinned_columns=1,
                    column_widths=widths(view.rewards))
    gr.Markdown("### Plots")
    figures = gr.HTML(figures_html(view.figures), elem_id="results-figures")
    gr.Markdown("### Paired differences\nMcNemar's exact test on the labels, a paired bootstrap on the mean reward.")
    comparisons = table(view.comparisons, "Paired tests", "comparisons-table", column_widths=widths(view.comparisons))
    gr.Markdown("### Judge check\nThe verdicts above are the reward model's: how often it prefers HH-RLHF's chosen "
                "reply.")
    judge = gr.Markdown(view.judge, elem_id="results-judge")
    gr.Markdown("### Per-prompt browser\nEvery scored reply; click a cell to read it whole.")
    with gr.Row():
        f_model = Dropdown(view.choices["model"], value=hres.ALL, label="Model", elem_id="filter-model")
        f_category = Dropdown(view.choices["category"], value=hres.ALL, label="Category", elem_id="filter-category")
        f_label = Dropdown(view.choices["label"], value=hres.ALL, label="Label", elem_id="filter-label")
    no_match = gr.Markdown(NO_MATCH, visible=False, elem_id="browse-empty")
    rows = table(view.rows, "Responses", "browse-table", max_chars=160, max_height=600,
                 column_widths=widths(view.rows))
    rows_csv = gr.HTML(csv_link(view.rows, "hhalign-responses.csv"), elem_id="browse-csv")
    reload_btn = gr.Button("Reload results")

    filters = [f_model, f_category, f_label]
    everything = [summary, cards, rates, rates_csv, rewards, figures, comparisons, judge, *filters, rows, no_match,
                  rows_csv]
    reload_btn.click(refresh, inputs=filters, outputs=everything, api_name="results", concurrency_limit=4)
    # The filters live in the visitor's browser (plain localStorage: nothing secret), so a reload keeps them.
    demo.load(refresh, inputs=filters, outputs=everything, js=RESTORE_FILTERS, api_visibility="private",
              concurrency_limit=4)
    for f in filters:
        f.input(filtered, inputs=filters, outputs=[rows, no_match, rows_csv], api_visibility="private",
                concurrency_limit=4).then(None, inputs=filters, js=SAVE_FILTERS, api_visibility="private")
    gr.api(browse, api_name="browse", concurrency_limit=4)
