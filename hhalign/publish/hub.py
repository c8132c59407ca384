"""Publishing a trained checkpoint: checks before any work, a staged upload folder (kept with ``--dry_run``), the Hub
calls, and the registry entry read back from the card that was uploaded."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HHAlignError
from ..files import read_json, write_json
from ..refs import is_hub_id
from .card import (
    CARD_FILE,
    MERGED_DIR,
    PUSH_FILE,
    STAGE_FILES,
    build_card,
    check_metrics_match,
    read_run_record,
    registry_metrics,
)
from .registry import update_registry
from .results_hub import linked_results
from .staging import (
    check_push,
    check_repo_id,
    check_staged,
    copy_for_upload,
    prepare_staging,
    staged_files,
    upload_repo,
)

logger = logging.getLogger(__name__)
# --- checks -------------------------------------------------------------------------------------------------------


# --- staging ------------------------------------------------------------------------------------------------------


def stage_checkpoint(checkpoint: str | Path, staging: str | Path, *, base_model_hub_id: str | None = None,
                     merge_adapter: bool = False) -> Path:
    """Copy what a Hub repo needs (weights, config, tokenizer, run record, losses: :data:`STAGE_FILES`) into
    ``staging``; nothing else, and never a symbolic link (its target may be anything).

    An adapter trained on a local folder names that folder as its base; the staged copy names ``base_model_hub_id``
    instead, which must hold the same weights. With ``merge_adapter`` the merged model goes to ``merged/``.
    """
    src, dst = Path(checkpoint), Path(staging)
    dst.mkdir(parents=True, exist_ok=True)
    for item in sorted(src.iterdir()):
        if not STAGE_FILES.match(item.name) or item.is_dir():
            continue
        copy_for_upload(item, dst / item.name, max_mb=None)  # weights are large by nature: no size cap
    adapter_cfg = dst / "adapter_config.json"
    if adapter_cfg.exists():
        cfg = read_json(adapter_cfg, "adapter config", "restore the adapter's adapter_config.json")
        current = cfg.get("base_model_name_or_path")
        if base_model_hub_id:
            cfg["base_model_name_or_path"] = base_model_hub_id
        elif not is_hub_id(current):
            raise HHAlignError(f"the adapter in {checkpoint} names the local folder {current!r} as its base: pass "
                               "--base_model_hub_id org/name (that base, pushed) so others can load it")
        write_json(adapter_cfg, cfg)
        if merge_adapter:
            _write_merged(src, dst / MERGED_DIR)
    elif merge_adapter:
        raise HHAlignError(f"--merge_adapter: {checkpoint} holds full weights, not a LoRA adapter; drop the flag")
    return dst


def _write_merged(adapter_dir: Path, out: Path) -> None:
    from ..loading import load_policy
    from ..refs import parse_model_ref

    loaded = load_policy(parse_model_ref(f"m={adapter_dir}"), device="cpu", dtype="float32", merge_adapter=True)
    loaded.model.save_pretrained(str(out))
    loaded.tokenizer.padding_side = "right"
    loaded.tokenizer.save_pretrained(str(out))


def push_checkpoint(checkpoint: str | Path, hub_model_id: str, *, token: str | None = None, private: bool = False,
                    merge_adapter: bool = False, metrics_json: str | Path | None = None,
                    metrics_model: str | None = None, base_model_hub_id: str | None = None,
                    results_repo: str | None = None, dry_run: bool = False, staging: str | Path | None = None) -> dict:
    """Stage ``checkpoint`` with our card and upload it (``create_repo(exist_ok=True)`` then ``upload_folder``).

    With ``dry_run`` the staged repo is kept in ``staging`` and nothing is uploaded or recorded. The result's
    ``card_metrics`` are read back from the staged card: the registry takes its numbers from there.
    """
    from ..eval.schema import load_metrics

    checkpoint = Path(checkpoint)
    if dry_run:
        check_repo_id(hub_model_id)
        if staging is None:
            raise HHAlignError("--dry_run writes the repo into --staging DIR: add --staging")
    else:
        token = check_push(hub_model_id, token)
    record = read_run_record(checkpoint)
    if record.get("status") != "finished":
        raise HHAlignError(f"{checkpoint} holds an unfinished run: finish training (run it again) before pushing")
    metrics = None
    if metrics_json is not None:
        metrics = load_metrics(metrics_json)
        metrics_model, _ = metrics.model(metrics_model, str(metrics_json))
        check_metrics_match(metrics, metrics_model, checkpoint, hub_model_id, str(metrics_json))
    results_url = linked_results(metrics_json, results_repo)
    with tempfile.TemporaryDirectory(prefix="hhalign-push-") as tmp:
        staged = prepare_staging(staging if staging is not None else Path(tmp) / "repo")
        stage_checkpoint(checkpoint, staged, base_model_hub_id=base_model_hub_id, merge_adapter=merge_adapter)
        card = build_card(checkpoint, hub_model_id, metrics=metrics, metrics_model=metrics_model,
                          metrics_source=Path(metrics_json).name if metrics_json else "metrics.json",
                          base_model_hub_id=base_model_hub_id, merged=merge_adapter, results_url=results_url)
        card.save(str(staged / CARD_FILE))
        card_metrics = read_card_metrics(staged / CARD_FILE, hub_model_id)
        files = staged_files(staged)
        result = {"repo_id": hub_model_id, "files": files, "metrics_json": str(metrics_json) if metrics_json else None,
                  "metrics_model": metrics_model, "card_metrics": card_metrics, "results": results_url}
        if dry_run:
            check_staged(staged, token)  # what the upload would refuse, the dry run refuses
            logger.info(f"dry run: {len(files)} files staged for {hub_model_id} in {staged}")
            return {**result, "staging": str(staged), "dry_run": True}
        result.update(upload_repo(staged, hub_model_id, "model", token, private,
                                  f"hhalign: {record.get('role') or record.get('kind')} checkpoint"
                                  + (" with evaluation" if metrics else "")))
    write_json(checkpoint / PUSH_FILE, result)
    logger.info(f"pushed {checkpoint} to https://huggingface.co/{result['repo_id']}")
    return result


def read_card_metrics(card_path: Path, repo_id: str) -> dict | None:
    """The registry's metrics entry, parsed back from a written card with huggingface_hub's own reader."""
    from huggingface_hub import ModelCard

    return registry_metrics(ModelCard.load(card_path).data.eval_results or [], repo_id)


# --- training/push.py ---------------------------------------------------------------------------------------------


@dataclass
class PushConfig:
    """Options of ``training/push.py``."""

    checkpoint: str = field(default="", metadata={"help": "Finished checkpoint folder (written by training/*.py)."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo to create or update: org/name."})
    metrics_json: str | None = field(default=None, metadata={
        "help": "The evaluator's metrics.json measured on this checkpoint; its numbers go into the card."})
    metrics_model: str | None = field(default=None, metadata={"help": "Model name in --metrics_json."})
    results_repo: str | None = field(default=None, metadata={
        "help": "Results dataset (org/name) holding these metrics, linked as the card's source. Default: the one "
                "hhalign eval --push_results_to_hub recorded next to --metrics_json, if it pushed that file."})
    base_model_hub_id: str | None = field(default=None, metadata={
        "help": "Hub id an adapter trained on a local folder names as its base (that folder, pushed)."})
    merge_adapter: bool = field(default=False, metadata={"help": "Also push merged weights (merged/ folder)."})
    private: bool = field(default=False, metadata={"help": "Create the repo as private."})
    registry_name: str | None = field(default=None, metadata={
        "help": "After the push, record the Hub id and the card's metrics under this registry name and re-render "
                "models.md."})
    role: str | None = field(default=None, metadata={
        "help": "Registry role of a new entry (default: the run's role)."})
    dry_run: bool = field(default=False, metadata={
        "help": "Write the repo (files and card) into --staging and upload nothing; needs no token, changes no "
                "registry."})
    staging: str | None = field(default=None, metadata={
        "help": "Folder the repo is staged in (kept). Needed with --dry_run; otherwise a temporary folder."})

    def __post_init__(self) -> None:
        from ..config import refuse_unused

        refuse_unused(self, not self.registry_name, "without --registry_name", "no registry entry is written",
                      ["role"])
        refuse_unused(self, not self.metrics_json, "without --metrics_json", "no metrics are read",
                      ["metrics_model"])


def main(cfg: PushConfig) -> dict:
    """Publish a finished checkpoint folder to the Hugging Face Hub with hhalign's model card.

    Usage:
        # the card carries the evaluator's numbers for this checkpoint
        hhalign push --checkpoint outputs/study/sft --hub_model_id you/opt-350m-hh-sft \\
            --metrics_json outputs/study/eval/metrics.json --metrics_model sft

        # see exactly what would be uploaded (nothing leaves this machine)
        hhalign push --checkpoint outputs/study/sft --hub_model_id you/opt-350m-hh-sft --dry_run --staging /tmp/s

        # a LoRA adapter trained on a local base: name the base's Hub id, also push merged weights
        hhalign push --checkpoint outputs/study/dpo --hub_model_id you/opt-350m-hh-dpo \\
            --base_model_hub_id facebook/opt-350m --merge_adapter
    """
    return push_main(cfg)


def push_main(cfg: PushConfig) -> dict:
    if not cfg.checkpoint or not Path(cfg.checkpoint).is_dir():
        raise HHAlignError(f"--checkpoint {cfg.checkpoint!r} is not a folder: pass a finished training output folder")
    if cfg.dry_run:
        check_repo_id(cfg.hub_model_id)
    result = push_checkpoint(cfg.checkpoint, cfg.hub_model_id or "", merge_adapter=cfg.merge_adapter,
                             private=cfg.private, metrics_json=cfg.metrics_json, metrics_model=cfg.metrics_model,
                             base_model_hub_id=cfg.base_model_hub_id, results_repo=cfg.results_repo,
                             dry_run=cfg.dry_run, staging=cfg.staging)
    if cfg.dry_run:
        print("\n".join(result["files"]))
    elif cfg.registry_name:
        record = read_run_record(cfg.checkpoint)
        update_registry(cfg.registry_name, role=cfg.role or record.get("role") or record.get("kind", "sft"),
                        ref=result["repo_id"], metrics=result["card_metrics"], recipe=None,
                        command=record.get("command"))
    return result
