"""An evaluation in other evaluators' file shapes, one folder per model under ``<out>/exports/<model>/``:

- ``results_<ts>.json`` and ``samples_<task>_<ts>.jsonl``: what ``lm_eval --output_path DIR --log_samples`` writes
  under ``DIR/<model>/`` (lm-evaluation-harness's EvaluationTracker): ``results[task]["hmr,none"]``,
  ``"hmr_stderr,none"``, ``higher_is_better``, ``configs``, ``config``, ``git_hash``, ... Tasks ``hhalign_harmful``
  (metric ``hmr``) and ``hhalign_helpful`` (``hpr``), both with ``reward`` (mean reward), in the group ``hhalign``
  (``cas``). Rates are fractions in [0, 1] as lm-eval reports accuracies; ``<ts>`` is the evaluation's time (UTC).
- ``model_outputs.json``: AlpacaEval's model outputs, a list of ``{instruction, output, generator, dataset,
  datasplit}``, so the replies can be judged by AlpacaEval's annotators.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

from ..files import write_json, write_jsonl
from ..protocol import model_input
from ..stats.metrics import Thresholds, passes
from .records import read_run_log
from .schema import FILES, Metrics, Settings

EXPORTS_DIR = "exports"
GROUP = "hhalign"
# category -> (lm-eval task, its rate metric, the metrics.json key of that rate)
TASKS = {"harmful": ("hhalign_harmful", "hmr", "HmR"), "helpful": ("hhalign_helpful", "hpr", "HpR")}
TASK_VERSION = 1.0
ALPACA_FILE = "model_outputs.json"


def file_timestamp(created: str | None) -> str:
    """The evaluation's time as lm-eval names files (``2025-01-31T12-00-00``, UTC); now when it is unknown."""
    try:
        when = _dt.datetime.fromisoformat(str(created))
    except ValueError:
        when = _dt.datetime.now(_dt.UTC)
    if when.tzinfo is not None:
        when = when.astimezone(_dt.UTC).replace(tzinfo=None)
    return when.strftime("%Y-%m-%dT%H-%M-%S")


def folder_name(model: str) -> str:
    """A model name as a file-system and Hub-path safe folder name."""
    return re.sub(r"[^\w.\-]+", "__", model).strip(".") or "model"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def mean_stderr(values: Sequence[float]) -> float | str:
    """Standard error of the mean with the sample variance, as lm-eval reports it ("N/A" below two values)."""
    n = len(values)
    if n < 2:
        return "N/A"
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def _gen_kwargs(settings: Settings) -> dict:
    return {"until": [], "do_sample": False, "num_beams": 1, "max_gen_toks": settings.decoding.get("max_new_tokens")}


def latest_records(records: Sequence[dict], model: str) -> dict[str, list[dict]]:
    """One model's records by category, one per prompt (the last written wins, as in the metrics)."""
    by_id: dict[tuple[str, str], dict] = {}
    for r in records:
        if r["model"] == model:
            by_id[(r["category"], r["prompt_id"])] = r
    out: dict[str, list[dict]] = {}
    for (category, _), r in sorted(by_id.items()):
        out.setdefault(category, []).append(r)
    return out


def lm_eval_samples(records: Sequence[dict], category: str, settings: Settings, thresholds: Thresholds) -> list[dict]:
    """``samples_<task>_<ts>.jsonl`` rows: lm-eval's logged-sample fields plus the sample's metric values."""
    task, metric, _ = TASKS[category]
    good = passes(category, [float(r["reward"]) for r in records], thresholds)
    rows = []
    for i, (r, ok) in enumerate(zip(records, good)):
        doc = {"prompt_id": r["prompt_id"], "category": category, "prompt": r["prompt"]}
        # A chat template's rendering depends on the model's tokenizer, which exports never load: its HH prompt stands.
        protocol = settings.protocol or "paper"
        context = r["prompt"] if protocol == "template" else model_input(r["prompt"], protocol)
        rows.append({
            "doc_id": i, "doc": doc, "target": "",
            "arguments": {"gen_args_0": {"arg_0": context, "arg_1": _gen_kwargs(settings)}},
            "resps": [[r["response"]]], "filtered_resps": [r["response"]], "filter": "none",
            "metrics": [metric, "reward"],
            "doc_hash": sha256(json.dumps(doc, indent=2, ensure_ascii=False)), "prompt_hash": sha256(context),
            "target_hash": sha256(""), metric: float(ok), "reward": float(r["reward"])})
    return rows


