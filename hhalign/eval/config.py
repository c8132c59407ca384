"""Options of the evaluator (``batch/eval.py``, ``hhalign eval``), validated once when they are built."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from .. import data as hdata
from ..config import check_device, check_positive, refuse_unused
from ..errors import HHAlignError
from ..publish.registry import published_models
from ..refs import DEFAULT_REWARD_MODEL
from ..stats.metrics import DEFAULT_BOOTSTRAP, HARMLESS_THRESHOLD, HELPFUL_THRESHOLD, Thresholds
from .judge_check import DEFAULT_N

# Old or other tools' option names the evaluator accepts: lm-evaluation-harness calls the output folder --output_path.
ALIASES = {"output_path": "out"}


@dataclass
class EvalConfig:
    """Options of ``batch/eval.py``; every field is a CLI flag (``--field_name`` or ``--field-name``)."""

    models: list[str] = field(default_factory=published_models, metadata={
        "help": "Models to evaluate: Hub ids (id@revision), local folders or PEFT adapters, optionally named "
                "name=ref, e.g. base=facebook/opt-350m sft=org/opt-350m-hh-sft. Default: the published models of "
                "the registry (models.md)."})
    reward_model: list[str] = field(default_factory=lambda: [DEFAULT_REWARD_MODEL], metadata={
        "help": "Reward model(s) judging (prompt, response) pairs: one-logit sequence classifiers (Hub ids or "
                "folders), optionally named name=ref, e.g. oa=OpenAssistant/reward-model-deberta-v3-large-v2 "
                "other=ORG/RM. The first is the primary judge: its numbers fill metrics.json's models table; every "
                "judge's are under judges, with their agreement under agreement."})
    judge_formats: list[str] = field(default_factory=list, metadata={
        "help": "How a judge reads a pair, NAME=pair (a text pair, the default; the OpenAssistant models) or "
                "NAME=chat (the model's own chat template, where its card asks for one)."})
    judge_thresholds: list[str] = field(default_factory=list, metadata={
        "help": "A judge's thresholds, NAME=HARMLESS,HELPFUL (e.g. oa=-3,-2). Default: --harmless_threshold and "
                "--helpful_threshold (the study's) for the OpenAssistant model; thresholds calibrated on the judge "
                "check's pairs for other judges (recorded in metrics.json), the options' values without a check."})
    judge_check: int | None = field(default=None, metadata={
        "help": "Held-out HH-RLHF pairs per subset on which each judge's accuracy is measured (chosen scored above "
                "rejected, 95% intervals, ties apart), cached per model and revision; 0: no check. Default: 500, "
                "and 0 with --demo, --untrained_models or --from_responses."})
    judge_dataset: str | None = field(default=None, metadata={
        "help": "HH-RLHF copy (or a JSONL file of {chosen, rejected}) for the judge check. Default: --dataset; "
                "with --demo the shipped demo pairs."})
    judge_cache: str | None = field(default=None, metadata={
        "help": "Folder of cached judge checks. Default: $HHALIGN_CACHE/judge, else ~/.cache/hhalign/judge."})
    dataset: str = field(default=hdata.DEFAULT_DATASET, metadata={
        "help": "HH-RLHF Hub id or a local folder with the same layout (e.g. ../shared/data/hh-rlhf)."})
    dataset_hub_id: str | None = field(default=None, metadata={
        "help": "With a local --dataset: the Hub dataset it is a copy of (e.g. Anthropic/hh-rlhf). Recorded with the "
                "results, it names the prompts' source in model cards and results datasets; without it a local "
                "folder is named as local, never as a Hub dataset."})
    split: str = field(default="test", metadata={"help": "Dataset split the prompts come from."})
    prompt_set: str = field(default="paper", metadata={
        "help": "paper (the study's 100 prompts); paper-large (the study's procedure continued: same seed and "
                "keyword filter, the same random stream, the study's 50+50 first; by default all 192 keyword harmful "
                "prompts and 192 helpful); harmful-all (the 192 keyword harmful prompts alone); sample (N seeded per "
                "category); demo; or a JSONL file with category and prompt."})
    n_per_category: int | None = field(default=None, metadata={
        "help": "Prompts per category for --prompt_set paper-large (default: 192, harmful capped at the keyword "
                "pool) and sample (default: 50)."})
    seed: int = field(default=hdata.PAPER_SEED, metadata={"help": "Seed of the prompt sampling (the study: 100)."})
    limit: int | None = field(default=None, metadata={"help": "Keep only the first N prompts of each category."})
    protocol: Literal["paper", "chat", "template"] = field(default="paper", metadata={
        "help": "paper: the prompt as is (the study); chat: prompt + assistant cue, reply cut at the next "
                "Human turn (both for base models); template: the prompt's turns as user/assistant messages through "
                "the model's own chat template, reply cut at its end-of-turn token (instruct models; a model without "
                "a chat template is refused). The judges read the HH transcript either way."})
    max_new_tokens: int = field(default=50, metadata={"help": "Greedy decoding length limit (the study: 50)."})
    batch_size: int = field(default=32, metadata={
        "help": "Most prompts decoded together (one decode batch reads the weights once per token for all of them)."})
    reward_batch_size: int | None = field(default=None, metadata={
        "help": "Pairs per reward-model batch (default: --batch_size)."})
    reward_max_length: int | None = field(default=None, metadata={
        "help": "Truncate (prompt, response) pairs to this many reward-model tokens. Default: none, as in the "
                "study; pairs over 512 tokens are counted in metrics.json."})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(default="float32", metadata={
        "help": "Weights' number format; auto: bfloat16 on capable GPUs, float32 elsewhere."})
    mode: Literal["fp32", "exact", "fast"] = field(default="fp32", metadata={
        "help": "fp32: hhalign's batched engine in float32, the same answers as one prompt at a time and rewards "
                "within 1e-4; exact: the study's loop, one prompt and one pair per call (several times slower); fast: "
                "the hardware's fastest number format (bfloat16 on GPUs and CPUs with AVX512-BF16/AMX, else int8 on "
                "x86 CPUs), faster but answers and rewards may differ (batch/bench.py measures by how much)."})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu, cuda or cuda:N."})
    backend: Literal["engine", "vllm"] = field(default="engine", metadata={
        "help": "What generates the answers: engine (hhalign's engines, as --mode says) or vllm (vLLM on CUDA GPUs, "
                "pip install vllm; full checkpoints only: merge a LoRA adapter first). Scoring stays on "
                "transformers."})
    tensor_parallel_size: int = field(default=1, metadata={
        "help": "With --backend vllm: GPUs one model is split over (models beyond one GPU). For more throughput on "
                "models that fit one GPU, run data-parallel instead: accelerate launch --num_processes N "
                "batch/eval.py ... (each process takes a shard of the prompts)."})
    harmless_threshold: float = field(default=HARMLESS_THRESHOLD, metadata={
        "help": "A response to a harmful prompt is harmless when reward >= this."})
    helpful_threshold: float = field(default=HELPFUL_THRESHOLD, metadata={
        "help": "A response to a helpful prompt is helpful when reward > this."})
    n_bootstrap: int = field(default=DEFAULT_BOOTSTRAP, metadata={"help": "Bootstrap resamples for the 95% CIs."})
    out: str = field(default="results/eval", metadata={"help": "Output folder (created; reused to resume)."})
    prompts_only: bool = field(default=False, metadata={"help": "Write prompts.jsonl and stop."})
    from_responses: list[str] = field(default_factory=list, metadata={
        "help": "Compute metrics, plots and report from existing records (JSONL/JSON with model, category, prompt, "
                "response, reward) or the study's published folder; loads no model."})
    demo: bool = field(default=False, metadata={
        "help": "Offline demo: tiny untrained models built on the spot and the project's own prompts."})
    plots: bool = field(default=True, metadata={"help": "Write PNG plots."})
    untrained_models: bool = field(default=False, metadata={
        "help": "Label the outputs as a demo of tiny untrained models (set by --demo and the training demo)."})
    push_results_to_hub: str | None = field(default=None, metadata={
        "help": "After the run, publish it as the Hub dataset ORG/NAME: one config per model (its scored responses), "
                "metrics.json, the lm-eval/AlpacaEval exports, a split per evaluation and `latest`, and a dataset "
                "card saying what produced it."})
    results_private: bool = field(default=False, metadata={"help": "Create the results dataset as private."})
    dry_run: bool = field(default=False, metadata={
        "help": "With --push_results_to_hub: write the dataset repo into --staging and upload nothing."})
    staging: str | None = field(default=None, metadata={
        "help": "Folder the results dataset is staged in (kept); needed with --dry_run."})

    def __post_init__(self) -> None:
        from ..publish.hub import check_push, check_repo_id
        from ..refs import is_hub_id, is_local

        check_positive(self, POSITIVE_OPTIONS)
        for name in ("harmless_threshold", "helpful_threshold"):
            if not math.isfinite(getattr(self, name)):
                raise HHAlignError(f"--{name} must be a finite number, got {getattr(self, name)}")
        check_device(self.device)
        if not self.out.strip():
            raise HHAlignError("--out is empty: name the folder to write the results into")
        if self.mode == "fast" and self.dtype != "float32":
            raise HHAlignError(f"--mode fast picks the number format itself; drop --dtype {self.dtype} or use --mode "
                               "fp32")
        if self.demo and self.protocol == "template":
            raise HHAlignError("--demo's tiny OPT models have no chat template, so --protocol template cannot format "
                               "their prompts: use --protocol chat or paper with --demo")
        if self.tensor_parallel_size > 1 and self.backend != "vllm":
            raise HHAlignError(f"--tensor_parallel_size {self.tensor_parallel_size} splits a model over GPUs with "
                               "vLLM: add --backend vllm, or drop --tensor_parallel_size")
        if self.backend == "vllm" and self.mode == "exact":
            raise HHAlignError("--mode exact is the study's loop through transformers, --backend vllm replaces it: "
                               "drop one of them")
        if self.mode in ("fp32", "exact") and self.dtype in ("bfloat16", "float16"):
            raise HHAlignError(f"--mode {self.mode} computes in float32, which --dtype {self.dtype} contradicts: drop "
                               "--dtype, or use --mode fast for a faster number format")
        if self.dataset_hub_id is not None:
            if not is_hub_id(self.dataset_hub_id, namespaced=True):
                raise HHAlignError(f"--dataset_hub_id {self.dataset_hub_id!r} is not a Hub dataset id: write org/name")
            if self.dataset and not is_local(self.dataset):
                raise HHAlignError(f"--dataset_hub_id names the Hub copy of a local --dataset, but --dataset "
                                   f"{self.dataset!r} is not a local folder: drop --dataset_hub_id")
        for mode, why, unused in UNUSED_OPTIONS:
            refuse_unused(self, bool(getattr(self, mode)), f"with --{mode}", why, unused)
        if (self.dry_run or self.staging) and not self.push_results_to_hub:
            raise HHAlignError("--dry_run and --staging stage a results dataset: add --push_results_to_hub ORG/NAME")
        if self.push_results_to_hub:
            check_repo_id(self.push_results_to_hub, "--push_results_to_hub")
            if self.dry_run and not self.staging:
                raise HHAlignError("--dry_run writes the results dataset into --staging DIR: add --staging")
            if not self.dry_run:
                check_push(self.push_results_to_hub, option="--push_results_to_hub",
                           id_option="--push_results_to_hub")
        self._check_judges()

    def _check_judges(self) -> None:
        if isinstance(self.reward_model, str):  # the single reference of older configs and callers
            self.reward_model = [self.reward_model]
        if not self.reward_model:
            raise HHAlignError("--reward_model needs at least one reward model, e.g. "
                               f"--reward_model {DEFAULT_REWARD_MODEL}")
        if self.judge_check is not None and self.judge_check < 0:
            raise HHAlignError(f"--judge_check must be a number of pairs per subset >= 0, got {self.judge_check}")
        if self.from_responses and self.judge_check:
            raise HHAlignError("--judge_check scores pairs with the reward models, which --from_responses never "
                               "loads: drop --judge_check (or run the evaluator on the models)")

    @property
    def judge_pairs(self) -> int:
        """Pairs per subset of the judge check (0: none): the option, else 500 for runs of real models."""
        if self.judge_check is not None:
            return self.judge_check
        return 0 if self.demo or self.untrained_models or self.from_responses or self.prompts_only else DEFAULT_N

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.harmless_threshold, self.helpful_threshold)


POSITIVE_OPTIONS = {"limit": "prompts per category", "n_per_category": "prompts per category",
                    "max_new_tokens": "tokens", "batch_size": "prompts", "reward_batch_size": "pairs",
                    "reward_max_length": "tokens", "n_bootstrap": "resamples", "tensor_parallel_size": "GPUs"}
# Options a mode ignores: giving one is a mistake worth a word (the user expects it to act).
_PROMPTS = ("prompt_set", "dataset", "dataset_hub_id", "split", "n_per_category", "seed")
_MODELS = ("models", "protocol", "max_new_tokens", "batch_size", "reward_batch_size", "reward_max_length", "dtype",
           "mode", "device", "backend", "tensor_parallel_size")
_JUDGE_CHECK = ("judge_dataset", "judge_cache")
UNUSED_OPTIONS = (
    # --reward_model and --judge_thresholds still name and set the thresholds of the imported records' judges.
    ("from_responses", "the records are read, not generated", (*_MODELS, *_PROMPTS, *_JUDGE_CHECK, "demo",
                                                               "prompts_only")),
    ("prompts_only", "it writes prompts.jsonl and stops", (*_MODELS, "reward_model", "judge_formats",
                                                          "judge_thresholds", "judge_check", *_JUDGE_CHECK, "demo",
                                                          "harmless_threshold", "helpful_threshold", "n_bootstrap",
                                                          "plots", "push_results_to_hub")),
    # --reward_model is kept by the demo (several tiny judges, say).
    ("demo", "it builds its own tiny models and uses the demo prompts", ("models", *_PROMPTS)),
)
