"""The evaluation run: prompts -> generations -> rewards -> metrics, plots, report.

Every stage appends its records as it goes, so a killed run resumes where it stopped when started again with the
same ``--out``; a run with different settings is refused rather than mixed into the same folder.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

from .. import data as hdata
from ..engine.precision import MODE_GUARANTEES, apply_mode
from ..env import provenance
from ..errors import HHAlignError
from ..files import JsonlWriter, check_writable, read_json, write_json, write_jsonl, write_text
from ..fmt import pct
from ..refs import DEFAULT_REWARD_MODEL, ModelRef, parse_model_refs
from ..stats.judges import JudgeResult, judge_blocks, offline_judges, relabel
from ..stats.metrics import summarize
from .config import EvalConfig
from .panel import Panel
from .parallel import current_shard
from .records import check_unique, load_records, read_run_log
from .rundir import (
    check_folder,
    imported_fingerprint,
    open_run,
    prompts_digest,
    run_fingerprint,
    user_options,
    write_prompts,
)
from .schema import FILES, SCHEMA_VERSION, Metrics
from .timing import recording, stage

logger = logging.getLogger(__name__)


def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="prompt", dynamic_ncols=True, leave=True)


def demo_config(cfg: EvalConfig, out: Path) -> EvalConfig:
    """The config pointed at the tiny models under ``out/models`` (built by :func:`build_demo_models`) and the
    project's demo prompts."""
    models = out.resolve() / "models"  # the folder's real path: it resumes under any spelling of --out
    # Reward models given on the command line are kept (e.g. several tiny judges); the judge check reads the shipped
    # demo pairs unless --judge_dataset names others.
    judges = cfg.reward_model if cfg.reward_model != [DEFAULT_REWARD_MODEL] else [str(models / "reward")]
    return EvalConfig(**{**asdict(cfg), "models": [f"tiny={models / 'policy'}", f"tiny_lora={models / 'policy-lora'}"],
                         "reward_model": judges, "prompt_set": "demo", "dataset": "",
                         "judge_dataset": cfg.judge_dataset or str(hdata.DEMO_PAIRS_PATH),
                         "n_bootstrap": min(cfg.n_bootstrap, 2000), "demo": False, "untrained_models": True})


def build_demo_models(out: Path) -> None:
    """Build the demo's tiny models into ``out/models`` under the folder's lock, first removing the staging folders
    of a build that was killed (``.tiny-build-*``, ``.adapter-*``); a finished build is kept."""
    import shutil

    from ..testing.tiny import build_tiny, build_tiny_adapter
    from .rundir import lock, prepare_out

    prepare_out(out)
    with lock(out):
        models = out / "models"
        for stale in [*models.glob(".tiny-build-*"), *models.glob(".adapter-*")]:
            shutil.rmtree(stale, ignore_errors=True)
            logger.info(f"removed {stale}, a model build a killed run left")
        tiny = build_tiny(models)
        build_tiny_adapter(tiny.policy, models / "policy-lora")


def load_prompts(cfg: EvalConfig) -> list[hdata.EvalPrompt]:
    prompts = hdata.build_prompt_set(cfg.prompt_set, cfg.dataset, cfg.split, cfg.n_per_category, cfg.seed)
    prompts = hdata.limit_prompts(prompts, cfg.limit)
    if not prompts:
        raise HHAlignError(f"prompt set {cfg.prompt_set!r} is empty after filtering; check --prompt_set and --limit")
    return prompts



def run(cfg: EvalConfig) -> dict:
    """Run an evaluation as configured; returns the metrics mapping written to ``metrics.json``."""
    with ExitStack() as held, recording():  # the run folder's lock, held until the run ends (eval.rundir.open_run)
        return _run(cfg, held)


