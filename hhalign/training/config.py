"""Options of the training scripts: hhalign's data and publishing options, and TRL's SFTConfig/DPOConfig made safe
to build on machines without a bf16 GPU; recipes (YAML) use exactly these names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..data import (
    DEFAULT_DATASET,
    DEMO_PAIRS_PATH,  # noqa: F401 - where the training scripts' users look for it
    SUBSETS,
)
from ..errors import HHAlignError

RUN_FILE = "hhalign_train.json"
LOSS_CSV, LOSS_JSON, LOSS_PNG = "losses.csv", "losses.json", "loss.png"
KINDS = ("sft", "dpo")
SFT_FORMATS = ("text", "prompt_completion")
STAGES = ("sft", "dpo", "sft_dpo")
# The settings that decide what a run learns: a folder's checkpoints may only be resumed (or a finished run reused)
# under the same values. Logging, saving and Hub options may change between runs.
FINGERPRINT_TRAINING_KEYS = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "max_length", "seed", "lr_scheduler_type", "warmup_steps", "weight_decay", "beta", "loss_type",
    "completion_only_loss", "packing",
)
FINGERPRINT_MODEL_KEYS = ("model_name_or_path", "model_revision", "use_peft", "lora_r", "lora_alpha", "lora_dropout",
                          "lora_target_modules")
# Recipe values shown on model cards and in hhalign_train.json.
RECIPE_KEYS = FINGERPRINT_TRAINING_KEYS + ("bf16", "fp16", "activation_checkpointing", "optim", "pad_token",
                                           "truncation_mode")


@dataclass
class ScriptArguments:
    """Data and publishing options shared by ``training/sft.py`` and ``training/dpo.py``."""

    dataset_name: str = field(default=DEFAULT_DATASET, metadata={
        "help": "HH-RLHF Hub id, a local folder laid out like it (e.g. ../shared/data/hh-rlhf), or a JSONL file of "
                "{chosen, rejected} HH transcripts (e.g. hhalign/assets/demo_pairs.jsonl)."})
    subsets: list[str] = field(default_factory=lambda: list(SUBSETS), metadata={
        "help": f"HH-RLHF data directories to train on (default: all four, {', '.join(SUBSETS)}, which is what "
                "load_dataset('Anthropic/hh-rlhf') returns). Ignored for a JSONL file."})
    dataset_train_split: str = field(default="train", metadata={
        "help": "Dataset split (the local copy ../shared/data/hh-rlhf has only 'test')."})
    max_samples: int | None = field(default=None, metadata={
        "help": "Train on a seeded random sample of this many rows (taken before any filtering); default: all."})
    pad_with_eos: bool = field(default=True, metadata={
        "help": "Pad with the EOS token, as the study's notebooks did (ignored when --pad_token is given)."})
    merge_adapter: bool = field(default=False, metadata={
        "help": "With --push_to_hub and a LoRA run: also push the merged weights (in the repo's merged/ folder)."})
    base_model_hub_id: str | None = field(default=None, metadata={
        "help": "Hub id a pushed LoRA adapter names as its base when --model_name_or_path is a local folder (e.g. "
                "the pushed SFT checkpoint for SFT+DPO); it must hold the same weights as that folder."})
    metrics_json: str | None = field(default=None, metadata={
        "help": "With --push_to_hub: the evaluator's metrics.json whose numbers go into the model card."})
    metrics_model: str | None = field(default=None, metadata={
        "help": "Model name in --metrics_json (default: its only model, or the run's role name)."})
    conversational: Literal["auto", "always", "never"] = field(default="auto", metadata={
        "help": "auto: train on chat messages through the base's chat template (TRL's conversational format) when its "
                "tokenizer has one, on HH transcripts as text otherwise (OPT, the study); always: messages, refusing "
                "a base without a template; never: HH transcripts as text."})
    trim_transcripts: bool = field(default=False, metadata={
        "help": "Start every training text at 'Human:', as the evaluation prompts do (the tokenizer then sees "
                "'</s>Human:' in both); HH-RLHF's transcripts, which the study trained on, start '\\n\\nHuman:'."})


@dataclass
class SFTScriptArguments(ScriptArguments):
    """Options of ``training/sft.py`` besides TRL's SFTConfig and ModelConfig."""

    sft_format: str = field(default="text", metadata={
        "help": "text: the whole chosen transcript, loss on every token (the study); prompt_completion: history as "
                "prompt and the final chosen reply as completion, loss on the reply only."})


@dataclass
class DPOScriptArguments(ScriptArguments):
    """Options of ``training/dpo.py`` besides TRL's DPOConfig and ModelConfig."""

    drop_identical_pairs: bool = field(default=False, metadata={
        "help": "Drop pairs whose chosen and rejected final replies are identical: they carry no preference. Their "
                "number is logged and recorded either way."})
    drop_empty_pairs: bool = field(default=False, metadata={"help": "Drop pairs where either reply is empty."})
    drop_truncated_pairs: bool = field(default=False, metadata={
        "help": "Drop pairs where either reply was cut off mid-sentence (ends in a comma, colon or dash, or in an "
                "article, conjunction, preposition or possessive)."})
    filter_reward_model: str | None = field(default=None, metadata={
        "help": "A judge (one-logit reward model, Hub id or folder) that scores every pair's chosen and rejected "
                "reply; pairs it reverses by more than --filter_margin are dropped (counts in hhalign_train.json)."})
    filter_margin: float = field(default=0.0, metadata={
        "help": "Reward units by which the judge may prefer the rejected reply before a pair is dropped: kept when "
                "reward(chosen) - reward(rejected) >= -margin."})
    filter_format: Literal["pair", "chat"] = field(default="pair", metadata={
        "help": "How the filter's judge reads a pair: pair (text pair) or chat (its chat template)."})
    filter_batch_size: int = field(default=16, metadata={"help": "Pairs per forward pass of the filter's judge."})


def script_arguments_class(kind: str) -> type:
    _check_kind(kind)
    return SFTScriptArguments if kind == "sft" else DPOScriptArguments


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise HHAlignError(f"unknown training kind {kind!r}: use one of {', '.join(KINDS)}")


def dataclass_types(kind: str) -> tuple[type, type, type]:
    """(script arguments, TRL trainer config, TRL ModelConfig) of ``training/<kind>.py``."""
    from trl import ModelConfig

    from .trl_config import DPOConfig, SFTConfig

    return script_arguments_class(kind), SFTConfig if kind == "sft" else DPOConfig, ModelConfig


# Option names before they took TRL's names; still accepted on the command line and in recipes.
ALIASES = {"dataset": "dataset_name", "split": "dataset_train_split"}


def parse_args(kind: str, argv: Sequence[str], prog: str | None = None) -> tuple[Any, Any, Any]:
    """``--config recipe`` plus command-line overrides -> (script args, SFTConfig/DPOConfig, ModelConfig)."""
    from ..config import Parser

    return Parser(dataclass_types(kind), prog=prog or f"hhalign {kind}", aliases=ALIASES).parse(argv)
