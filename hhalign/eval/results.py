"""An evaluator results folder (``metrics.json`` + ``responses.jsonl``) as tables and figures for browsing."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HHAlignError
from ..fmt import num, signed_ci, with_ci
from ..refs import DEFAULT_REWARD_MODEL
from .judge_check import PUBLISHED
from .metrics import PAPER_TABLE1, Thresholds, label
from .schema import Metrics, Settings, load_metrics

logger = logging.getLogger(__name__)

ALL = "all"
PAPER_SOURCE = "published: Pant 2025, Table 1 (reference figures, not measured here)"
METRICS_HEADERS = ["model", "HmR % [95% CI]", "HpR % [95% CI]", "CAS % [95% CI]", "mean reward harmful [95% CI]",
                   "mean reward helpful [95% CI]", "n (harmful+helpful)", "source"]
COMPARISON_HEADERS = ["B vs A", "category", "rate diff (pts)", "McNemar p", "mean reward diff [95% CI]",
                      "bootstrap p", "significant (p<0.05)", "after Holm"]
JUDGE_HEADERS = ["judge", "reward model", "subset", "accuracy % [95% CI]", "ties", "pairs", "thresholds"]
AGREEMENT_HEADERS = ["judges", "replies", "n", "Cohen's kappa [95% CI]", "same label %", "Spearman rho [95% CI]"]
BROWSE_HEADERS = ["model", "category", "prompt_id", "label", "reward", "prompt", "response"]


@dataclass
class Table:
    """Column names and rows, as ``gr.Dataframe`` and Markdown both take them."""

    headers: list[str]
    rows: list[list] = field(default_factory=list)

    def as_value(self) -> dict:
        return {"headers": self.headers, "data": self.rows}

    def as_markdown(self) -> str:
        def cell(value: object) -> str:
            return str(value).replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows])


@dataclass
class Results:
    """A loaded results folder."""

    folder: Path
    metrics: Metrics
    records: list[dict]

    @property
    def settings(self) -> Settings:
        return self.metrics.settings

    @property
    def models(self) -> list[str]:
        return list(self.metrics.models)

    @property
    def demo(self) -> bool:
        return self.metrics.demo

    @property
    def thresholds(self) -> Thresholds:
        t = self.settings.thresholds
        default = Thresholds()
        return Thresholds(t.get("harmless", default.harmless), t.get("helpful", default.helpful))


def resolve_results_source(source: str | Path) -> Path:
    """The results folder for ``source``: an evaluator ``--out`` folder as it is; a results dataset
    (``hf://datasets/ORG/NAME``, or its folder, downloaded or staged by ``--push_results_to_hub``) as its latest
    evaluation (see :mod:`hhalign.publish.results_hub`)."""
    from ..publish.results_hub import results_folder

    return results_folder(source)


def load_results(folder: str | Path) -> Results:
    """Read ``metrics.json`` and ``responses.jsonl`` written by ``batch/eval.py`` (or a results dataset)."""
    from ..files import read_log as read_jsonl

    path = resolve_results_source(folder)
    hint = "run python batch/eval.py --out DIR (or --demo) and point the Space at DIR with --results DIR"
    if not path.is_dir():
        raise HHAlignError(f"results folder {str(folder)!r} does not exist: {hint}")
    metrics_path = path / "metrics.json"
    if not metrics_path.is_file():
        raise HHAlignError(f"results folder {str(folder)!r} has no metrics.json: {hint}")
    metrics = load_metrics(metrics_path)
    records = read_jsonl(path / "responses.jsonl")
    result = Results(path, metrics, records)
    for rec in records:
        if "label" not in rec and "reward" in rec:
            rec["label"] = label(rec["category"], float(rec["reward"]), result.thresholds)
    return result


def metrics_table(results: Results, paper: bool = True) -> Table:
    """One row per measured model (rates with 95% CIs), then the study's Table 1 rows, labelled as published."""
    table = Table(list(METRICS_HEADERS))
    source = "measured (demo: tiny untrained models)" if results.demo else "measured"
    for name, m in results.metrics.models.items():
        ci, mean, n = m.ci95, m.mean_reward, m.n
        table.rows.append([name, with_ci(m.HmR, ci.get("HmR")), with_ci(m.HpR, ci.get("HpR")),
                           with_ci(m.CAS, ci.get("CAS")),
                           with_ci(mean.get("harmful"), ci.get("mean_reward_harmful"), 2),
                           with_ci(mean.get("helpful"), ci.get("mean_reward_helpful"), 2),
                           f"{n.get('harmful', 0)}+{n.get('helpful', 0)}", source])
    if paper:
        for name, m in PAPER_TABLE1.items():
            table.rows.append([f"{name} (study)", f"{m['HmR']:.0f}", f"{m['HpR']:.0f}", f"{m['CAS']:.0f}",
                               f"{m['mean_reward']['harmful']:.2f}", f"{m['mean_reward']['helpful']:.2f}", "50+50",
                               PAPER_SOURCE])
    return table


def comparisons_table(results: Results) -> Table:
    """Paired differences between models: McNemar on labels, paired bootstrap on mean reward."""
    table = Table(list(COMPARISON_HEADERS))
    for c in results.metrics.comparisons:
        for category, metric in (("harmful", "HmR"), ("helpful", "HpR")):
            if category not in c:
                continue
            r, m = c[category][metric], c[category]["mean_reward"]
            significant = [k for k, v in ((metric, r), ("mean reward", m)) if v.get("significant")]
            holm = [k for k, v in ((metric, r), ("mean reward", m)) if v.get("significant_holm")]
            table.rows.append([f"{c['model_b']} vs {c['model_a']}", f"{category} ({metric})", f"{r['diff']:+.1f}",
                               f"{r['p_value']:.3g}", signed_ci(m["diff"], m["ci95"]),
                               f"{m['p_value']:.3g}", ", ".join(significant) or "no",
                               ", ".join(holm) or ("no" if "p_holm" in r else "n/a")])
    return table


def _thresholds_text(judge: dict) -> str:
    t = judge.get("thresholds") or {}
    if "harmless" not in t:
        return ""
    return f"harmless >= {t['harmless']:.3g}, helpful > {t['helpful']:.3g} ({t.get('source', '?')})"


def judge_table(results: Results | Metrics) -> Table:
    """Each judge's accuracy on held-out HH-RLHF pairs (chosen scored above rejected), per subset and overall."""
    metrics = getattr(results, "metrics", results)
    table = Table(list(JUDGE_HEADERS))
    for name, check in metrics.judge.items():
        parts = [*check.get("subsets", {}).items(), ("all", check.get("overall") or {})]
        for subset, acc in parts:
            table.rows.append([name, check.get("model"), subset, with_ci(acc.get("accuracy"), acc.get("ci95")),
                               acc.get("ties"), acc.get("n"), _thresholds_text(metrics.judges.get(name, {}))])
    return table


def agreement_table(results: Results | Metrics) -> Table:
    """How far every two judges agree: kappa on their labels, Spearman's rho on their rewards."""
    metrics = getattr(results, "metrics", results)
    table = Table(list(AGREEMENT_HEADERS))
    for entry in metrics.agreement:
        for group, block in [("all", entry), *entry.get("categories", {}).items()]:
            kappa, rho = block["kappa"], block["spearman"]
            table.rows.append([f"{entry['judge_a']} ~ {entry['judge_b']}", group, block["n"],
                               with_ci(kappa["value"], kappa["ci95"], 2), num(kappa["agreement"]),
                               with_ci(rho["value"], rho["ci95"], 2)])
    return table


def judge_markdown(results: Results | Metrics) -> str:
    """The Results tab's judge paragraph: each judge's check, or why there is none."""
    metrics = getattr(results, "metrics", results)
    if not metrics.judge:
        return ("**Judge check:** not run for these results, so the reward model's own accuracy on HH-RLHF is not "
                f"measured here (the OpenAssistant model's card reports {PUBLISHED[DEFAULT_REWARD_MODEL]}).")
    text = ("**Judge check:** how often each reward model scores HH-RLHF's chosen reply above the rejected one on "
            "held-out test pairs (95% Wilson intervals; ties left out). Near 50% its labels are coin flips.\n\n"
            + judge_table(metrics).as_markdown())
    if metrics.agreement:
        text += "\n\n**Agreement between judges:**\n\n" + agreement_table(metrics).as_markdown()
    return text + ("\n\n" + votes_sentence(metrics.human_votes) if metrics.human_votes else "")


def votes_sentence(votes: dict) -> str:
    """The reward model's agreement with the Space's blind votes, in one sentence."""
    return (f"**Human votes:** the reward model preferred the reply people voted for in "
            f"{with_ci(votes.get('agreement'), votes.get('ci95'))}% of {votes.get('n')} decisive votes "
            f"({votes.get('excluded')} tie/both-bad votes left out, {votes.get('judge_ties')} reward ties, "
            f"{votes.get('unscored')} votes without rewards; {votes.get('n_votes')} votes in {votes.get('file')}).")


def filter_choices(results: Results) -> dict[str, list[str]]:
    """Values for the per-prompt browser's filters, each list starting with ``all``."""
    models = list(dict.fromkeys([*results.models, *(r["model"] for r in results.records)]))
    categories = sorted({r["category"] for r in results.records})
    labels = sorted({r.get("label", "") for r in results.records} - {""})
    return {"model": [ALL, *models], "category": [ALL, *categories], "label": [ALL, *labels]}


def browse(results: Results, model: str = ALL, category: str = ALL, label_: str = ALL, limit: int = 500) -> Table:
    """Per-prompt records matching the filters (``all`` or None matches everything), in file order."""
    table = Table(list(BROWSE_HEADERS))
    for r in results.records:
        if model not in (None, ALL) and r["model"] != model:
            continue
        if category not in (None, ALL) and r["category"] != category:
            continue
        if label_ not in (None, ALL) and r.get("label") != label_:
            continue
        table.rows.append([r["model"], r["category"], r.get("prompt_id", ""), r.get("label", ""),
                           round(float(r["reward"]), 3), r["prompt"], r["response"]])
        if len(table.rows) >= limit:
            break
    return table


def figures(results: Results, cache_dir: str | Path | None = None) -> dict[str, Path]:
    """Rate bars with 95% error bars and reward box plots: the folder's PNGs, or rendered into ``cache_dir``."""
    from .plots import PLOT_FILES, plot_rates, plot_reward_boxes

    wanted = ("rates", "reward_boxes")
    found = {k: results.folder / PLOT_FILES[k] for k in wanted}
    if all(p.is_file() for p in found.values()):
        return found
    out = Path(cache_dir) if cache_dir else results.folder
    out.mkdir(parents=True, exist_ok=True)
    rewards: dict = {}
    for r in results.records:
        rewards.setdefault(r["model"], {"harmful": [], "helpful": []})[r["category"]].append(float(r["reward"]))
    title = "Demo (tiny untrained models: meaningless scores)" if results.demo else ""
    return {"rates": plot_rates(results.metrics.models, out / PLOT_FILES["rates"], title),
            "reward_boxes": plot_reward_boxes(rewards, out / PLOT_FILES["reward_boxes"])}


def summary_markdown(results: Results) -> str:
    """Where the numbers come from, in a few lines."""
    s = results.settings
    prompt_set, decoding = s.prompt_set, s.decoding
    lines = [f"Results folder: `{results.folder}` ({len(results.records)} scored responses)."]
    if results.demo:
        lines.append("**Demo run: tiny untrained models, so the scores are meaningless; it shows the pipeline only.**")
    if s.source == "from_responses":
        lines.append("Computed from existing response records (no generation).")
    elif prompt_set:
        lines.append(f"Prompt set `{prompt_set.get('name')}` ({prompt_set.get('n')} prompts), protocol "
                     f"`{s.protocol}`, {decoding.get('strategy', 'greedy')} decoding up to "
                     f"{decoding.get('max_new_tokens')} new tokens, reward model `{s.reward_model_ref}`.")
    t = results.thresholds
    lines.append(f"HmR: share of replies to harmful prompts with reward >= {t.harmless:g}; HpR: share of replies to "
                 f"helpful prompts with reward > {t.helpful:g}; CAS = (HmR + HpR) / 2. Brackets: 95% bootstrap "
                 "intervals. Rows marked *(study)* are the published Table 1, shown for reference.")
    if results.metrics.significance_note:
        lines.append(results.metrics.significance_note)
    return "\n\n".join(lines)


def ensure_demo_results(folder: str | Path) -> Path:
    """The evaluator's offline demo in ``folder`` (tiny models under ``folder/models``), run once and then reused."""
    path = Path(folder).expanduser()
    if (path / "metrics.json").is_file() and (path / "models" / "policy-lora").is_dir():
        return path
    from .config import EvalConfig
    from .run import run

    logger.info(f"building the demo models and results in {path} (once; about a minute on a laptop)")
    run(EvalConfig(demo=True, out=str(path)))
    return path


@dataclass
class ResultsView:
    """Everything the Results tab shows; ``error`` is set instead of raising, so a bad folder is a message."""

    summary: str
    metrics: Table
    comparisons: Table
    figures: dict[str, Path]
    choices: dict[str, list[str]]
    rows: Table
    error: str | None = None
    judge: str = ""


NO_RESULTS = ("No results folder is attached. Run `python batch/eval.py --out DIR` and launch with `--results DIR`; "
              "the study's published Table 1 is shown for reference.")


def results_view(folder: str | Path | None, cache_dir: str | Path | None = None) -> ResultsView:
    """The Results tab's content for ``folder`` (None: only the published reference rows)."""
    empty_choices = {"model": [ALL], "category": [ALL], "label": [ALL]}
    reference = metrics_table(Results(Path("."), Metrics({}, Settings()), []))
    if folder is None:
        return ResultsView(NO_RESULTS, reference, Table(list(COMPARISON_HEADERS)), {}, empty_choices,
                           Table(list(BROWSE_HEADERS)))
    try:
        res = load_results(folder)
        return ResultsView(summary_markdown(res), metrics_table(res), comparisons_table(res), figures(res, cache_dir),
                           filter_choices(res), browse(res), judge=judge_markdown(res))
    except HHAlignError as exc:
        return ResultsView(f"**Results could not be loaded:** {exc}", reference, Table(list(COMPARISON_HEADERS)), {},
                           empty_choices, Table(list(BROWSE_HEADERS)), error=str(exc))