def _run(cfg: EvalConfig, held: ExitStack) -> dict:
    check_writable(cfg.out)
    options = user_options(cfg)
    if cfg.from_responses:
        records = [r for path in cfg.from_responses for r in load_records(path)]
        check_unique(records, "--from_responses")
        if cfg.limit is not None:
            seen: dict[tuple[str, str], int] = {}
            for r in records:
                seen[(r["model"], r["category"])] = seen.get((r["model"], r["category"]), 0) + 1
                r["_keep"] = seen[(r["model"], r["category"])] <= cfg.limit
            records = [{k: v for k, v in r.items() if k != "_keep"} for r in records if r["_keep"]]
        settings = {"source": "from_responses", "files": [str(Path(p).resolve()) for p in cfg.from_responses]}
        out = held.enter_context(open_run(cfg.out, imported_fingerprint(cfg), options))
        return finish(cfg, out, records, settings)
    demo = cfg.demo
    from ..loading import find_model

    # Every model and judge the user named is found first (a Hub id: one metadata request, or the cache offline),
    # before the dataset, the folder or the judge check are touched; the demo's own models are built later.
    given = [] if demo or cfg.prompts_only else parse_model_refs(cfg.models)
    if not cfg.prompts_only and (not demo or cfg.reward_model != [DEFAULT_REWARD_MODEL]):
        given += parse_model_refs(cfg.reward_model)
    for ref in given:
        find_model(ref)
    if demo:
        cfg = demo_config(cfg, Path(cfg.out).expanduser())
        options = {**user_options(cfg), "demo": True}  # the models and judge that run, not the defaults
    prompts = load_prompts(cfg)
    if cfg.prompts_only:
        out = held.enter_context(open_run(cfg.out, {"prompts_sha256": prompts_digest(prompts)}, options,
                                          only=["prompts_sha256"]))
        write_prompts(out, prompts)
        logger.info(f"wrote {len(prompts)} prompts to {out / FILES['prompts']}")
        return {}
    from ..loading import resolve_device

    refs = parse_model_refs(cfg.models)
    device = resolve_device(cfg.device)
    fingerprint = run_fingerprint(cfg, prompts, device)
    if demo:  # checked before the demo's models are built into the folder
        check_folder(Path(cfg.out).expanduser(), fingerprint, options, refs)
        logger.info(
            "demo: tiny untrained models built offline; their scores are meaningless (this shows the pipeline only)")
        build_demo_models(Path(cfg.out).expanduser())
    found = {str(r) for r in given}
    for ref in [*refs, *parse_model_refs(cfg.reward_model)]:
        if str(ref) not in found:  # the demo's models, once built
            find_model(ref)
    if cfg.protocol == "template":
        check_templates(refs)
    if cfg.backend == "vllm":
        check_vllm(refs)
    panel = Panel(cfg, device)  # reads the judge check's pairs: a missing dataset fails before any write
    shard = current_shard()  # one of several processes under accelerate launch (eval.parallel), else the only one
    out = held.enter_context(open_run(cfg.out, fingerprint, options, refs)) if shard.main else \
        Path(cfg.out).expanduser()
    if shard.main:
        write_prompts(out, prompts)
        logger.info(f"wrote {len(prompts)} prompts to {out / FILES['prompts']}")
    work, mine = shard.begin(out, prompts), shard.take(prompts)
    model_info = generate_all(cfg, work, mine, refs, device)
    judges = score_all(cfg, work, mine, refs, device, panel)
    if not shard.end(out):  # the main process merges every shard's records and writes the metrics
        return {}
    wanted = {r.name for r in refs}
    ids = {p.prompt_id for p in prompts}
    records = [r for r in read_run_log(out / FILES["responses"]) if r["model"] in wanted and r["prompt_id"] in ids]
    check_unique(records, str(out / FILES["responses"]))
    order = {r.name: i for i, r in enumerate(refs)}
    records.sort(key=lambda r: order[r["model"]])
    settings = {
        "source": "generated",
        "demo": cfg.demo or cfg.untrained_models,
        "models": model_info,
        "reward_model": judges[0].info,
        "prompt_set": {"name": cfg.prompt_set, "dataset": cfg.dataset, "hub_id": cfg.dataset_hub_id,
                       "split": cfg.split, "seed": cfg.seed, "limit": cfg.limit, "n": len(prompts),
                       "sha256": fingerprint["prompts_sha256"]},
        "protocol": cfg.protocol,
        "decoding": {"strategy": "greedy", "do_sample": False, "num_beams": 1, "max_new_tokens": cfg.max_new_tokens},
        "truncation": truncation_stats(records, cfg),
        "dtype": cfg.dtype,
        "mode": {"name": cfg.mode, "guarantee": MODE_GUARANTEES[cfg.mode]},
        "device": device,
        "batch_size": cfg.batch_size,
        "reward_batch_size": cfg.reward_batch_size or cfg.batch_size,
        **({"data_parallel": {"processes": shard.count}} if shard.count > 1 else {}),
    }
    return finish(cfg, out, records, settings, judges)


def check_templates(refs: list[ModelRef]) -> None:
    """--protocol template: every model's tokenizer has a chat template (read before any weights or writes)."""
    from ..loading import load_policy_tokenizer
    from ..protocol import check_template

    for ref in refs:
        check_template(load_policy_tokenizer(ref), ref.name)


