"""An evaluation as a Hub dataset repository (``hhalign eval --push_results_to_hub ORG/NAME``), and back.

The layout follows the per-model details datasets lm-evaluation-harness and the Open LLM Leaderboard publish: a folder
per model, files named by the evaluation's time, one config per model whose splits are the evaluations (named by their
time) plus ``latest``::

    README.md                          dataset card; its YAML ``configs`` map each config and split to files
    metrics/metrics_<ts>.json          the evaluator's metrics.json (config ``metrics``)
    <model>/responses_<ts>.jsonl       the model's scored responses (config ``<model>``)
    <model>/results_<ts>.json          lm-eval-shaped results (hhalign.eval.exports)
    <model>/samples_<task>_<ts>.jsonl  lm-eval-shaped samples
    <model>/model_outputs.json         AlpacaEval-shaped outputs (of the latest push)

Pushing adds files, so earlier evaluations stay as splits. :func:`results_folder` turns such a dataset (downloaded with
``hf://datasets/ORG/NAME``, or a local or staged copy) back into a results folder the Space's Results tab reads.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from ..errors import HHAlignError
from ..eval.exports import ALPACA_FILE, EXPORTS_DIR, file_timestamp, folder_name, write_exports
from ..eval.records import log_check, read_run_log
from ..eval.schema import FILES, METRIC_KEYS, Metrics, load_metrics
from ..files import ASSETS_DIR, read_json, read_log, write_json, write_jsonl, write_text
from ..fmt import with_ci
from .sources import prompt_source
from .staging import (
    check_push,
    check_repo_id,
    check_staged,
    copy_for_upload,
    hub_error,
    prepare_staging,
    staged_files,
    upload_repo,
)

logger = logging.getLogger(__name__)

HF_PREFIX = "hf://datasets/"
METRICS_DIR = "metrics"
METRICS_CONFIG = "metrics"
PUSH_RECORD = "hub_results.json"  # written into the run folder after a push: where its metrics.json went
TEMPLATE = ASSETS_DIR / "results_card.md.j2"
_RESPONSES = re.compile(r"^(?P<config>[^/]+)/responses_(?P<ts>[^/_]+)\.jsonl$")
_METRICS = re.compile(rf"^{METRICS_DIR}/metrics_(?P<ts>[^/_]+)\.json$")


def dataset_url(repo_id: str) -> str:
    return f"https://huggingface.co/datasets/{repo_id}"


def split_name(ts: str) -> str:
    """A file timestamp as a ``datasets`` split name (letters, digits, underscores and dots only)."""
    return re.sub(r"[^\w.]", "_", ts)


def dataset_configs(files: list[str]) -> list[dict]:
    """The card's ``configs``: per model and for the metrics, one split per evaluation time and ``latest``."""
    found: dict[str, dict[str, str]] = {}
    for name in files:
        match = _RESPONSES.match(name) or _METRICS.match(name)
        if match:
            config = match.groupdict().get("config") or METRICS_CONFIG
            found.setdefault(config, {})[match["ts"]] = name
    configs = []
    for config in sorted(found, key=lambda c: (c == METRICS_CONFIG, c)):
        by_ts = found[config]
        splits = [{"split": split_name(ts), "path": [by_ts[ts]]} for ts in sorted(by_ts)]
        configs.append({"config_name": config, "data_files": [*splits, {"split": "latest",
                                                                        "path": [by_ts[max(by_ts)]]}]})
    return configs


