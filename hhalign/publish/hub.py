"""Publishing a trained checkpoint: checks before any work, a staged upload folder, the Hub calls."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HHAlignError
from ..files import read_json, write_json
from ..refs import is_hub_id
from ..secrets import check_no_secrets, known_tokens
from .card import (
    CARD_FILE,
    MERGED_DIR,
    PUSH_FILE,
    STAGE_FILES,
    build_card,
    check_metrics_match,
    model_metrics,
    read_metrics,
    read_run_record,
    registry_metrics,
)
from .registry import update_registry

logger = logging.getLogger(__name__)

# --- checks -------------------------------------------------------------------------------------------------------


def check_push(hub_model_id: str | None, token: str | None = None) -> str:
    """Validate a push request before any work; returns the token to use."""
    if not hub_model_id:
        raise HHAlignError("--push_to_hub needs --hub_model_id org/name: the Hub repository to create or update")
    if not is_hub_id(hub_model_id, namespaced=True):
        raise HHAlignError(f"--hub_model_id {hub_model_id!r} is not a Hub repo id: write org/name")
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise HHAlignError("--push_to_hub with HF_HUB_OFFLINE=1 set: unset HF_HUB_OFFLINE to publish")
    token = token or get_token()
    if not token:
        raise HHAlignError("--push_to_hub needs a Hub token with write access: run `hf auth login` or set HF_TOKEN")
    return token


# --- staging and pushing ------------------------------------------------------------------------------------------


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
        if item.is_symlink():
            logger.warning(f"not uploading {item.name}: it is a symbolic link (copy the file itself there to "
                           "publish it)")
            continue
        shutil.copy2(item, dst / item.name)
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
                    metrics_model: str | None = None, base_model_hub_id: str | None = None) -> dict:
    """Stage ``checkpoint`` with our card and upload it: ``create_repo(exist_ok=True)`` then ``upload_folder``."""
    checkpoint = Path(checkpoint)
    token = check_push(hub_model_id, token)
    record = read_run_record(checkpoint)
    if record.get("status") != "finished":
        raise HHAlignError(f"{checkpoint} holds an unfinished run: finish training (run it again) before pushing")
    metrics = None
    if metrics_json is not None:
        metrics = read_metrics(metrics_json)
        metrics_model, _ = model_metrics(metrics, metrics_model, str(metrics_json))
        check_metrics_match(metrics, metrics_model, checkpoint, hub_model_id, str(metrics_json))
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    with tempfile.TemporaryDirectory(prefix="hhalign-push-") as tmp:
        staged = stage_checkpoint(checkpoint, Path(tmp) / "repo", base_model_hub_id=base_model_hub_id,
                                  merge_adapter=merge_adapter)
        card = build_card(checkpoint, hub_model_id, metrics=metrics, metrics_model=metrics_model,
                          metrics_source=Path(metrics_json).name if metrics_json else "metrics.json",
                          base_model_hub_id=base_model_hub_id, merged=merge_adapter)
        card.save(str(staged / CARD_FILE))
        paths = sorted(p for p in staged.rglob("*") if p.is_file())
        check_no_secrets(paths, staged, known_tokens(token))
        files = [str(p.relative_to(staged)) for p in paths]
        api = HfApi(token=token)
        try:
            repo = api.create_repo(hub_model_id, private=private, exist_ok=True, repo_type="model")
            repo_id = getattr(repo, "repo_id", None) or hub_model_id
            logger.info(f"uploading {len(files)} files to {repo_id}")
            commit = api.upload_folder(repo_id=repo_id, folder_path=str(staged), repo_type="model",
                                       commit_message=f"hhalign: {record.get('role') or record.get('kind')} "
                                                      f"checkpoint" + (" with evaluation" if metrics else ""))
        except HfHubHTTPError as exc:
            raise HHAlignError(f"pushing to {hub_model_id} failed: {str(exc).splitlines()[0]} (check the id and that "
                               "your token has write access); the local checkpoint is unchanged") from None
    result = {"repo_id": repo_id, "commit_url": getattr(commit, "commit_url", None) or str(commit), "files": files,
              "metrics_json": str(metrics_json) if metrics_json else None, "metrics_model": metrics_model}
    write_json(checkpoint / PUSH_FILE, result)
    logger.info(f"pushed {checkpoint} to https://huggingface.co/{repo_id}")
    return result


# --- training/push.py ---------------------------------------------------------------------------------------------


@dataclass
class PushConfig:
    """Options of ``training/push.py``."""

    checkpoint: str = field(default="", metadata={"help": "Finished checkpoint folder (written by training/*.py)."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo to create or update: org/name."})
    metrics_json: str | None = field(default=None, metadata={
        "help": "The evaluator's metrics.json measured on this checkpoint; its numbers go into the card."})
    metrics_model: str | None = field(default=None, metadata={"help": "Model name in --metrics_json."})
    base_model_hub_id: str | None = field(default=None, metadata={
        "help": "Hub id an adapter trained on a local folder names as its base (that folder, pushed)."})
    merge_adapter: bool = field(default=False, metadata={"help": "Also push merged weights (merged/ folder)."})
    private: bool = field(default=False, metadata={"help": "Create the repo as private."})
    registry_name: str | None = field(default=None, metadata={
        "help": "After the push, record the Hub id (and metrics) under this registry name and re-render models.md."})
    role: str | None = field(default=None, metadata={
        "help": "Registry role of a new entry (default: the run's role)."})

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

        # a LoRA adapter trained on a local base: name the base's Hub id, also push merged weights
        hhalign push --checkpoint outputs/study/dpo --hub_model_id you/opt-350m-hh-dpo \\
            --base_model_hub_id facebook/opt-350m --merge_adapter
    """
    return push_main(cfg)


def push_main(cfg: PushConfig) -> dict:
    if not cfg.checkpoint or not Path(cfg.checkpoint).is_dir():
        raise HHAlignError(f"--checkpoint {cfg.checkpoint!r} is not a folder: pass a finished training output folder")
    result = push_checkpoint(cfg.checkpoint, cfg.hub_model_id or "", merge_adapter=cfg.merge_adapter,
                             private=cfg.private, metrics_json=cfg.metrics_json, metrics_model=cfg.metrics_model,
                             base_model_hub_id=cfg.base_model_hub_id)
    if cfg.registry_name:
        record = read_run_record(cfg.checkpoint)
        metrics = registry_metrics(cfg.metrics_json, result["metrics_model"]) if cfg.metrics_json else None
        update_registry(cfg.registry_name, role=cfg.role or record.get("role") or record.get("kind", "sft"),
                        ref=result["repo_id"], metrics=metrics, recipe=None, command=record.get("command"))
    return result