def check_vllm(refs: list[ModelRef]) -> None:
    """--backend vllm: the package is there and every model is a full checkpoint vLLM can load by path."""
    from ..engine.vllm import require_vllm
    from ..loading import adapter_config

    require_vllm()
    for ref in refs:
        if adapter_config(ref) is not None:
            raise HHAlignError(f"--backend vllm loads full checkpoints, and model {ref.name!r} is a PEFT adapter: "
                               "merge it into its base first, or use --backend engine")


def generate_all(cfg: EvalConfig, out: Path, prompts: list[hdata.EvalPrompt], refs: list[ModelRef],
                 device: str) -> dict:
    """Generate the missing responses of every model, appending each batch to generations.jsonl."""
    from ..loading import load_policy

    gen_path = out / FILES["generations"]
    done = {(r["model"], r["prompt_id"]): r for r in read_run_log(gen_path)}
    info: dict = {}
    with JsonlWriter(gen_path) as writer:
        for ref in refs:
            todo = [p for p in prompts if (ref.name, p.prompt_id) not in done]
            previous = next((r for (m, _), r in done.items() if m == ref.name), None)
            if not todo:
                info[ref.name] = previous["model_info"] if previous else {"name": ref.name, "ref": ref.ref}
                logger.info(f"{ref.name}: all {len(prompts)} responses already generated")
                continue
            with stage("model_load"):
                loaded = load_policy(ref, device=device, dtype=cfg.dtype)
                loaded.model, engine = apply_mode(loaded.model, cfg.mode, device)
            if cfg.backend == "vllm":
                engine.update(engine="vllm", tensor_parallel_size=cfg.tensor_parallel_size,
                              guarantee="vLLM's kernels and batching: answers may differ from one prompt at a time")
            else:  # which generator runs, and when the engine declines the model, why (batched.generation_settings)
                from ..engine.batched import generation_settings

                engine.update(generation_settings(loaded.model, engine["engine"]))
            loaded.info["engine"] = engine
            info[ref.name] = loaded.info
            with _bar(len(todo), f"generate {ref.name}") as bar:
                generate_in_chunks(loaded, todo, cfg, _saver(writer, done, ref, loaded.info), bar)
            del loaded
    return info


def _saver(writer: JsonlWriter, done: dict, ref: ModelRef, model_info: dict) -> Callable:
    """A callback that appends one chunk of generations and marks them done."""

    def save(batch_prompts: list[hdata.EvalPrompt], gens: list) -> None:
        rows = [{"model": ref.name, "model_ref": str(ref), "revision": model_info["revision"], **p.to_dict(),
                 "response": g.response, "n_prompt_tokens": g.n_prompt_tokens, "n_new_tokens": g.n_new_tokens,
                 "prompt_truncated": g.prompt_truncated, "model_info": model_info}
                for p, g in zip(batch_prompts, gens)]
        writer.write_many(rows)
        done.update({(r["model"], r["prompt_id"]): r for r in rows})

    return save


def generate_in_chunks(loaded, todo: list[hdata.EvalPrompt], cfg: EvalConfig, save, bar) -> None:
    """Generate in length-sorted chunks of a few batches, saving each chunk before starting the next."""
    from ..engine import generate, generator_for, model_input

    lengths = [len(model_input(p.prompt, cfg.protocol, loaded.tokenizer)) for p in todo]
    order = sorted(range(len(todo)), key=lambda i: -lengths[i])
    chunk = cfg.batch_size * 4
    vllm = {"model_path": loaded.info["ref"], "revision": loaded.info.get("requested_revision"),
            "tensor_parallel_size": cfg.tensor_parallel_size} if cfg.backend == "vllm" else {}
    backend = generator_for(cfg.mode, cfg.backend, **vllm)
    try:
        for start in range(0, len(order), chunk):
            part = [todo[i] for i in order[start : start + chunk]]
            with stage("generation") as timed:
                gens = generate(loaded.model, loaded.tokenizer, [p.prompt for p in part], cfg.protocol,
                                cfg.max_new_tokens, cfg.batch_size, progress=bar, engine=backend)
                timed.items, timed.tokens = len(gens), sum(g.n_new_tokens for g in gens)
            save(part, gens)
    finally:
        backend.close()


