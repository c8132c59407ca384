"""Publishing a trained checkpoint: checks before any work, a staged upload folder (kept with ``--dry_run``), the Hub
calls, and the registry entry read back from the card that was uploaded."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    read_run_record,
    registry_metrics,
)
from .registry import update_registry

logger = logging.getLogger(__name__)
STAGING_MARKER = ".hhalign-staging"

# --- checks -------------------------------------------------------------------------------------------------------


def check_push(repo_id: str | None, token: str | None = None, *, option: str = "--push_to_hub",
               id_option: str = "--hub_model_id") -> str:
    """Validate a push request before any work; returns the token to use."""
    if not repo_id:
        raise HHAlignError(f"{option} needs {id_option} org/name: the Hub repository to create or update")
    if not is_hub_id(repo_id, namespaced=True):
        raise HHAlignError(f"{id_option} {repo_id!r} is not a Hub repo id: write org/name")
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise HHAlignError(f"{option} with HF_HUB_OFFLINE=1 set: unset HF_HUB_OFFLINE to publish, or add --dry_run "
                           "--staging DIR to write what would be uploaded")
    token = token or get_token()
    if not token:
        raise HHAlignError(f"{option} needs a Hub token with write access: run `hf auth login` or set HF_TOKEN")
    return token


def hub_error(repo_id: str, exc: BaseException) -> HHAlignError:
    """One line for a failed Hub call."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return HHAlignError(f"pushing to {repo_id} failed: {first} (check the id and that your token has write access); "
                        "local files are unchanged")


# --- staging ------------------------------------------------------------------------------------------------------


@dataclass
class StagedRepo:
    """A staged Hub repository: its folder, its files (relative, sorted) and where it would go."""

    path: Path
    files: list[str]
    repo_id: str
    repo_type: str


def prepare_staging(path: str | Path, marker: str = STAGING_MARKER, made_by: str = "hhalign") -> Path:
    """An empty folder to stage into: new, empty, or one staged here before (replaced); anything else is refused."""
    out = Path(path).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (out / marker).exists():
            raise HHAlignError(f"--staging {str(path)!r} is not empty and was not made by {made_by}: choose an "
                               "empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / marker).write_text(f"staged by {made_by}; safe to delete\n", encoding="utf-8")
    return out


# The largest file an upload stages by default, in MB (10**6 bytes): results, reports and the Space's code are far
# smaller; a bigger file there is a mistake (a model, a dump, a sparse file) rather than something to publish.
MAX_FILE_MB = 50.0


def _name_problem(name: str) -> str | None:
    bad = [c for c in name if ord(c) < 32 or ord(c) == 127]
    return f"its name holds the control character {bad[0]!r}" if bad else None


def copy_for_upload(src: str | Path, dst: str | Path, label: str | None = None, max_mb: float | None = MAX_FILE_MB,
                    option: str = "--max_file_mb") -> bool:
    """Copy one file into a staging folder after the checks every upload makes; False (with a warning) for what is
    never staged: a symbolic link or anything but a regular file. Refused (an error naming ``label``): a name with a
    control character, a file with more than one hard link (the same inode may be any file on this machine, such as
    /etc/passwd), a file over ``max_mb`` MB (None: no cap, e.g. model weights). The checks and the copy use one open
    file, so the file cannot be swapped between them."""
    src, dst = Path(src), Path(dst)
    label = label or src.name
    problem = _name_problem(str(label))
    if problem:
        raise HHAlignError(f"refusing to stage {label!r}: {problem}; rename the file")
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if os.path.islink(src):
            logger.warning(f"not uploading {label}: it is a symbolic link (copy the file itself there to publish it)")
            return False
        raise HHAlignError(f"cannot read {str(src)!r} ({exc.strerror}) to stage it") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            logger.warning(f"not uploading {label}: it is not a regular file")
            return False
        if info.st_nlink > 1:
            raise HHAlignError(f"refusing to stage {label!r}: it has {info.st_nlink} hard links, so it may be another "
                               "file on this machine; copy it (cp, not ln) if it is meant to be published")
        if max_mb is not None and info.st_size > max_mb * 1e6:
            raise HHAlignError(f"refusing to stage {label!r}: {info.st_size / 1e6:.1f} MB is over the {max_mb:g} MB "
                               f"cap; leave it out, or raise {option}")
        with open(dst, "wb") as out:
            shutil.copyfileobj(fh, out, 1 << 20)
    os.chmod(dst, 0o644)
    os.utime(dst, ns=(info.st_atime_ns, info.st_mtime_ns))
    return True


def check_staged(folder: Path, token: str | None = None, marker: str = STAGING_MARKER) -> list[str]:
    """The checks an upload of a staged folder makes (the same with --dry_run): no file holds a token; returns the
    files."""
    files = staged_files(folder, marker)
    check_no_secrets([folder / f for f in files], folder, known_tokens(token))
    return files


def staged_files(folder: Path, marker: str = STAGING_MARKER) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != marker)


def staging_for(staging: str | Path, repo_type: str, repo_id: str) -> Path:
    """Where one repo of a multi-repo dry run goes: ``STAGING/models/ORG/NAME``, ``STAGING/datasets/ORG/NAME``."""
    return Path(staging) / f"{repo_type}s" / repo_id


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
    from .results_hub import linked_results

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


def check_repo_id(repo_id: str | None, option: str = "--hub_model_id") -> None:
    if not repo_id:
        raise HHAlignError(f"{option} is required: the Hub repository as org/name")
    if not is_hub_id(repo_id, namespaced=True):
        raise HHAlignError(f"{option} {repo_id!r} is not a Hub repo id: write org/name")


def upload_repo(folder: Path, repo_id: str, repo_type: str, token: str | None, private: bool, message: str,
                api: Any = None, create: bool = True) -> dict:
    """``create_repo(exist_ok=True)`` (unless done) then ``upload_folder`` of a staged folder; one-line errors. Every
    staged file is scanned for tokens first."""
    from huggingface_hub import HfApi

    check_staged(folder, token)
    api = api or HfApi(token=token)
    try:
        if create:
            repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type)
            repo_id = getattr(repo, "repo_id", None) or repo_id
        logger.info(f"uploading {len(staged_files(folder))} files to {repo_type} {repo_id}")
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                                   commit_message=message, ignore_patterns=[STAGING_MARKER])
    except HHAlignError:
        raise
    except Exception as exc:  # noqa: BLE001 - HTTP, network and validation errors all become one line
        raise hub_error(repo_id, exc) from None
    return {"repo_id": repo_id, "commit_url": getattr(commit, "commit_url", None) or str(commit)}


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
