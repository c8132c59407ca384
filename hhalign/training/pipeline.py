"""The pipeline base -> SFT -> DPO, SFT -> SFT+DPO -> evaluation -> push and registry, as one resumable command."""

from __future__ import annotations

import copy
import dataclasses
import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HHAlignError
from ..eval.config import EvalConfig
from .config import DEMO_PAIRS_PATH, STAGES, parse_args
from .run import _resolve_ref, format_command, read_record, run_training

logger = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    """Options of ``training/pipeline.py``; every field is a flag and a key of its ``--config`` YAML."""

    sft_recipe: str = field(default="paper/sft", metadata={"help": "Recipe of the SFT stage."})
    dpo_recipe: str = field(default="paper/dpo", metadata={
        "help": "Recipe of the DPO stage (DPO on the base model)."})
    sft_dpo_recipe: str = field(default="paper/sft_dpo", metadata={
        "help": "Recipe of the SFT+DPO stage; its model_name_or_path is replaced by this pipeline's SFT output."})
    output_dir: str = field(default="outputs/study", metadata={
        "help": "Folder of the run: sft/, dpo/, sft_dpo/ and eval/ are written inside (reused to resume)."})
    base_model: str | None = field(default=None, metadata={
        "help": "Base model of SFT, DPO and the evaluation (default: model_name_or_path of the SFT recipe)."})
    base_model_hub_id: str | None = field(default=None, metadata={
        "help": "With a local --base_model and --push_to_hub: the Hub id holding the same weights, named as base "
                "by the pushed DPO adapter."})
    dataset: str | None = field(default=None, metadata={"help": "Override the training dataset of every stage."})
    split: str | None = field(default=None, metadata={"help": "Override the training split of every stage."})
    subsets: list[str] | None = field(default=None, metadata={"help": "Override the subsets of every stage."})
    max_samples: int | None = field(default=None, metadata={"help": "Override max_samples of every stage."})
    max_steps: int | None = field(default=None, metadata={"help": "Override max_steps of every stage."})
    sft_overrides: list[str] = field(default_factory=list, metadata={
        "help": "More SFT options as key=value, e.g. num_train_epochs=3 learning_rate=1e-5."})
    dpo_overrides: list[str] = field(default_factory=list, metadata={
        "help": "More options as key=value for both DPO stages, e.g. beta=0.2."})
    launcher: str | None = field(default=None, metadata={
        "help": "Run each training stage as a subprocess under this launcher, e.g. 'accelerate launch --config_file "
                "accelerate/multi_gpu' (default: in this process)."})
    evaluate: bool = field(default=True, metadata={"help": "Evaluate base, sft, dpo and sft_dpo with the evaluator."})
    eval_options: list[str] = field(default_factory=list, metadata={
        "help": "Options of the evaluation stage as key=value, any option of hhalign eval (e.g. batch_size=8 "
                "mode=fast limit=10); in a YAML config a list of key=value strings. --models and --out are set by "
                "the pipeline."})
    push_to_hub: bool = field(default=False, metadata={
        "help": "After evaluation, push sft, dpo and sft_dpo with model cards that carry their metrics."})
    hub_model_prefix: str | None = field(default=None, metadata={
        "help": "org/name prefix of the pushed repos: PREFIX-sft, PREFIX-dpo, PREFIX-sft-dpo."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repos as private."})
    merge_adapter: bool = field(default=False, metadata={"help": "Also push merged weights of LoRA stages."})
    push_results_to_hub: str | None = field(default=None, metadata={
        "help": "After evaluation, publish it as the Hub dataset ORG/NAME (hhalign eval --push_results_to_hub); the "
                "pushed model cards link to it as their source."})
    dry_run: bool = field(default=False, metadata={
        "help": "Write every repo --push_to_hub and --push_results_to_hub would upload into --staging "
                "(STAGING/models/ORG/NAME, STAGING/datasets/ORG/NAME) and upload nothing; the registry is unchanged."})
    staging: str | None = field(default=None, metadata={"help": "Folder of --dry_run's staged repos."})
    update_registry: bool = field(default=True, metadata={
        "help": "After a successful push and eval, record Hub ids and metrics in the registry and models.md."})
    registry_suffix: str = field(default="", metadata={
        "help": "Suffix of the registry names (sft<suffix>, ...), e.g. _improved for the improved recipes."})
    registry_path: str | None = field(default=None, metadata={
        "help": "Registry JSON to update (default: hhalign/assets/registry.json)."})
    models_md: str | None = field(default=None, metadata={"help": "models.md to re-render (default: ./models.md)."})
    demo: bool = field(default=False, metadata={
        "help": "Offline demo: tiny models built on the spot, the project's small preference pairs, a few steps."})
    demo_steps: int = field(default=8, metadata={"help": "Optimizer steps per stage in --demo."})

    def __post_init__(self) -> None:
        from ..config import check_positive, find_config, refuse_unused

        check_positive(self, {"max_samples": "rows", "max_steps": "steps", "demo_steps": "steps"})
        for option in ("sft_recipe", "dpo_recipe", "sft_dpo_recipe"):
            find_config(getattr(self, option), f"--{option}")
        refuse_unused(self, not self.demo, "without --demo", "only the demo uses it", ["demo_steps"])
        refuse_unused(self, self.demo, "with --demo", "the demo trains its own tiny base model", ["base_model"])
        refuse_unused(self, not self.push_to_hub, "without --push_to_hub", "no model is published",
                      ["hub_model_prefix", "merge_adapter", "base_model_hub_id", "registry_path", "models_md"])
        refuse_unused(self, not (self.push_to_hub or self.push_results_to_hub), "without --push_to_hub or "
                      "--push_results_to_hub", "nothing is published", ["hub_private_repo"])
        refuse_unused(self, not self.evaluate, "with --evaluate false", "nothing is evaluated", ["eval_options"])
        self.eval = build_eval_config(self.eval_options)


# The pipeline sets these evaluator options itself.
PIPELINE_EVAL_KEYS = ("models", "out", "demo", "untrained_models", "prompts_only", "from_responses",
                      "push_results_to_hub", "results_private", "dry_run", "staging")


def build_eval_config(options: Sequence[str]) -> EvalConfig:
    """The evaluation stage's :class:`EvalConfig` from key=value options, checked like hhalign eval's flags."""
    from ..config import Parser

    argv = _kv_args(options, "eval_options")
    flags = {a[2:] for a in argv[::2]}
    taken = sorted(flags & set(PIPELINE_EVAL_KEYS))
    if taken:
        raise HHAlignError(f"--eval_options cannot set {', '.join(taken)}: the pipeline sets them")
    (cfg,) = Parser([EvalConfig], prog="hhalign pipeline --eval_options").parse(argv)
    return cfg


HUB_SUFFIX = {"sft": "sft", "dpo": "dpo", "sft_dpo": "sft-dpo"}
STAGE_KIND = {"sft": "sft", "dpo": "dpo", "sft_dpo": "dpo"}
# The demo changes the recipes only where a few CPU steps on a tiny model need it; everything else is the recipe's.
DEMO_OVERRIDES = {"per_device_train_batch_size": "2", "gradient_accumulation_steps": "1", "max_length": "256",
                  "logging_steps": "1", "save_steps": "4"}
# LoRA's B matrices start at zero: a few DPO steps need a larger learning rate than full SFT to change any output.
DEMO_LEARNING_RATE = {"sft": "1e-3", "dpo": "1e-2"}


def _kv_args(pairs: Sequence[str], what: str) -> list[str]:
    argv = []
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HHAlignError(f"--{what} entries are key=value, got {item!r}")
        argv += [f"--{key.lstrip('-')}", *shlex.split(value)]
    return argv


def stage_argv(cfg: PipelineConfig, stage: str, out: Path, base: str | None, demo: dict) -> list[str]:
    """The command-line arguments of one stage: its recipe, then the pipeline's overrides."""
    recipe = {"sft": cfg.sft_recipe, "dpo": cfg.dpo_recipe, "sft_dpo": cfg.sft_dpo_recipe}[stage]
    argv = ["--config", recipe, "--output_dir", str(out / stage)]
    if stage == "sft_dpo":
        argv += ["--model_name_or_path", str(out / "sft")]
    elif base:
        argv += ["--model_name_or_path", base]
    for key, flag in (("dataset", "dataset_name"), ("split", "dataset_train_split"), ("max_samples", "max_samples"),
                      ("max_steps", "max_steps")):
        value = getattr(cfg, key)
        if value is not None:
            argv += [f"--{flag}", str(value)]
    if cfg.subsets:
        argv += ["--subsets", *cfg.subsets]
    for key, value in demo.items():
        argv += [f"--{key}", value]
    if demo:
        argv += ["--learning_rate", DEMO_LEARNING_RATE[STAGE_KIND[stage]]]
    argv += _kv_args(cfg.sft_overrides if stage == "sft" else cfg.dpo_overrides,
                     "sft_overrides" if stage == "sft" else "dpo_overrides")
    return argv


def run_pipeline(cfg: PipelineConfig) -> dict:
    """base -> SFT -> DPO and SFT -> SFT+DPO, then the evaluator on all four, then push and record when asked."""
    out = Path(cfg.output_dir).expanduser()
    eval_cfg, demo_args = cfg.eval, {}
    check_pipeline_push(cfg)
    if cfg.demo:
        import torch

        from ..testing.tiny import build_tiny

        # A 64-wide model gains nothing from several threads, and on a busy CPU their synchronisation makes every
        # step many times slower.
        torch.set_num_threads(1)
        logger.info(f"demo: building the tiny models in {out / 'tiny'}")
        tiny = build_tiny(out / "tiny")
        eval_cfg = dataclasses.replace(eval_cfg, reward_model=str(tiny.reward), prompt_set="demo", dataset="",
                                       device="cpu", n_bootstrap=min(eval_cfg.n_bootstrap, 1000))
        # A copy, not dataclasses.replace: the user's options were checked; these are the demo's own settings.
        cfg = copy.copy(cfg)
        cfg.base_model, cfg.dataset = str(tiny.policy), cfg.dataset or str(DEMO_PAIRS_PATH)
        cfg.max_steps = cfg.max_steps or cfg.demo_steps
        demo_args = dict(DEMO_OVERRIDES)
    # One base for SFT, DPO and the evaluation: the option, else the SFT recipe's model.
    base = cfg.base_model or parse_args("sft", ["--config", cfg.sft_recipe])[2].model_name_or_path
    if cfg.push_to_hub and _resolve_ref(base) != base and not cfg.base_model_hub_id:
        raise HHAlignError(f"the DPO adapter would name the local folder {base!r} as its base: pass "
                           "--base_model_hub_id org/name (that model on the Hub) or a Hub id as --base_model")
    from ..files import check_writable
    from ..loading import find_model
    from ..refs import parse_model_ref

    check_writable(out, "--output_dir")
    find_model(parse_model_ref(base))  # every stage starts from it: found before any stage writes its folder
    records = {}
    for stage in STAGES:
        argv = stage_argv(cfg, stage, out, base, demo_args)
        kind = STAGE_KIND[stage]
        logger.info(f"== {stage}: {format_command(f'hhalign {kind}', argv)}")
        if cfg.launcher:
            _run_launched(cfg.launcher, kind, argv, stage)
            records[stage] = read_record(out / stage)
        else:
            script_args, training_args, model_args = parse_args(kind, argv)
            records[stage] = run_training(kind, script_args, training_args, model_args, role=stage,
                                          command=format_command(f"hhalign {kind}", argv))
    metrics_path = None
    if cfg.evaluate:
        metrics_path = _evaluate(results_options(cfg, eval_cfg), out, base, cfg.demo)
        if cfg.demo:
            logger.info(
                "demo: tiny models trained for a few steps, judged by a tiny random reward model; the numbers only "
                "show that the pipeline works end to end")
    pushed = publish_stages(cfg, out, metrics_path, base, records) if cfg.push_to_hub else {}
    return {"output_dir": str(out), "records": records, "metrics": str(metrics_path) if metrics_path else None,
            "pushed": pushed}


def check_pipeline_push(cfg: PipelineConfig) -> None:
    """Everything the pushes at the end need (but the adapter's base, known once the base is), checked before hours
    of training."""
    from ..publish.hub import check_push, check_repo_id

    if cfg.demo and (cfg.push_to_hub or cfg.push_results_to_hub) and not cfg.dry_run:
        raise HHAlignError("--demo trains throwaway tiny models: it cannot be pushed; add --dry_run --staging DIR "
                           "to see what would be uploaded")
    if cfg.dry_run and not (cfg.push_to_hub or cfg.push_results_to_hub):
        raise HHAlignError("--dry_run stages what --push_to_hub or --push_results_to_hub would upload: add one")
    if cfg.dry_run and not cfg.staging:
        raise HHAlignError("--dry_run writes the repos into --staging DIR: add --staging")
    if (cfg.push_to_hub or cfg.push_results_to_hub) and not cfg.evaluate:
        raise HHAlignError("--push_to_hub and --push_results_to_hub publish an evaluation: drop --evaluate false")
    if cfg.push_results_to_hub and cfg.dry_run:
        check_repo_id(cfg.push_results_to_hub, "--push_results_to_hub")
    elif cfg.push_results_to_hub:
        check_push(cfg.push_results_to_hub, option="--push_results_to_hub", id_option="--push_results_to_hub")
    if not cfg.push_to_hub:
        return
    if not cfg.hub_model_prefix:
        raise HHAlignError("--push_to_hub needs --hub_model_prefix org/name (repos PREFIX-sft, PREFIX-dpo and "
                           "PREFIX-sft-dpo are created)")
    for stage in STAGES:
        repo = f"{cfg.hub_model_prefix}-{HUB_SUFFIX[stage]}"
        check_repo_id(repo, "--hub_model_prefix") if cfg.dry_run else check_push(repo)


def results_options(cfg: PipelineConfig, eval_cfg: EvalConfig) -> EvalConfig:
    """The evaluation stage's publishing options: the pipeline's results dataset, staged with the others."""
    from ..publish.staging import staging_for

    if not cfg.push_results_to_hub:
        return eval_cfg
    staging = staging_for(cfg.staging, "dataset", cfg.push_results_to_hub) if cfg.dry_run else None
    return dataclasses.replace(eval_cfg, push_results_to_hub=cfg.push_results_to_hub, dry_run=cfg.dry_run,
                               staging=str(staging) if staging else None, results_private=cfg.hub_private_repo)


def _run_launched(launcher: str, kind: str, argv: list[str], stage: str) -> None:
    import subprocess

    # `python -m hhalign sft ...` works from a checkout and from an installed wheel; accelerate takes -m as well.
    cmd = [*launcher_argv(launcher), "-m", "hhalign", kind, *argv]
    rc = subprocess.run(cmd, check=False).returncode
    if rc != 0:
        raise HHAlignError(f"stage {stage} failed (exit status {rc}); fix the error above and run the pipeline "
                           "again: finished stages are skipped")


def eval_models(out: Path, base: str) -> list[str]:
    return [f"base={base}", f"sft={out / 'sft'}", f"dpo={out / 'dpo'}", f"sft_dpo={out / 'sft_dpo'}"]


def _evaluate(eval_cfg: EvalConfig, out: Path, base: str, demo: bool) -> Path:
    from ..eval.run import run
    from ..eval.rundir import FILES

    eval_cfg = dataclasses.replace(eval_cfg, models=eval_models(out, base), out=str(out / "eval"),
                                   untrained_models=demo)
    logger.info(f"== eval: hhalign eval --models {' '.join(eval_cfg.models)} --out {eval_cfg.out}")
    run(eval_cfg)
    return out / "eval" / FILES["metrics"]


def publish_stages(cfg: PipelineConfig, out: Path, metrics_path: Path, base: str, records: dict) -> dict:
    """Push sft, dpo and sft_dpo with their measured metrics; record each in the registry and models.md from the
    card that was pushed (with --dry_run: stage them, record nothing)."""
    from ..eval.schema import load_metrics
    from ..publish.card import eval_results, registry_metrics
    from ..publish.hub import push_checkpoint
    from ..publish.registry import update_base_metrics, update_registry
    from ..publish.results_hub import linked_results
    from ..publish.staging import staging_for

    pushed: dict = {}
    for stage in STAGES:  # SFT first: the SFT+DPO adapter names the pushed SFT repo as its base
        repo = f"{cfg.hub_model_prefix}-{HUB_SUFFIX[stage]}"
        base_hub = pushed.get("sft") if stage == "sft_dpo" else cfg.base_model_hub_id if stage == "dpo" else None
        result = push_checkpoint(out / stage, repo, private=cfg.hub_private_repo, merge_adapter=cfg.merge_adapter,
                                 metrics_json=metrics_path, metrics_model=stage, base_model_hub_id=base_hub,
                                 results_repo=cfg.push_results_to_hub, dry_run=cfg.dry_run,
                                 staging=staging_for(cfg.staging, "model", repo) if cfg.dry_run else None)
        pushed[stage] = result["repo_id"]
        if cfg.update_registry and not cfg.dry_run:
            record = records.get(stage) or {}
            update_registry(f"{stage}{cfg.registry_suffix}", role=stage, ref=result["repo_id"],
                            metrics=result["card_metrics"], recipe=_recipe_label(cfg, stage),
                            command=record.get("command"), registry_path=cfg.registry_path, models_md=cfg.models_md)
    if cfg.update_registry and not cfg.dry_run:
        metrics = load_metrics(metrics_path)
        _, m = metrics.model("base", str(metrics_path))
        results = eval_results(m, metrics.settings, linked_results(metrics_path, cfg.push_results_to_hub))
        update_base_metrics(base, registry_metrics(results, str(metrics_path)), registry_path=cfg.registry_path,
                            models_md=cfg.models_md)
    return pushed


def _recipe_label(cfg: PipelineConfig, stage: str) -> str:
    return {"sft": cfg.sft_recipe, "dpo": cfg.dpo_recipe, "sft_dpo": cfg.sft_dpo_recipe}[stage]


def launcher_argv(launcher: str) -> list[str]:
    """The launcher's words, with a shipped accelerate config name (--config_file accelerate/multi_gpu) as its path."""
    from ..config import find_config

    words = shlex.split(launcher)
    for i, word in enumerate(words[:-1]):
        if word == "--config_file" and not Path(words[i + 1]).exists():
            words[i + 1] = str(find_config(words[i + 1]))
    return words


def main(cfg: PipelineConfig) -> dict:
    """The study end to end: base -> SFT -> DPO and SFT -> SFT+DPO, then the evaluator on all four; push when asked.

    Usage:
        # offline: tiny models, the project's own preference pairs, a few steps each, then the evaluation
        hhalign pipeline --demo --output_dir outputs/demo

        # the study on one GPU, published with model cards that carry the measured metrics, and the evaluation
        # as a results dataset the cards link to
        hhalign pipeline --config paper/pipeline --push_to_hub --hub_model_prefix you/opt-350m-hh \
            --push_results_to_hub you/opt-350m-hh-results

        # everything that would be uploaded, written to a folder instead
        hhalign pipeline --demo --push_to_hub --hub_model_prefix me/tiny --base_model_hub_id me/tiny-base \
            --push_results_to_hub me/tiny-results --dry_run --staging /tmp/staged

        # each stage under accelerate (several GPUs)
        hhalign pipeline --config paper/pipeline --launcher "accelerate launch --config_file accelerate/multi_gpu"

    Finished stages are skipped on a rerun; an interrupted stage resumes from its last checkpoint and the evaluation
    resumes where it stopped.
    """
    return run_pipeline(cfg)