def score_all(cfg: EvalConfig, out: Path, prompts: list[hdata.EvalPrompt], refs: list[ModelRef], device: str,
              panel: Panel) -> list[JudgeResult]:
    """Score every generated response that has no reward yet with every judge, appending each chunk to
    responses.jsonl; returns the judges as used (loaded, checked, with their thresholds)."""
    resp_path = out / FILES["responses"]
    scored = {(r["model"], r["prompt_id"]) for r in read_run_log(resp_path)}
    wanted = {r.name for r in refs}
    ids = {p.prompt_id for p in prompts}
    todo = [g for g in read_run_log(out / FILES["generations"])
            if g["model"] in wanted and g["prompt_id"] in ids and (g["model"], g["prompt_id"]) not in scored]
    state_path = out / FILES["run"]
    state = read_json(state_path, "run state", "delete the folder's run.json only if you mean to restart the run")
    judges = panel.prepare(state, state_path, need_models=bool(todo))
    if not todo:
        logger.info("all responses already scored")
        return judges
    chunk = (cfg.reward_batch_size or cfg.batch_size) * 4
    with JsonlWriter(resp_path) as writer, _bar(len(todo), "score") as bar:
        for start in range(0, len(todo), chunk):
            with stage("scoring") as timed:
                rows = panel.score_records(todo[start : start + chunk], bar)
                timed.items, timed.tokens = len(rows), sum(r["reward_tokens"] for r in rows)
            writer.write_many(rows)
    return judges


def truncation_stats(records: list[dict], cfg: EvalConfig) -> dict:
    from ..engine.reward import TRAINED_LENGTH

    return {
        "generation": "prompts longer than the model's context keep their last tokens",
        "prompts_truncated": sum(bool(r.get("prompt_truncated")) for r in records),
        "reward_max_length": cfg.reward_max_length,
        "reward_pairs_truncated": sum(bool(r.get("reward_truncated")) for r in records),
        f"reward_pairs_over_{TRAINED_LENGTH}_tokens": sum(bool(r.get("reward_over_trained_length")) for r in records),
    }


def finish(cfg: EvalConfig, out: Path, records: list[dict], settings: dict,
           judges: list[JudgeResult] | None = None) -> dict:
    """Summarize records into metrics.json, plots and report.md (per judge when there are several)."""
    from ..stats.report import render_report
    from .timing import current_timings

    with stage("metrics_and_plots"):
        judges = judges or offline_judges(records, cfg)
        thresholds = judges[0].thresholds
        summary = {**summarize(records, thresholds, n_boot=cfg.n_bootstrap),
                   **judge_blocks(records, judges, cfg.n_bootstrap, out)}
        settings = {
            **settings,
            "thresholds": {"harmless": thresholds.harmless, "helpful": thresholds.helpful},
            "bootstrap": {"n": cfg.n_bootstrap, "seed": 0, "ci": 0.95, "method": "percentile"},
            **provenance(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        metrics = Metrics.from_dict({"schema_version": SCHEMA_VERSION, **summary, "settings": settings})
        if settings.get("source") == "from_responses":
            write_jsonl(out / FILES["responses"], relabel(records, judges))
        plots = {}
        if cfg.plots:
            from ..stats.plots import write_plots

            rewards: dict = {}
            for r in records:
                rewards.setdefault(r["model"], {"harmful": [], "helpful": []})[r["category"]].append(r["reward"])
            title = "Demo (tiny untrained models: meaningless scores)" if settings.get("demo") else ""
            plots = {k: p.name for k, p in write_plots(metrics, rewards, out, title).items()}
    metrics.settings.timings = current_timings()
    write_json(out / FILES["metrics"], metrics.to_dict())
    write_text(out / FILES["report"], render_report(metrics, plots))
    for name, m in metrics.models.items():
        logger.info(f"{name}: HmR {pct(m.HmR)}  HpR {pct(m.HpR)}  CAS {pct(m.CAS)}")
    logger.info(summary["significance_note"])
    if settings.get("demo"):
        logger.info(
            "demo: these numbers come from tiny untrained models and mean nothing; run real checkpoints for results")
    logger.info(f"wrote {out / FILES['metrics']}, {out / FILES['responses']}, {out / FILES['report']}")
    from ..publish.results_hub import publish_run

    publish_run(cfg, out, metrics)  # interop exports, and the results dataset when --push_results_to_hub asks
    return metrics.to_dict()


def main(cfg: EvalConfig) -> dict:
    """Evaluate checkpoints the way the study did: generate, score with a reward model, write metrics and plots.

    Usage:
        # the offline demo (tiny untrained models, no network)
        hhalign eval --demo --out results/demo

        # the study's protocol on the study's 100 prompts
        hhalign eval --models base=facebook/opt-350m sft=org/opt-350m-hh-sft --out results/opt350m

        # rebuild the study's prompts from a local HH-RLHF copy, or its Table 1 from its published ratings
        hhalign eval --prompts_only --dataset ../shared/data/hh-rlhf --out results/prompts
        hhalign eval --from_responses ../shared/reference/pant2025/responses --out results/paper
    """
    return run(cfg)