def stage_results(run_dir: str | Path, repo_id: str, staging: str | Path, existing: list[str] | tuple = (),
                  command: str | None = None) -> Path:
    """Write the dataset repo of the evaluation in ``run_dir`` into ``staging``; ``existing``: files already pushed."""
    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir / FILES["metrics"])
    if METRICS_CONFIG in {folder_name(m) for m in metrics.models}:
        raise HHAlignError(f"a model named {METRICS_CONFIG!r} would collide with the dataset's metrics config: "
                           "rename it (--models othername=...)")
    ts = file_timestamp(metrics.settings.created)
    out = prepare_staging(staging)
    (out / METRICS_DIR).mkdir()
    copy_for_upload(run_dir / FILES["metrics"], out / METRICS_DIR / f"metrics_{ts}.json", FILES["metrics"])
    records = read_run_log(run_dir / FILES["responses"])
    for model in metrics.models:
        folder = out / folder_name(model)
        folder.mkdir()
        write_jsonl(folder / f"responses_{ts}.jsonl", (r for r in records if r["model"] == model))
        exports = run_dir / EXPORTS_DIR / folder_name(model)
        for path in sorted(exports.glob("*")) if exports.is_dir() else []:
            if f"_{ts}." in path.name or path.name == ALPACA_FILE:  # this evaluation's files only
                copy_for_upload(path, folder / path.name, str(path.relative_to(run_dir)))
    files = sorted(set(existing) | set(staged_files(out)))
    card = results_card(metrics, repo_id, dataset_configs(files), ts, command)
    card.save(str(out / "README.md"))
    return out


def results_card(metrics: Metrics, repo_id: str, configs: list[dict], ts: str, command: str | None) -> Any:
    """The dataset card: what produced the numbers (settings, prompt set and its hash, reward model, command)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    s = metrics.settings
    src = prompt_source(s.prompt_set)
    n = sum(sum(m.n.values()) for m in metrics.models.values())
    data = DatasetCardData(
        pretty_name=f"hhalign evaluation results ({repo_id.split('/')[-1]})", language="en",
        tags=["hhalign", "evaluation", "hh-rlhf", "reward-model"], task_categories=["text-generation"],
        size_categories="n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K",
        source_datasets=[src.hub_id] if src.hub_id else None, configs=configs)
    models = [{"name": name, "config": folder_name(name), "ref": (s.models.get(name) or {}).get("ref"),
               "revision": (s.models.get(name) or {}).get("revision"),
               "rates": [with_ci(getattr(m, k), m.interval(k)) for k in METRIC_KEYS]}
              for name, m in metrics.models.items()]
    return DatasetCard.from_template(
        data, template_path=str(TEMPLATE), repo_id=repo_id, url=dataset_url(repo_id), ts=ts, split=split_name(ts),
        settings=s, source=src, models=models, command=command, significance=metrics.significance_note,
        judges=metrics.judge, configs=configs, metrics_config=METRICS_CONFIG)


def push_results(run_dir: str | Path, repo_id: str, *, dry_run: bool = False, staging: str | Path | None = None,
                 private: bool = False, token: str | None = None, api: Any = None) -> dict:
    """Stage the evaluation in ``run_dir`` as a dataset repo and upload it (or, with ``dry_run``, keep it staged)."""
    from ..cli import current_command

    run_dir = Path(run_dir)
    command = current_command()
    if dry_run:
        check_repo_id(repo_id, "--push_results_to_hub")
        if staging is None:
            raise HHAlignError("--dry_run writes the results dataset into --staging DIR: add --staging")
        out = stage_results(run_dir, repo_id, staging, (), command)
        files = check_staged(out, token)  # the checks of the upload, token scan included
        logger.info(f"dry run: {len(files)} files of dataset {repo_id} staged in {out}")
        return {"repo_id": repo_id, "files": files, "staging": str(out), "dry_run": True}
    token = check_push(repo_id, token, option="--push_results_to_hub", id_option="--push_results_to_hub")
    from huggingface_hub import HfApi

    api = api or HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        existing = list(api.list_repo_files(repo_id, repo_type="dataset"))
    except Exception as exc:  # noqa: BLE001
        raise hub_error(repo_id, exc) from None
    with tempfile.TemporaryDirectory(prefix="hhalign-results-") as tmp:
        out = stage_results(run_dir, repo_id, staging or Path(tmp) / "repo", existing, command)
        files = staged_files(out)
        result = upload_repo(out, repo_id, "dataset", token, private, "hhalign: evaluation results", api=api,
                             create=False)
    metrics_file = run_dir / FILES["metrics"]
    record = {**result, "url": dataset_url(repo_id), "split": split_name(file_timestamp(
        load_metrics(metrics_file).settings.created)), "files": files, "metrics_sha256": _sha256(metrics_file)}
    write_json(run_dir / PUSH_RECORD, record)
    logger.info(f"pushed the results to {record['url']}")
    return record


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def linked_results(metrics_json: str | Path | None, results_repo: str | None = None) -> str | None:
    """The results dataset a card links to: ``results_repo``, else the push recorded beside this metrics.json."""
    if results_repo:
        check_repo_id(results_repo, "--results_repo")
        return dataset_url(results_repo)
    if metrics_json is None:
        return None
    record_path = Path(metrics_json).parent / PUSH_RECORD
    if not record_path.is_file():
        return None
    record = read_json(record_path, "results push record", f"delete {record_path} or pass --results_repo")
    return record.get("url") if record.get("metrics_sha256") == _sha256(Path(metrics_json)) else None


def publish_run(cfg: Any, out: Path, metrics: Metrics) -> dict | None:
    """The evaluator's last step: the interop exports, then the results dataset when ``--push_results_to_hub``."""
    write_exports(out, metrics)
    if not cfg.push_results_to_hub:
        return None
    result = push_results(out, cfg.push_results_to_hub, dry_run=cfg.dry_run, staging=cfg.staging,
                          private=cfg.results_private)
    if cfg.dry_run:
        print("\n".join(result["files"]))
    return result


