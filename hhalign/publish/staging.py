"""How hhalign uploads: the checks before a push, a staging folder (kept with ``--dry_run``) that only takes files
that pass :func:`copy_for_upload`, the token scan of everything staged, and the Hub call. Shared by checkpoint pushes
(:mod:`hhalign.publish.hub`), results datasets (:mod:`hhalign.publish.results_hub`) and the Space
(:mod:`hhalign.serving.deploy`)."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import HHAlignError
from ..refs import is_hub_id
from ..secrets import check_no_secrets, known_tokens

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


# --- upload -------------------------------------------------------------------------------------------------------


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
