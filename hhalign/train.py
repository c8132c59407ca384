"""SFT, DPO and SFT+DPO on HH-RLHF with TRL, and the pipeline base -> SFT -> DPO, SFT -> SFT+DPO -> evaluation.

``training/sft.py`` and ``training/dpo.py`` are thin wrappers of :func:`training_main`; ``training/pipeline.py`` wraps
:func:`run_pipeline`. Options are dataclass fields: ours (:class:`SFTScriptArguments`, :class:`DPOScriptArguments`,
:class:`PipelineConfig`) plus TRL's ``SFTConfig`` / ``DPOConfig`` and ``ModelConfig``, so a recipe YAML uses exactly
those names. Every run writes, next to its checkpoint, ``hhalign_train.json`` (settings, data counts, loss summary,
timings), ``losses.csv`` / ``losses.json`` and ``loss.png``; a run that finds checkpoints in its output folder resumes
from the last one, and a finished run is not repeated.

torch, transformers, TRL and PEFT are imported inside the functions that need them.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import difflib
import functools
import json
import os
import random
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import DEFAULT_DATASET, SUBSETS, preference_pair
from .errors import HHAlignError
from .models import DEFAULT_REWARD_MODEL

ROOT = Path(__file__).resolve().parents[1]
TRAINING_DIR = ROOT / "training"
RECIPES_DIR = TRAINING_DIR / "recipes"
DEMO_PAIRS_PATH = Path(__file__).parent / "assets" / "demo_pairs.jsonl"
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


# --- options ------------------------------------------------------------------------------------------------------


@dataclass
class ScriptArguments:
    """Data and publishing options shared by ``training/sft.py`` and ``training/dpo.py``."""

    dataset: str = field(default=DEFAULT_DATASET, metadata={
        "help": "HH-RLHF Hub id, a local folder laid out like it (e.g. ../shared/data/hh-rlhf), or a JSONL file of "
                "{chosen, rejected} HH transcripts (e.g. hhalign/assets/demo_pairs.jsonl)."})
    subsets: list[str] = field(default_factory=lambda: list(SUBSETS), metadata={
        "help": f"HH-RLHF data directories to train on (default: all four, {', '.join(SUBSETS)}, which is what "
                "load_dataset('Anthropic/hh-rlhf') returns). Ignored for a JSONL file."})
    split: str = field(default="train", metadata={
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


def script_arguments_class(kind: str) -> type:
    _check_kind(kind)
    return SFTScriptArguments if kind == "sft" else DPOScriptArguments


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise HHAlignError(f"unknown training kind {kind!r}: use one of {', '.join(KINDS)}")


def has_bf16_device() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@functools.cache
def config_class(kind: str) -> type:
    """TRL's SFTConfig or DPOConfig, made safe to build where no GPU can run mixed precision.

    TRL defaults to bf16=True and transformers refuses that without a bf16 GPU; a recipe written for a GPU (the
    improved set asks for bf16) must still load and run on a CPU, in float32, with the change recorded.
    """
    _check_kind(kind)
    from trl import DPOConfig, SFTConfig

    base = SFTConfig if kind == "sft" else DPOConfig

    def __post_init__(self) -> None:
        self.hhalign_precision_note = None
        asked = "fp16" if self.fp16 else ("bf16" if self.bf16 is not False else None)
        if asked == "bf16" and not has_bf16_device() or asked == "fp16" and not _cuda_available():
            self.hhalign_precision_note = f"{asked} asked for but no GPU supports it here: trained in float32"
            self.bf16 = False
            self.fp16 = False
        if not _cuda_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; on a CPU it only warns
        base.__post_init__(self)

    # Named like TRL's class and reachable as hhalign.train.<name> (module __getattr__), so the Trainer can pickle it.
    return dataclass(type(base.__name__, (base,), {"__post_init__": __post_init__, "__doc__": base.__doc__,
                                                   "__module__": __name__, "__qualname__": base.__name__}))


def __getattr__(name: str) -> Any:
    if name in ("SFTConfig", "DPOConfig"):
        return config_class(name[:3].lower())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def dataclass_types(kind: str) -> tuple[type, type, type]:
    """(script arguments, TRL trainer config, TRL ModelConfig) of ``training/<kind>.py``."""
    from trl import ModelConfig

    return script_arguments_class(kind), config_class(kind), ModelConfig


def _field_names(types: Sequence[type]) -> set[str]:
    return {f.name for t in types for f in dataclasses.fields(t)}


def _unknown_key_message(keys: Sequence[str], known: set[str]) -> str:
    parts = []
    for key in keys:
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        parts.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    return ", ".join(parts)


def read_recipe(path: str | Path, types: Sequence[type], script: str) -> dict:
    """A recipe's values, refusing keys that are not option names (typos would otherwise be silently ignored)."""
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise HHAlignError(f"--config {str(path)!r} cannot be read ({exc.strerror}): check the path") from None
    except yaml.YAMLError as exc:
        raise HHAlignError(f"--config {str(path)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    values = values or {}
    if not isinstance(values, dict):
        raise HHAlignError(f"--config {str(path)!r} must be a mapping of option names to values")
    known = _field_names(types) | {"env"}
    unknown = [k for k in values if k not in known]
    if unknown:
        raise HHAlignError(f"{path}: unknown key(s) {_unknown_key_message(unknown, known)}; recipe keys are the "
                           f"option names of {script} --help")
    return values


def _parser(types: Sequence[type], description: str = "") -> Any:
    import argparse

    from trl import TrlParser

    class Parser(TrlParser):
        def error(self, message: str):  # argparse would print usage and exit; one line is enough
            raise HHAlignError(f"{message}; see --help")

    return Parser(list(types), description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_args(kind: str, argv: Sequence[str] | None = None, description: str = "") -> tuple[Any, Any, Any]:
    """``--config recipe.yaml`` plus command-line overrides -> (script args, SFTConfig/DPOConfig, ModelConfig)."""
    types = dataclass_types(kind)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise HHAlignError("--config needs a recipe YAML path, e.g. --config training/recipes/sft.yaml")
        read_recipe(argv[i + 1], types, f"training/{kind}.py")
    parser = _parser(types, description)
    try:
        *parsed, remaining = parser.parse_args_and_config(argv, return_remaining_strings=True)
    except ValueError as exc:  # raised by the configs' __post_init__ for inconsistent values
        raise HHAlignError(f"invalid training options: {str(exc).splitlines()[0]}") from None
    if remaining:
        flags = [r.lstrip("-").split("=")[0] for r in remaining if r.startswith("--")] or remaining
        raise HHAlignError(f"unknown option(s) {_unknown_key_message(flags, _field_names(types))}; see "
                           f"training/{kind}.py --help")
    return tuple(parsed)


# --- data ---------------------------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """The examples a trainer sees and how they were obtained (recorded with the run and on the model card)."""

    examples: list[dict]
    info: dict


def read_pairs_file(path: str | Path) -> list[dict]:
    """Rows ``{"chosen", "rejected"}`` (HH transcripts) from a JSONL file."""
    from .data import json_lines

    path = Path(path)
    rows = []
    for lineno, obj in json_lines(path, "{chosen, rejected} object"):
        if not all(isinstance(obj.get(k), str) for k in ("chosen", "rejected")):
            raise HHAlignError(f"{path}:{lineno}: needs string fields 'chosen' and 'rejected' (HH transcripts)")
        rows.append({"chosen": obj["chosen"], "rejected": obj["rejected"]})
    return rows


def load_rows(dataset: str, subsets: Sequence[str], split: str,
              log: Callable[[str], None] = print) -> tuple[list, dict]:
    """HH rows of every subset (concatenated in the given order) or of a JSONL file, with per-source counts."""
    path = Path(dataset).expanduser()
    if path.is_file() or dataset.endswith((".jsonl", ".json")):
        if not path.is_file():
            raise HHAlignError(f"--dataset {dataset!r} does not exist: pass a JSONL file, a folder or a Hub id")
        rows = read_pairs_file(path)
        return rows, {path.name: len(rows)}
    if not subsets:
        raise HHAlignError("--subsets is empty: name at least one of " + ", ".join(SUBSETS))
    if dataset == DEFAULT_DATASET:
        bad = [s for s in subsets if s not in SUBSETS]
        if bad:
            raise HHAlignError(f"unknown HH-RLHF subset(s) {', '.join(bad)}: use {', '.join(SUBSETS)}")
    from .data import load_hh

    rows: list[dict] = []
    counts = {}
    for subset in subsets:
        # A stray malformed row in 160k must not stop a run; rows that do not parse into a pair are counted below.
        part = load_hh(dataset, subset, split, skip_bad_rows=True)
        counts[subset] = len(part)
        rows.extend(part)
        log(f"loaded {len(part)} rows of {dataset} {subset} {split}")
    return rows, counts


def _sample(rows: list, max_samples: int | None, seed: int) -> list:
    if max_samples is None or max_samples >= len(rows):
        return rows
    if max_samples <= 0:
        raise HHAlignError(f"--max_samples must be a positive number of rows, got {max_samples}")
    keep = sorted(random.Random(seed).sample(range(len(rows)), max_samples))
    return [rows[i] for i in keep]


def _pairs(rows: list[dict]) -> tuple[list, int]:
    """Preference pairs parsed exactly as the evaluator parses transcripts; malformed rows are counted, not fatal."""
    pairs, malformed = [], 0
    for row in rows:
        try:
            pairs.append(preference_pair(row))
        except HHAlignError:
            malformed += 1
    return pairs, malformed


def sft_examples(rows: list[dict], sft_format: str) -> tuple[list[dict], dict]:
    """``text`` = the chosen transcript as is; ``prompt_completion`` = (history up to the last cue, final reply)."""
    if sft_format == "text":
        return [{"text": r["chosen"]} for r in rows], {"format": "text (chosen transcript)", "malformed_rows": 0}
    if sft_format != "prompt_completion":
        raise HHAlignError(f"unknown --sft_format {sft_format!r}: use one of {', '.join(SFT_FORMATS)}")
    pairs, malformed = _pairs(rows)
    examples = [{"prompt": p.prompt, "completion": p.chosen} for p in pairs]
    return examples, {"format": "prompt_completion (history -> final chosen reply)", "malformed_rows": malformed}


def dpo_examples(rows: list[dict], drop_identical: bool) -> tuple[list[dict], dict]:
    """(prompt, chosen, rejected) from :func:`hhalign.data.preference_pair`, optionally without identical replies."""
    pairs, malformed = _pairs(rows)
    identical = sum(p.chosen == p.rejected for p in pairs)
    if drop_identical:
        pairs = [p for p in pairs if p.chosen != p.rejected]
    examples = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    return examples, {"format": "preference (prompt, chosen, rejected)", "malformed_rows": malformed,
                      "identical_pairs": identical, "dropped_identical_pairs": identical if drop_identical else 0}


def build_training_data(kind: str, script_args: ScriptArguments, seed: int = 42,
                        log: Callable[[str], None] = print) -> TrainingData:
    """Load, sample and convert the rows a run trains on; refuse an empty result with the counts that explain it."""
    rows, counts = load_rows(script_args.dataset, script_args.subsets, script_args.split, log)
    rows = _sample(rows, script_args.max_samples, seed)
    if kind == "sft":
        examples, info = sft_examples(rows, script_args.sft_format)
    else:
        examples, info = dpo_examples(rows, script_args.drop_identical_pairs)
    info = {"dataset": script_args.dataset, "subsets": counts, "split": script_args.split,
            "max_samples": script_args.max_samples, "rows": len(rows), **info, "examples": len(examples)}
    if kind == "dpo":
        verb = "dropped" if script_args.drop_identical_pairs else "kept (as in the study)"
        log(f"{info['identical_pairs']} of {len(rows)} pairs have identical chosen and rejected replies: {verb}")
    if info["malformed_rows"]:
        log(f"skipped {info['malformed_rows']} rows without Human/Assistant turns")
    if not examples:
        raise HHAlignError(f"no training examples left after filtering ({len(rows)} rows from {script_args.dataset!r} "
                           f"{', '.join(counts)} split {script_args.split!r}, "
                           f"{info.get('dropped_identical_pairs', 0)} identical pairs dropped, "
                           f"{info['malformed_rows']} malformed): use other data or filters")
    return TrainingData(examples, info)


def to_dataset(examples: list[dict]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({key: [e[key] for e in examples] for key in examples[0]})


# --- run records --------------------------------------------------------------------------------------------------


def read_record(output_dir: str | Path) -> dict | None:
    path = Path(output_dir) / RUN_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise HHAlignError(f"{path} cannot be read ({exc}); delete it to start the run afresh") from None


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _resolve_ref(ref: str | None) -> str | None:
    if ref and (ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists()):
        return str(Path(ref).expanduser().resolve())
    return ref


def fingerprint(kind: str, script_args: Any, training_args: Any, model_args: Any) -> dict:
    """The settings a folder's checkpoints belong to (see ``FINGERPRINT_*_KEYS``)."""
    fp: dict = {"kind": kind}
    data_keys = ["dataset", "subsets", "split", "max_samples"]
    data_keys.append("sft_format" if kind == "sft" else "drop_identical_pairs")
    for key in data_keys:
        fp[key] = getattr(script_args, key)
    fp["dataset"] = _resolve_ref(fp["dataset"])
    for key in FINGERPRINT_MODEL_KEYS:
        fp[key] = getattr(model_args, key, None)
    fp["model_name_or_path"] = _resolve_ref(fp["model_name_or_path"])
    for key in FINGERPRINT_TRAINING_KEYS:
        if hasattr(training_args, key):
            fp[key] = getattr(training_args, key)
    return json.loads(json.dumps(fp, default=str))


def _check_same_run(out: Path, record: dict, fp: dict) -> None:
    old = record.get("fingerprint", {})
    changed = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
    if changed:
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {fp.get(k)!r}" for k in changed[:4])
        raise HHAlignError(f"--output_dir {str(out)!r} holds a run with other settings ({detail}); use a new "
                           "--output_dir, or the same settings to resume or reuse it")


def recipe_values(training_args: Any, model_args: Any) -> dict:
    values = {k: getattr(training_args, k) for k in RECIPE_KEYS if hasattr(training_args, k)}
    if getattr(model_args, "use_peft", False):
        values.update(lora_r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                      lora_target_modules=model_args.lora_target_modules, lora_bias="none")
    values["dtype"] = getattr(model_args, "dtype", None)
    return json.loads(json.dumps(values, default=str))


# --- losses -------------------------------------------------------------------------------------------------------


def loss_rows(log_history: Sequence[dict]) -> list[dict]:
    """The per-step training logs (those with a ``loss``), one row per step, last write wins."""
    by_step: dict[int, dict] = {}
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            by_step[int(entry["step"])] = {k: v for k, v in entry.items() if isinstance(v, (int, float))}
    return [by_step[s] for s in sorted(by_step)]


def write_loss_files(output_dir: str | Path, log_history: Sequence[dict], plot: bool = True, title: str = "") -> dict:
    """losses.csv, losses.json and (optionally) loss.png from a trainer's log history; returns the file paths."""
    out = Path(output_dir)
    rows = loss_rows(log_history)
    keys = ["step", "epoch", "loss"] + sorted({k for r in rows for k in r} - {"step", "epoch", "loss"})
    with open(out / LOSS_CSV, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    _write_json(out / LOSS_JSON, rows)
    paths = {"csv": str(out / LOSS_CSV), "json": str(out / LOSS_JSON)}
    if plot and rows:
        paths["png"] = str(plot_losses(rows, out / LOSS_PNG, title))
    return paths


def plot_losses(rows: Sequence[dict], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpo = any("rewards/margins" in r for r in rows)
    fig, axes = plt.subplots(1, 2 if dpo else 1, figsize=(10 if dpo else 6, 3.6), squeeze=False)
    steps = [r["step"] for r in rows]
    ax = axes[0][0]
    ax.plot(steps, [r["loss"] for r in rows], marker="." if len(rows) < 50 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    if dpo:
        ax2 = axes[0][1]
        ax2.plot(steps, [r.get("rewards/margins", float("nan")) for r in rows], label="reward margin")
        ax2.plot(steps, [r.get("rewards/accuracies", float("nan")) for r in rows], label="reward accuracy")
        ax2.set_xlabel("optimizer step")
        ax2.legend()
        ax2.grid(alpha=0.3)
    fig.suptitle(title or "training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_summary(log_history: Sequence[dict]) -> dict:
    rows = loss_rows(log_history)
    losses = [r["loss"] for r in rows]
    summary: dict = {"logged_steps": len(rows)}
    if losses:
        tail = losses[-max(1, len(losses) // 10):]
        summary.update(first_step=rows[0]["step"], last_step=rows[-1]["step"], first=losses[0], last=losses[-1],
                       min=min(losses), mean_last_10pct=sum(tail) / len(tail))
    final = next((e for e in reversed(log_history) if "train_loss" in e), None)
    if final:
        summary["train_loss"] = final["train_loss"]
    return summary


def _loss_callback(output_dir: Path, title: str) -> Any:
    from transformers import TrainerCallback

    class LossFiles(TrainerCallback):
        """Keep losses.csv/json current at every log, so a killed run still has its curve."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero:
                write_loss_files(output_dir, state.log_history, plot=False)

    return LossFiles()


# --- models -------------------------------------------------------------------------------------------------------


def check_start_model(model_args: Any, trust_remote_code: bool = False) -> Any:
    """The start model's reference, after checking that it exists and holds full weights (its config only)."""
    from . import models as hmodels

    name = model_args.model_name_or_path
    if not name:
        raise HHAlignError("no model to train: set model_name_or_path in the recipe or pass --model_name_or_path")
    ref = hmodels.parse_model_ref(name)
    if model_args.model_revision and model_args.model_revision != "main":
        ref = hmodels.ModelRef(ref.name, ref.ref, model_args.model_revision)
    hmodels.check_ref(ref)
    if hmodels.adapter_config(ref) is not None:
        raise HHAlignError(f"--model_name_or_path {name!r} is a LoRA adapter; training starts from full weights: "
                           "push or save the merged model (--merge_adapter) and start from that")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(ref.path, revision=ref.revision, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - the loaders raise many types; the user needs one line
        raise hmodels.load_error(ref, exc) from None
    return ref


def load_start_model(model_args: Any, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """The model a run starts from and its tokenizer, with one-line errors for missing or unusable models."""
    from . import models as hmodels

    ref = check_start_model(model_args, trust_remote_code)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_quantization_config

    try:
        model = AutoModelForCausalLM.from_pretrained(
            ref.path, revision=ref.revision, dtype=model_args.dtype,
            attn_implementation=model_args.attn_implementation,
            quantization_config=get_quantization_config(model_args), trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(ref.path, revision=ref.revision, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        raise hmodels.load_error(ref, exc) from None
    return model, tokenizer


# --- one training run ---------------------------------------------------------------------------------------------


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu"


def check_push_request(training_args: Any, script_args: ScriptArguments, model_args: Any) -> str | None:
    """Validate a push before any training, so a bad id or a missing token costs nothing; returns the token."""
    if not training_args.push_to_hub:
        return None
    from .hub import check_push

    token = check_push(training_args.hub_model_id, training_args.hub_token)
    local_base = _resolve_ref(model_args.model_name_or_path) != model_args.model_name_or_path
    if model_args.use_peft and local_base and not script_args.base_model_hub_id:
        raise HHAlignError(f"the adapter would name the local folder {model_args.model_name_or_path!r} as its base, "
                           "which nobody can download: pass --base_model_hub_id org/name (that folder, pushed)")
    return token


def run_training(kind: str, script_args: ScriptArguments, training_args: Any, model_args: Any, *,
                 command: str | None = None, callbacks: Sequence[Any] = (), role: str | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """Train (or resume, or reuse a finished run in ``output_dir``), save, record, and push when asked.

    Returns the run record written to ``hhalign_train.json``.
    """
    _check_kind(kind)
    if not training_args.output_dir:
        raise HHAlignError("no --output_dir: set output_dir in the recipe or on the command line")
    out = Path(training_args.output_dir).expanduser()
    push = bool(training_args.push_to_hub)
    token = check_push_request(training_args, script_args, model_args)
    # Trainer.push_to_hub would upload every checkpoint with TRL's card, which drops eval numbers: we push once.
    training_args.push_to_hub = False
    if kind == "sft" and script_args.sft_format not in SFT_FORMATS:
        raise HHAlignError(f"unknown --sft_format {script_args.sft_format!r}: use one of {', '.join(SFT_FORMATS)}")
    fp = fingerprint(kind, script_args, training_args, model_args)
    record = read_record(out)
    if record is not None:
        _check_same_run(out, record, fp)
    if record is not None and record.get("status") == "finished":
        steps = record.get("timing", {}).get("global_step")
        log(f"{out}: finished {kind} run found ({steps} steps); not training again")
    else:
        record = _train(kind, script_args, training_args, model_args, out, fp, command, callbacks, role, log)
    if push and _is_main_process():
        from .hub import push_checkpoint

        push_checkpoint(out, training_args.hub_model_id, token=token, private=bool(training_args.hub_private_repo),
                        merge_adapter=script_args.merge_adapter, metrics_json=script_args.metrics_json,
                        metrics_model=script_args.metrics_model or (None if role is None else role),
                        base_model_hub_id=script_args.base_model_hub_id, log=log)
    return record


def _train(kind: str, script_args: ScriptArguments, training_args: Any, model_args: Any, out: Path, fp: dict,
           command: str | None, callbacks: Sequence[Any], role: str | None,
           log: Callable[[str], None]) -> dict:
    from transformers.trainer_utils import get_last_checkpoint

    # Cheap checks first: a model that does not exist must fail before minutes of data loading, and data that
    # filter down to nothing before the weights are loaded.
    check_start_model(model_args, training_args.trust_remote_code)
    data = build_training_data(kind, script_args, training_args.seed, log)
    model, tokenizer = load_start_model(model_args, training_args.trust_remote_code)
    log(f"{kind}: {data.info['examples']} examples ({data.info['format']})")
    if script_args.pad_with_eos and training_args.pad_token is None:
        training_args.pad_token = tokenizer.eos_token
    note = getattr(training_args, "hhalign_precision_note", None)
    if note:
        log(f"note: {note}")
    out.mkdir(parents=True, exist_ok=True)
    resume = training_args.resume_from_checkpoint or get_last_checkpoint(str(out))
    title = f"{(role or kind).upper()} - {out.name}"
    trainer = build_trainer(kind, model, tokenizer, to_dataset(data.examples), training_args, model_args,
                            [_loss_callback(out, title), *callbacks])
    main = trainer.is_world_process_zero()
    record = {
        "status": "running", "kind": kind, "role": role, "fingerprint": fp, "command": command,
        "model": {"name_or_path": model_args.model_name_or_path, "revision": model_args.model_revision,
                  "adapter": bool(model_args.use_peft), "base_model_hub_id": script_args.base_model_hub_id},
        "data": data.info, "recipe": recipe_values(training_args, model_args), "precision_note": note,
    }
    if main:
        _write_json(out / RUN_FILE, record)
    if resume:
        log(f"resuming from {resume}")
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    elapsed = time.perf_counter() - started
    trainer.save_model(str(out))
    if not main:
        return record
    tokenizer.save_pretrained(str(out))
    start_step = _checkpoint_step(resume)
    steps_run = max(trainer.state.global_step - start_step, 1)
    losses = write_loss_files(out, trainer.state.log_history, title=title)
    from .evaluate import package_versions

    record.update(
        status="finished", resumed_from=str(resume) if resume else None, loss=loss_summary(trainer.state.log_history),
        loss_files={k: Path(v).name for k, v in losses.items()},
        timing={"global_step": trainer.state.global_step, "steps_this_run": steps_run, "wall_s": round(elapsed, 3),
                "train_runtime_s": result.metrics.get("train_runtime"),
                "seconds_per_step": round(elapsed / steps_run, 4),
                "device": _device_name(), "world_size": training_args.world_size},
        packages=package_versions(), finished=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
    _write_json(out / RUN_FILE, record)
    from .hub import write_local_card

    write_local_card(out)
    log(f"{kind}: saved to {out} ({trainer.state.global_step} steps, {record['timing']['seconds_per_step']} s/step, "
        f"final loss {record['loss'].get('last')})")
    return record


def _checkpoint_step(path: Any) -> int:
    if not path:
        return 0
    try:
        return int(Path(str(path)).name.rsplit("-", 1)[-1])
    except ValueError:
        return 0


def build_trainer(kind: str, model: Any, tokenizer: Any, dataset: Any, training_args: Any, model_args: Any,
                  callbacks: Sequence[Any] = ()) -> Any:
    """TRL's SFTTrainer or DPOTrainer; with ``use_peft`` a LoRA adapter (for DPO the frozen base is the reference)."""
    from trl import DPOTrainer, SFTTrainer, get_peft_config

    peft_config = get_peft_config(model_args)
    try:
        if kind == "sft":
            return SFTTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                              peft_config=peft_config, callbacks=list(callbacks))
        return DPOTrainer(model=model, ref_model=None, args=training_args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=list(callbacks))
    except ValueError as exc:  # TRL reports inconsistent options (pad token, LoRA targets, ...) as ValueError
        raise HHAlignError(f"cannot set up the {kind} trainer: {str(exc).splitlines()[0]}") from None


def format_command(script: str, argv: Sequence[str]) -> str:
    return shlex.join(["python", script, *argv])


def training_main(kind: str, argv: Sequence[str] | None = None, description: str = "") -> int:
    """``training/<kind>.py``: parse, run, and print user errors as one line (exit 2) without a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    output_dir = "the output folder"
    try:
        script_args, training_args, model_args = parse_args(kind, argv, description)
        output_dir = training_args.output_dir
        run_training(kind, script_args, training_args, model_args, command=format_command(f"training/{kind}.py", argv))
    except HHAlignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"interrupted: checkpoints in {output_dir} are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    return 0


# --- the pipeline -------------------------------------------------------------------------------------------------


@dataclass
class PipelineConfig:
    """Options of ``training/pipeline.py``; every field is a flag and a key of its ``--config`` YAML."""

    sft_recipe: str = field(default="training/recipes/sft.yaml", metadata={"help": "Recipe of the SFT stage."})
    dpo_recipe: str = field(default="training/recipes/dpo.yaml", metadata={
        "help": "Recipe of the DPO stage (DPO on the base model)."})
    sft_dpo_recipe: str = field(default="training/recipes/sft_dpo.yaml", metadata={
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
                "training/accelerate/multi_gpu.yaml' (default: in this process)."})
    evaluate: bool = field(default=True, metadata={"help": "Evaluate base, sft, dpo and sft_dpo with batch/eval.py."})
    prompt_set: str = field(default="paper", metadata={"help": "Evaluation prompt set (see batch/eval.py)."})
    eval_dataset: str = field(default=DEFAULT_DATASET, metadata={"help": "HH-RLHF copy the eval prompts come from."})
    eval_split: str = field(default="test", metadata={"help": "Split the eval prompts come from."})
    eval_limit: int | None = field(default=None, metadata={"help": "Evaluate the first N prompts per category."})
    reward_model: str = field(default=DEFAULT_REWARD_MODEL, metadata={"help": "Reward model of the evaluation."})
    protocol: str = field(default="paper", metadata={"help": "Evaluation protocol: paper or chat."})
    eval_batch_size: int = field(default=8, metadata={"help": "Evaluation generation batch size."})
    eval_dtype: str = field(default="float32", metadata={"help": "Evaluation dtype (the study: float32)."})
    eval_device: str = field(default="auto", metadata={"help": "Evaluation device: auto, cpu, cuda."})
    n_bootstrap: int = field(default=10_000, metadata={"help": "Bootstrap resamples for the 95 percent CIs."})
    push_to_hub: bool = field(default=False, metadata={
        "help": "After evaluation, push sft, dpo and sft_dpo with model cards that carry their metrics."})
    hub_model_prefix: str | None = field(default=None, metadata={
        "help": "org/name prefix of the pushed repos: PREFIX-sft, PREFIX-dpo, PREFIX-sft-dpo."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repos as private."})
    merge_adapter: bool = field(default=False, metadata={"help": "Also push merged weights of LoRA stages."})
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
        argv += [f"--{key.lstrip('-')}", value]
    return argv


def stage_argv(cfg: PipelineConfig, stage: str, out: Path, base: str | None, demo: dict) -> list[str]:
    """The command-line arguments of one stage: its recipe, then the pipeline's overrides."""
    recipe = {"sft": cfg.sft_recipe, "dpo": cfg.dpo_recipe, "sft_dpo": cfg.sft_dpo_recipe}[stage]
    argv = ["--config", str(_repo_path(recipe)), "--output_dir", str(out / stage)]
    if stage == "sft_dpo":
        argv += ["--model_name_or_path", str(out / "sft")]
    elif base:
        argv += ["--model_name_or_path", base]
    for key in ("dataset", "split", "max_samples", "max_steps"):
        value = getattr(cfg, key)
        if value is not None:
            argv += [f"--{key}", str(value)]
    if cfg.subsets:
        argv += ["--subsets", *cfg.subsets]
    for key, value in demo.items():
        argv += [f"--{key}", value]
    if demo:
        argv += ["--learning_rate", DEMO_LEARNING_RATE[STAGE_KIND[stage]]]
    argv += _kv_args(cfg.sft_overrides if stage == "sft" else cfg.dpo_overrides,
                     "sft_overrides" if stage == "sft" else "dpo_overrides")
    return argv


def _repo_path(path: str) -> Path:
    """Recipe paths are relative to the working directory, or else to the repository."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    return ROOT / p if (ROOT / p).exists() else p


def run_pipeline(cfg: PipelineConfig, log: Callable[[str], None] = print) -> dict:
    """base -> SFT -> DPO and SFT -> SFT+DPO, then the evaluator on all four, then push and record when asked."""
    out = Path(cfg.output_dir).expanduser()
    reward, prompt_set, eval_dataset, demo_args = cfg.reward_model, cfg.prompt_set, cfg.eval_dataset, {}
    if cfg.demo:
        if cfg.push_to_hub:
            raise HHAlignError("--demo trains throwaway tiny models: it cannot be combined with --push_to_hub")
        import torch

        from .tiny import build_tiny

        # A 64-wide model gains nothing from several threads, and on a busy CPU their synchronisation makes every
        # step many times slower.
        torch.set_num_threads(1)
        log(f"demo: building the tiny models in {out / 'tiny'}")
        tiny = build_tiny(out / "tiny")
        reward, prompt_set, eval_dataset = str(tiny.reward), "demo", ""
        cfg = dataclasses.replace(cfg, base_model=str(tiny.policy), dataset=cfg.dataset or str(DEMO_PAIRS_PATH),
                                  max_steps=cfg.max_steps or cfg.demo_steps, eval_device="cpu",
                                  n_bootstrap=min(cfg.n_bootstrap, 1000))
        demo_args = dict(DEMO_OVERRIDES)
    # One base for SFT, DPO and the evaluation: the option, else the SFT recipe's model.
    base = cfg.base_model or parse_args("sft", ["--config", str(_repo_path(cfg.sft_recipe))])[2].model_name_or_path
    if cfg.push_to_hub:
        check_pipeline_push(cfg, base)
    out.mkdir(parents=True, exist_ok=True)
    records = {}
    for stage in STAGES:
        argv = stage_argv(cfg, stage, out, base, demo_args)
        kind = STAGE_KIND[stage]
        log(f"== {stage}: {format_command(f'training/{kind}.py', argv)}")
        if cfg.launcher:
            _run_launched(cfg.launcher, kind, argv, stage)
            records[stage] = read_record(out / stage)
        else:
            script_args, training_args, model_args = parse_args(kind, argv)
            records[stage] = run_training(kind, script_args, training_args, model_args, role=stage, log=log,
                                          command=format_command(f"training/{kind}.py", argv))
    metrics_path = None
    if cfg.evaluate:
        metrics_path = _evaluate(cfg, out, base, reward, prompt_set, eval_dataset, log)
        if cfg.demo:
            log("demo: tiny models trained for a few steps, judged by a tiny random reward model; the numbers only "
                "show that the pipeline works end to end")
    pushed = publish_stages(cfg, out, metrics_path, base, records, log) if cfg.push_to_hub else {}
    return {"output_dir": str(out), "records": records, "metrics": str(metrics_path) if metrics_path else None,
            "pushed": pushed}


def check_pipeline_push(cfg: PipelineConfig, base: str) -> None:
    """Everything a push at the end needs, checked before hours of training."""
    from .hub import check_push

    if not cfg.hub_model_prefix:
        raise HHAlignError("--push_to_hub needs --hub_model_prefix org/name (repos PREFIX-sft, PREFIX-dpo and "
                           "PREFIX-sft-dpo are created)")
    if not cfg.evaluate:
        raise HHAlignError("--push_to_hub publishes evaluated checkpoints: drop --evaluate false")
    for stage in STAGES:
        check_push(f"{cfg.hub_model_prefix}-{HUB_SUFFIX[stage]}")
    if _resolve_ref(base) != base and not cfg.base_model_hub_id:
        raise HHAlignError(f"the DPO adapter would name the local folder {base!r} as its base: pass "
                           "--base_model_hub_id org/name (that model on the Hub) or a Hub id as --base_model")


def _run_launched(launcher: str, kind: str, argv: list[str], stage: str) -> None:
    import subprocess

    cmd = [*shlex.split(launcher), str(TRAINING_DIR / f"{kind}.py"), *argv]
    rc = subprocess.run(cmd, check=False).returncode
    if rc != 0:
        raise HHAlignError(f"stage {stage} failed (exit status {rc}); fix the error above and run the pipeline "
                           "again: finished stages are skipped")


def eval_models(out: Path, base: str) -> list[str]:
    return [f"base={base}", f"sft={out / 'sft'}", f"dpo={out / 'dpo'}", f"sft_dpo={out / 'sft_dpo'}"]


def _evaluate(cfg: PipelineConfig, out: Path, base: str, reward: str, prompt_set: str, eval_dataset: str,
              log: Callable[[str], None]) -> Path:
    from .evaluate import FILES, EvalConfig, run

    eval_cfg = EvalConfig(models=eval_models(out, base), reward_model=reward, dataset=eval_dataset,
                          split=cfg.eval_split, prompt_set=prompt_set, limit=cfg.eval_limit, protocol=cfg.protocol,
                          batch_size=cfg.eval_batch_size, dtype=cfg.eval_dtype, device=cfg.eval_device,
                          n_bootstrap=cfg.n_bootstrap, out=str(out / "eval"), untrained_models=cfg.demo)
    log(f"== eval: python batch/eval.py --models {' '.join(eval_cfg.models)} --out {eval_cfg.out}")
    run(eval_cfg, log=log)
    return out / "eval" / FILES["metrics"]


def publish_stages(cfg: PipelineConfig, out: Path, metrics_path: Path, base: str, records: dict,
                   log: Callable[[str], None] = print) -> dict:
    """Push sft, dpo and sft_dpo with their measured metrics; record each in the registry and models.md."""
    from .hub import push_checkpoint, registry_metrics, update_registry

    pushed: dict = {}
    for stage in STAGES:  # SFT first: the SFT+DPO adapter names the pushed SFT repo as its base
        base_hub = pushed.get("sft") if stage == "sft_dpo" else cfg.base_model_hub_id if stage == "dpo" else None
        result = push_checkpoint(out / stage, f"{cfg.hub_model_prefix}-{HUB_SUFFIX[stage]}",
                                 private=cfg.hub_private_repo, merge_adapter=cfg.merge_adapter,
                                 metrics_json=metrics_path, metrics_model=stage, base_model_hub_id=base_hub, log=log)
        pushed[stage] = result["repo_id"]
        if cfg.update_registry:
            record = records.get(stage) or {}
            update_registry(f"{stage}{cfg.registry_suffix}", role=stage, ref=result["repo_id"],
                            metrics=registry_metrics(metrics_path, stage), recipe=_recipe_label(cfg, stage),
                            command=record.get("command"), registry_path=cfg.registry_path, models_md=cfg.models_md,
                            log=log)
    if cfg.update_registry:
        from .hub import update_base_metrics

        update_base_metrics(base, registry_metrics(metrics_path, "base"), registry_path=cfg.registry_path,
                            models_md=cfg.models_md, log=log)
    return pushed


def _recipe_label(cfg: PipelineConfig, stage: str) -> str:
    recipe = _repo_path({"sft": cfg.sft_recipe, "dpo": cfg.dpo_recipe, "sft_dpo": cfg.sft_dpo_recipe}[stage])
    try:
        return str(recipe.resolve().relative_to(ROOT))
    except ValueError:
        return str(recipe)