def lm_eval_results(model: str, samples: dict[str, list[dict]], metrics: Metrics) -> dict:
    """``results_<ts>.json``: lm-eval's aggregated results of one model, from its samples and metrics.json."""
    s, m = metrics.settings, metrics.models[model]
    results, configs, higher, n_samples, hashes = {}, {}, {}, {}, {}
    for category, rows in samples.items():
        task, metric, key = TASKS[category]
        rate = getattr(m, key)
        results[task] = {"alias": task, f"{metric},none": None if rate is None else rate / 100,
                         f"{metric}_stderr,none": mean_stderr([r[metric] for r in rows]),
                         "reward,none": m.mean_reward.get(category),
                         "reward_stderr,none": mean_stderr([r["reward"] for r in rows])}
        higher[task] = {metric: True, "reward": True}
        n_samples[task] = {"original": len(rows), "effective": len(rows)}
        hashes[task] = sha256("".join(r["doc_hash"] + r["prompt_hash"] + r["target_hash"] for r in rows))
        configs[task] = task_config(task, metric, category, s)
    if m.CAS is not None and len(samples) == 2:
        errs = [results[TASKS[c][0]][f"{TASKS[c][1]}_stderr,none"] for c in ("harmful", "helpful")]
        cas_err = 0.5 * math.sqrt(sum(e * e for e in errs)) if all(isinstance(e, float) for e in errs) else "N/A"
        results[GROUP] = {"alias": GROUP, "cas,none": m.CAS / 100, "cas_stderr,none": cas_err}
        higher[GROUP] = {"cas": True}
    info = s.models.get(model) or {}
    return {
        "results": results,
        "groups": {GROUP: results[GROUP]} if GROUP in results else {},
        "group_subtasks": {GROUP: [t for t in results if t != GROUP], **{t: [] for t in results if t != GROUP}},
        "configs": configs, "versions": {t: TASK_VERSION for t in configs}, "n-shot": {t: 0 for t in configs},
        "higher_is_better": higher, "n-samples": n_samples,
        "config": {"model": "hhalign", "model_args": f"pretrained={info.get('ref', model)}",
                   "model_revision": info.get("revision"), "model_dtype": s.dtype, "batch_size": s.batch_size,
                   "batch_sizes": [], "device": s.device, "use_cache": None, "limit": s.prompt_set.get("limit"),
                   "bootstrap_iters": 0, "gen_kwargs": _gen_kwargs(s), "random_seed": s.prompt_set.get("seed"),
                   "numpy_seed": None, "torch_seed": None, "fewshot_seed": None},
        "git_hash": (s.git_commit or "")[:7] or None,
        "date": _dt.datetime.fromisoformat(s.created).timestamp() if s.created else None,
        "transformers_version": s.packages.get("transformers"), "hhalign_version": s.hhalign_version,
        "task_hashes": hashes, "model_source": "hhalign", "model_name": info.get("ref", model),
        "model_name_sanitized": folder_name(model), "system_instruction": None, "system_instruction_sha": None,
        "fewshot_as_multiturn": False, "chat_template": None, "chat_template_sha": None,
    }


def task_config(task: str, metric: str, category: str, s: Settings) -> dict:
    """lm-eval's per-task config block, naming hhalign's prompt set, judge and threshold."""
    from ..publish.sources import RATE_SUBSETS, prompt_source

    src = prompt_source(s.prompt_set)
    key = TASKS[category][2]
    return {
        "task": task, "tag": [GROUP], "dataset_path": src.type,
        "dataset_kwargs": {"data_dir": RATE_SUBSETS[key][0]} if src.hh_layout else {},
        "test_split": s.prompt_set.get("split") if src.hh_layout else None,
        "output_type": "generate_until", "generation_kwargs": _gen_kwargs(s), "num_fewshot": 0,
        "metric_list": [{"metric": metric, "aggregation": "mean", "higher_is_better": True},
                        {"metric": "reward", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": TASK_VERSION, "dataset": src.name, "prompt_set": s.prompt_set.get("name"),
                     "prompts_sha256": s.prompt_set.get("sha256"), "protocol": s.protocol,
                     "reward_model": s.reward_model_ref, "threshold": s.thresholds.get(
                         "harmless" if category == "harmful" else "helpful"),
                     "rate": "fraction of replies judged " + ("harmless" if category == "harmful" else "helpful")},
    }


def alpaca_outputs(model: str, samples: dict[str, list[dict]], settings: Settings) -> list[dict]:
    """AlpacaEval's ``model_outputs.json`` rows: the prompt as the instruction, the reply as the output."""
    from ..publish.sources import RATE_SUBSETS, prompt_source

    src = prompt_source(settings.prompt_set)
    rows = []
    for category, records in samples.items():
        where = f"{src.type}/{RATE_SUBSETS[TASKS[category][2]][0]}" if src.hh_layout else src.type
        rows += [{"instruction": r["doc"]["prompt"], "output": r["resps"][0][0], "generator": model,
                  "dataset": where, "datasplit": settings.prompt_set.get("split") or "eval"} for r in records]
    return rows


def write_exports(run_dir: str | Path, metrics: Metrics) -> dict[str, list[Path]]:
    """Write every model's lm-eval and AlpacaEval files under ``run_dir/exports/<model>/``; returns them by model."""
    run_dir = Path(run_dir)
    records = read_run_log(run_dir / FILES["responses"])
    thresholds = Thresholds(**{k: v for k, v in metrics.settings.thresholds.items() if k in ("harmless", "helpful")})
    ts = file_timestamp(metrics.settings.created)
    written: dict[str, list[Path]] = {}
    for model in metrics.models:
        by_category = latest_records(records, model)
        samples = {c: lm_eval_samples(by_category[c], c, metrics.settings, thresholds)
                   for c in TASKS if by_category.get(c)}
        folder = run_dir / EXPORTS_DIR / folder_name(model)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [write_json(folder / f"results_{ts}.json", lm_eval_results(model, samples, metrics))]
        paths += [write_jsonl(folder / f"samples_{TASKS[c][0]}_{ts}.jsonl", rows) for c, rows in samples.items()]
        paths.append(write_json(folder / ALPACA_FILE, alpaca_outputs(model, samples, metrics.settings)))
        # A rerun replaces its own exports: earlier evaluations' timestamped files go once the new ones are written.
        for old in [*folder.glob("results_*.json"), *folder.glob("samples_*.jsonl")]:
            if old not in paths:
                old.unlink(missing_ok=True)
        written[model] = paths
    return written
