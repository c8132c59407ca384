"""One training run (SFT or DPO): check everything cheap first, train or resume, save, record, push."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cli import current_command
from ..errors import HHAlignError
from ..files import check_writable, write_json
from ..loading import quiet_peft
from .checkpoints import resume_checkpoint
from .config import (
    FINGERPRINT_MODEL_KEYS,
    FINGERPRINT_TRAINING_KEYS,
    RECIPE_KEYS,
    RUN_FILE,
    SFT_FORMATS,
    ScriptArguments,
    _check_kind,
    dataclass_types,
)
from .data import build_training_data, conversational, to_dataset
from .losses import _loss_callback, loss_summary, write_loss_files

logger = logging.getLogger(__name__)
NEW_DATA_KEYS = ("trim_transcripts", "drop_empty_pairs", "drop_truncated_pairs", "filter_reward_model",
                 "filter_margin", "filter_format", "conversational")


def read_record(output_dir: str | Path) -> dict | None:
    """The run record of ``output_dir``, None when there is none yet; a damaged one is a one-line error."""
    from ..publish.card import read_run_record

    return read_run_record(output_dir) if (Path(output_dir) / RUN_FILE).exists() else None


def _resolve_ref(ref: str | None) -> str | None:
    if ref and (ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists()):
        return str(Path(ref).expanduser().resolve())
    return ref


def fingerprint(kind: str, script_args: Any, training_args: Any, model_args: Any) -> dict:
    """The settings a folder's checkpoints belong to (see ``FINGERPRINT_*_KEYS``)."""
    fp: dict = {"kind": kind}
    # Recorded under their short names: "dataset" and "split".
    data_keys = {"dataset": "dataset_name", "subsets": "subsets", "split": "dataset_train_split",
                 "max_samples": "max_samples"}
    extra = "sft_format" if kind == "sft" else "drop_identical_pairs"
    for key, attr in {**data_keys, extra: extra}.items():
        fp[key] = getattr(script_args, attr)
    fp["dataset"] = _resolve_ref(fp["dataset"])
    for key in FINGERPRINT_MODEL_KEYS:
        fp[key] = getattr(model_args, key, None)
    fp["model_name_or_path"] = _resolve_ref(fp["model_name_or_path"])
    # Newer data options, recorded only when set, so folders from before them still resume.
    defaults = {f.name: f.default for f in dataclasses.fields(script_args)}
    fp.update({k: getattr(script_args, k) for k in NEW_DATA_KEYS
               if k in defaults and getattr(script_args, k) != defaults[k]})
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


def check_start_model(model_args: Any, trust_remote_code: bool = False) -> Any:
    """The start model's reference, after checking that it exists and holds full weights (its config only)."""
    from .. import loading as hmodels

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


def use_messages(script_args: Any, tokenizer: Any, model_name: str) -> bool:
    """Whether a run trains on chat messages (``--conversational``): auto when the base has a chat template."""
    from ..protocol import has_chat_template

    mode = getattr(script_args, "conversational", "auto")
    if mode == "always" and not has_chat_template(tokenizer):
        raise HHAlignError(f"--conversational always needs a chat template, and {model_name!r} has none: use "
                           "--conversational auto or never (HH transcripts as text), or a base with a template")
    return mode == "always" or mode == "auto" and has_chat_template(tokenizer)