# --- reading a results dataset back -------------------------------------------------------------------------------


def results_folder(source: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A folder the Results tab reads for ``source``: an evaluator run folder as it is; a results dataset
    (``hf://datasets/ORG/NAME[@REV]``, or its folder, downloaded or staged) as its latest evaluation, written into
    ``cache_dir`` (default: a folder under the system's temporary directory)."""
    text = str(source)
    folder = _download(text) if text.startswith(HF_PREFIX) else Path(text).expanduser()
    metrics_files = sorted((folder / METRICS_DIR).glob("metrics_*.json")) if folder.is_dir() else []
    if (folder / FILES["metrics"]).is_file() or not metrics_files:
        return folder
    latest = metrics_files[-1]
    ts = latest.stem.removeprefix("metrics_")
    metrics = load_metrics(latest)
    key = hashlib.sha256(f"{folder.resolve()}|{ts}".encode()).hexdigest()[:16]
    out = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "hhalign-results" / key
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for model in metrics.models:
        path = folder / folder_name(model) / f"responses_{ts}.jsonl"
        if not path.is_file():
            raise HHAlignError(f"results dataset {text!r} lacks {path.relative_to(folder)} for model {model!r} of "
                               f"{latest.name}: push the evaluation again")
        records += read_log(path, log_check("responses"))
    write_jsonl(out / FILES["responses"], records)
    write_text(out / FILES["metrics"], latest.read_text(encoding="utf-8"))
    return out


def _download(source: str) -> Path:
    from huggingface_hub import snapshot_download

    repo_id, _, revision = source.removeprefix(HF_PREFIX).strip("/").partition("@")
    check_repo_id(repo_id, "--results hf://datasets/")
    try:
        path = snapshot_download(repo_id, repo_type="dataset", revision=revision or None,
                                 allow_patterns=["README.md", f"{METRICS_DIR}/*", "*/responses_*.jsonl"])
    except Exception as exc:  # noqa: BLE001 - offline, missing repo, no access: one line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HHAlignError(f"--results {source}: cannot download the dataset ({first}); check the id, the network "
                           "and HF_HUB_OFFLINE, or pass a local copy") from None
    return Path(path)