def load_start_model(model_args: Any, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """The model a run starts from and its tokenizer, with one-line errors for missing or unusable models."""
    from .. import loading as hmodels

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
        from ..config import refuse_unused

        refuse_unused(script_args, True, "without --push_to_hub", "nothing is published",
                      ["merge_adapter", "metrics_json", "metrics_model"])
        return None
    from ..publish.hub import check_push

    token = check_push(training_args.hub_model_id, training_args.hub_token)
    local_base = _resolve_ref(model_args.model_name_or_path) != model_args.model_name_or_path
    if model_args.use_peft and local_base and not script_args.base_model_hub_id:
        raise HHAlignError(f"the adapter would name the local folder {model_args.model_name_or_path!r} as its base, "
                           "which nobody can download: pass --base_model_hub_id org/name (that folder, pushed)")
    return token


def run_training(kind: str, script_args: ScriptArguments, training_args: Any, model_args: Any, *,
                 command: str | None = None, callbacks: Sequence[Any] = (), role: str | None = None) -> dict:
    """Train (or resume, or reuse a finished run in ``output_dir``), save, record, and push when asked.

    Returns the run record written to ``hhalign_train.json``.
    """
    _check_kind(kind)
    if not training_args.output_dir:
        raise HHAlignError("no --output_dir: set output_dir in the recipe or on the command line")
    out = check_writable(training_args.output_dir, "--output_dir")
    push = bool(training_args.push_to_hub)
    token = check_push_request(training_args, script_args, model_args)
    # Trainer.push_to_hub would upload every checkpoint with TRL's card, which drops eval numbers: we push once.
    training_args.push_to_hub = False
    # The Trainer pickles its arguments into training_args.bin in every checkpoint: the token must not be among them.
    training_args.hub_token = None
    if kind == "sft" and script_args.sft_format not in SFT_FORMATS:
        raise HHAlignError(f"unknown --sft_format {script_args.sft_format!r}: use one of {', '.join(SFT_FORMATS)}")
    fp = fingerprint(kind, script_args, training_args, model_args)
    record = read_record(out)
    if record is not None:
        _check_same_run(out, record, fp)
    if record is not None and record.get("status") == "finished":
        steps = record.get("timing", {}).get("global_step")
        logger.info(f"{out}: finished {kind} run found ({steps} steps); not training again")
    else:
        record = _train(kind, script_args, training_args, model_args, out, fp, command, callbacks, role)
    if push and _is_main_process():
        from ..publish.hub import push_checkpoint

        push_checkpoint(out, training_args.hub_model_id, token=token, private=bool(training_args.hub_private_repo),
                        merge_adapter=script_args.merge_adapter, metrics_json=script_args.metrics_json,
                        metrics_model=script_args.metrics_model or (None if role is None else role),
                        base_model_hub_id=script_args.base_model_hub_id)
    return record


def _train(kind: str, script_args: ScriptArguments, training_args: Any, model_args: Any, out: Path, fp: dict,
           command: str | None, callbacks: Sequence[Any], role: str | None) -> dict:
    # Cheap checks first: a model that does not exist must fail before minutes of data loading, and data that
    # filter down to nothing before the weights are loaded.
    ref = check_start_model(model_args, training_args.trust_remote_code)
    if model_args.use_peft:
        from .lora import resolve_from_config

        # LoRA targets the model lacks: refused now, from the config alone, rather than after the data are loaded.
        resolve_from_config(ref.path, ref.revision, model_args.lora_target_modules, model_args.model_name_or_path,
                            training_args.trust_remote_code)
    resume = resume_checkpoint(out, training_args.resume_from_checkpoint)
    data = build_training_data(kind, script_args, training_args.seed)
    model, tokenizer = load_start_model(model_args, training_args.trust_remote_code)
    if use_messages(script_args, tokenizer, model_args.model_name_or_path):
        data = conversational(data, kind)
    if model_args.use_peft:
        from .lora import resolve_target_modules

        # Checked (and PEFT's default filled in) before anything is written: the targets are recorded with the run.
        model_args.lora_target_modules = resolve_target_modules(model, model_args.lora_target_modules,
                                                                model_args.model_name_or_path)
    logger.info(f"{kind}: {data.info['examples']} examples ({data.info['format']})")
    if kind == "dpo":
        from .filters import length_counts

        # TRL drops pairs whose prompt fills max_length without saying so: counted here with its rule, and recorded.
        data.info["length"] = length_counts(data.examples, tokenizer, training_args.max_length,
                                            training_args.truncation_mode)
        logger.info(f"dpo: at max_length {training_args.max_length}, TRL drops "
                    f"{data.info['length']['dropped_prompt_too_long']} pairs whose prompt alone fills it and "
                    f"truncates {data.info['length']['truncated']}")
    if script_args.pad_with_eos and training_args.pad_token is None:
        training_args.pad_token = tokenizer.eos_token
    note = getattr(training_args, "hhalign_precision_note", None)
    if note:
        logger.info(f"note: {note}")
    out.mkdir(parents=True, exist_ok=True)
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
        write_json(out / RUN_FILE, record)
    if resume:
        logger.info(f"resuming from {resume}")
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
    from ..env import package_versions

    record.update(
        status="finished", resumed_from=str(resume) if resume else None, loss=loss_summary(trainer.state.log_history),
        loss_files={k: Path(v).name for k, v in losses.items()},
        timing={"global_step": trainer.state.global_step, "steps_this_run": steps_run, "wall_s": round(elapsed, 3),
                "train_runtime_s": result.metrics.get("train_runtime"),
                "seconds_per_step": round(elapsed / steps_run, 4),
                "device": _device_name(), "world_size": training_args.world_size},
        packages=package_versions(), finished=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
    write_json(out / RUN_FILE, record)
    from ..publish.card import write_local_card

    write_local_card(out)
    logger.info(
        f"{kind}: saved to {out} ({trainer.state.global_step} steps, {record['timing']['seconds_per_step']} s/step, "
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
        trainer_class = SFTTrainer if kind == "sft" else DPOTrainer
        extra = {} if kind == "sft" else {"ref_model": None}
        with quiet_peft():
            return trainer_class(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                                 peft_config=peft_config, callbacks=list(callbacks), **extra)
    except ValueError as exc:  # TRL reports inconsistent options (pad token, LoRA targets, ...) as ValueError
        raise HHAlignError(f"cannot set up the {kind} trainer: {str(exc).splitlines()[0]}") from None


def format_command(prog: str, argv: Sequence[str]) -> str:
    """A command line to record or show, secrets redacted."""
    from ..secrets import redact_argv

    return shlex.join(redact_argv([*shlex.split(prog), *argv]))


def sft_types() -> tuple[type, type, type]:
    return dataclass_types("sft")


def dpo_types() -> tuple[type, type, type]:
    return dataclass_types("dpo")


def sft_main(script_args: Any, training_args: Any, model_args: Any) -> dict:
    """Supervised fine-tuning (SFT) on HH-RLHF with TRL's SFTTrainer.

    Usage:
        # the study's SFT on one GPU (facebook/opt-350m, all of HH-RLHF train, full fine-tuning, 2 epochs)
        hhalign sft --config paper/sft

        # any recipe value can be overridden on the command line
        hhalign sft --config paper/sft --num_train_epochs 3 --subsets harmless-base --output_dir outputs/sft-harmless

        # a two-step offline smoke run on the tiny model and the local HH-RLHF test split
        hhalign tiny --out outputs/tiny
        hhalign sft --config paper/sft --model_name_or_path outputs/tiny/policy \\
            --dataset_name ../shared/data/hh-rlhf --dataset_train_split test --max_steps 2 \\
            --output_dir outputs/tiny-sft

    A run that finds checkpoints in --output_dir resumes from the last one; a finished run is not repeated.
    """
    return run_training("sft", script_args, training_args, model_args, command=current_command())


def dpo_main(script_args: Any, training_args: Any, model_args: Any) -> dict:
    """DPO with a LoRA adapter on HH-RLHF preference pairs (TRL's DPOTrainer; the frozen base is the reference).

    Usage:
        hhalign dpo --config paper/dpo                  # DPO on the base model (the study's recipe)
        hhalign dpo --config paper/sft_dpo              # SFT+DPO: DPO starting from the SFT checkpoint
        hhalign dpo --config improved/dpo               # identical-reply pairs dropped, bf16 on a GPU

    A run that finds checkpoints in --output_dir resumes from the last one; a finished run is not repeated.
    """
    return run_training("dpo", script_args, training_args, model_args, command=current_command())
