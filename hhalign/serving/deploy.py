"""Stage the Hugging Face Space (app.py, the hhalign package, a results folder, requirements, README with front
matter) into a folder, and upload it. ``space/deploy.py`` is the command line."""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HHAlignError

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The Space's own files: space/ in a checkout, the package data hhalign.space_files in a wheel.
SPACE_FILES = ("app.py", "README.md", "requirements.txt")


def space_files_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("hhalign.space_files")))
RESULT_PATTERNS = ("metrics.json", "responses.jsonl", "report.md", "*.png")
MARKER = ".hhalign-space-staging"
_SPACE_ID = re.compile(r"^[A-Za-z0-9][\w\-.]{0,95}/[A-Za-z0-9][\w\-.]{0,95}$")


@dataclass
class DeployConfig:
    """Options of ``space/deploy.py``; every field is a flag."""

    space_id: str = field(default="", metadata={"help": "The Space to create or update, as org/name."})
    results: str | None = field(default=None, metadata={
        "help": "Results for the Results tab: an evaluator results folder or a results dataset folder to ship "
                "(metrics.json, responses.jsonl, report.md, PNGs; no models), or a Hub results dataset "
                "hf://datasets/ORG/NAME the Space reads at start-up and lists under datasets: in its README."})
    staging: str | None = field(default=None, metadata={
        "help": "Folder to stage into (default: a temporary folder, removed after upload; kept with --dry_run)."})
    dry_run: bool = field(default=False, metadata={"help": "Stage and list the files; upload nothing."})
    private: bool = field(default=False, metadata={"help": "Create the Space as private."})
    space_args: str | None = field(default=None, metadata={
        "help": "Launch options for the deployed app, stored as the Space variable HHALIGN_SPACE_ARGS, "
                "e.g. \"--models sft=org/opt-350m-hh-sft --memory_budget_gb 12\"."})
    token: str | None = field(default=None, metadata={
        "help": "Hugging Face token with write access (default: HF_TOKEN or the `hf auth login` token)."})
    max_file_mb: float = field(default=50.0, metadata={
        "help": "Refuse to stage any file larger than this many MB (10**6 bytes): results, reports and code are far "
                "smaller, so a bigger file is a mistake."})

    def __post_init__(self) -> None:
        if not self.max_file_mb > 0:
            raise HHAlignError(f"--max_file_mb must be a positive number of MB, got {self.max_file_mb}")


def check_space_id(space_id: str) -> str:
    if not space_id:
        raise HHAlignError("--space_id is required: pass the Space as org/name, e.g. --space_id my-org/hhalign")
    if not _SPACE_ID.match(space_id) or ".." in space_id or space_id.endswith((".git", "-", ".")):
        raise HHAlignError(f"--space_id {space_id!r} is not a valid Space id: use org/name with letters, digits, "
                           "'-', '_', '.'")
    return space_id


def space_models(reward_model: str | None = None) -> list[str]:
    """Hub ids the Space uses: the registry's published models and the reward model (for the README's front matter)."""
    from ..publish.registry import load_registry
    from ..refs import DEFAULT_REWARD_MODEL, parse_model_ref

    ids = [parse_model_ref(e.model_arg()).ref for e in load_registry() if e.published]
    ids.append(reward_model or DEFAULT_REWARD_MODEL)
    return list(dict.fromkeys(i for i in ids if "/" in i and not Path(i).exists()))


def space_card(text: str) -> Any:
    """The Space README as a ``huggingface_hub.SpaceCard``; a README without valid front matter is one clear error."""
    from huggingface_hub import SpaceCard

    try:
        card = SpaceCard(text)
    except Exception as exc:  # noqa: BLE001 - yaml and huggingface_hub raise several types for a broken block
        raise HHAlignError(f"space/README.md has broken YAML front matter ({str(exc).splitlines()[0]}): restore it "
                           "from git") from None
    if not card.data.to_dict():
        raise HHAlignError("space/README.md has no YAML front matter between --- lines: restore it from git")
    return card


def read_front_matter(text: str) -> tuple[dict, str]:
    """(YAML front matter, body) of a Space README, read with ``huggingface_hub.SpaceCard``."""
    card = space_card(text)
    return card.data.to_dict(), card.text


def render_readme(text: str, models: list[str], datasets: list[str] | None = None) -> str:
    """The README with its ``models:`` (and, given, ``datasets:``) lists replaced through ``SpaceCardData``, so the
    Space card never drifts from the registry or from the results dataset it shows."""
    card = space_card(text)
    card.data.models = models
    if datasets is not None:
        card.data.datasets = list(dict.fromkeys(datasets))
    return str(card)


def results_dataset(results: str | None) -> str | None:
    """``ORG/NAME`` when ``--results`` names a Hub results dataset (``hf://datasets/ORG/NAME[@REV]``), else None."""
    from ..publish.results_hub import HF_PREFIX

    if not results or not results.startswith(HF_PREFIX):
        return None
    return results.removeprefix(HF_PREFIX).strip("/").partition("@")[0]


def link_results_dataset(staged: Staged, results: str) -> tuple[str, str]:
    """Point the staged Space at a Hub results dataset: listed under ``datasets:`` in its README, and ``--results``
    for the app (returned with the dataset id, for the Space's launch arguments)."""
    dataset = results_dataset(results) or ""
    readme = staged.path / "README.md"
    meta, _ = read_front_matter(readme.read_text(encoding="utf-8"))
    readme.write_text(render_readme(readme.read_text(encoding="utf-8"), meta.get("models") or [],
                                    [*(meta.get("datasets") or []), dataset]), encoding="utf-8")
    return dataset, f"--results {results}"


@dataclass
class Staged:
    """A staged Space folder and the files in it (relative paths, sorted)."""

    path: Path
    files: list[str]


def _prepare(out: Path) -> None:
    from ..publish.staging import prepare_staging

    prepare_staging(out, MARKER, "space/deploy.py")


# What of the package the Space gets (an allowlist, relative to hhalign/): its modules and the package data that
# pyproject.toml ships (a test keeps the two in step). Nothing else a checkout may hold there is uploaded.
PACKAGE_PATTERNS = ("*.py", "assets/*.json", "assets/*.jsonl", "assets/*.txt", "assets/*.j2", "assets/*.md")
# Folders never entered: caches, build metadata, virtual environments.
_SKIP_DIRS = ("__pycache__", "*.egg-info", "site-packages", "node_modules")


def _shippable(path: Path, root: Path) -> bool:
    """Whether a file may be uploaded: no dotfile (.env, .hf_token) and no symbolic link (its target could be any
    file on this machine), warned about so nothing is dropped silently."""
    rel = path.relative_to(root)
    if any(part.startswith(".") for part in rel.parts):
        return False
    if path.is_symlink():
        logger.warning(f"not staging {path}: it is a symbolic link (copy the file itself there to ship it)")
        return False
    return path.is_file()


def package_files(package_dir: Path) -> list[Path]:
    """The files of the package a Space needs (:data:`PACKAGE_PATTERNS`), relative to ``package_dir``: never a
    dotfile or dot-folder, a symbolic link, a cache or a virtual environment (a folder with pyvenv.cfg)."""
    import fnmatch
    import os
    from pathlib import PurePosixPath

    found = []
    for root, dirs, files in os.walk(package_dir):
        here = Path(root)
        for name in list(dirs):
            sub = here / name
            skip = (name.startswith(".") or any(fnmatch.fnmatch(name, p) for p in _SKIP_DIRS)
                    or (sub / "pyvenv.cfg").exists())
            if sub.is_symlink() and not skip:
                logger.warning(f"not staging {sub}: it is a symbolic link to a folder")
            if skip or sub.is_symlink():
                dirs.remove(name)
        for name in files:
            rel = PurePosixPath((here / name).relative_to(package_dir).as_posix())
            if any(rel.match(p) for p in PACKAGE_PATTERNS) and _shippable(here / name, package_dir):
                found.append(Path(rel))
    return sorted(found)


def stage(out_dir: str | Path, results: str | Path | None = None, space_dir: Path | None = None,
          package_dir: Path | None = None, max_file_mb: float = 50.0) -> Staged:
    """Copy what the Space runs into ``out_dir``: app.py, README.md, requirements.txt, the package's files
    (:func:`package_files`) as hhalign/, and results/; every file through the upload checks
    (:func:`hhalign.publish.staging.copy_for_upload`: regular files only, no hard links, no control characters in
    names, at most ``max_file_mb`` MB)."""
    from ..publish.staging import copy_for_upload

    out = Path(out_dir).expanduser().resolve()
    res = Path(results).expanduser() if results else None
    if res is not None and not (res / "metrics.json").is_file():
        raise HHAlignError(f"--results {str(results)!r} has no metrics.json: run python batch/eval.py --out "
                           f"{results} first")
    space_dir = space_dir or space_files_dir()
    for name in SPACE_FILES:
        if not (space_dir / name).is_file():
            raise HHAlignError(f"{name} is missing from {space_dir}: restore it from git or reinstall hhalign")
    _prepare(out)
    for name in SPACE_FILES:
        if name == "README.md":
            text = render_readme((space_dir / name).read_text(encoding="utf-8"), space_models())
            (out / name).write_text(text, encoding="utf-8")
        else:
            shutil.copy2(space_dir / name, out / name)
    for rel in package_files(package_dir or PACKAGE_DIR):
        (out / "hhalign" / rel).parent.mkdir(parents=True, exist_ok=True)
        copy_for_upload((package_dir or PACKAGE_DIR) / rel, out / "hhalign" / rel, f"hhalign/{rel}", max_file_mb)
    if res is not None:
        (out / "results").mkdir()
        for pattern in RESULT_PATTERNS:
            for path in sorted(res.glob(pattern)):
                if _shippable(path, res):
                    copy_for_upload(path, out / "results" / path.name, str(path), max_file_mb)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != MARKER)
    return Staged(out, files)


def _token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HHAlignError("no Hugging Face token: run `hf auth login` or set HF_TOKEN to a token with write access "
                           "(or use --dry_run to stage only)")
    return token


def _hub_error(space_id: str, exc: BaseException) -> HHAlignError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if status in (401, 403):
        return HHAlignError(f"the Hub refused to write {space_id!r} (HTTP {status}): use a token with write access "
                            "to that namespace")
    if status is None and isinstance(exc, OSError):
        return HHAlignError(f"cannot reach the Hugging Face Hub ({first}): check the network, or use --dry_run")
    return HHAlignError(f"uploading to {space_id!r} failed: {first}")


def check_upload(staged: Staged, space_id: str, token: str | None = None, space_args: str | None = None) -> None:
    """Every check of an upload, made by ``--dry_run`` too: the Space id, no token in any staged file or in
    --space_args (a Space is public by default)."""
    from ..secrets import check_no_secrets, find_secrets, known_tokens

    check_space_id(space_id)
    known = known_tokens(token)
    check_no_secrets([staged.path / f for f in staged.files], staged.path, known)
    if space_args and (find_secrets(space_args) or any(k in space_args for k in known)):
        raise HHAlignError("refusing to upload: --space_args holds a token, and Space variables are public; pass "
                           "secrets as Space secrets in the Space's settings instead")


def upload(staged: Staged, space_id: str, token: str | None = None, private: bool = False,
           space_args: str | None = None, api: Any = None) -> str:
    """Create the Space if needed and replace its code and results with the staged folder; returns its URL. Every
    staged file is scanned for tokens first (a Space is public by default)."""
    check_upload(staged, space_id, token, space_args)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=_token(token))
    try:
        api.create_repo(space_id, repo_type="space", space_sdk="gradio", exist_ok=True, private=private)
        if space_args:
            api.add_space_variable(space_id, "HHALIGN_SPACE_ARGS", space_args)
        api.upload_folder(repo_id=space_id, repo_type="space", folder_path=str(staged.path),
                          commit_message="Update the hhalign Space", ignore_patterns=[MARKER],
                          # Files dropped from hhalign/ or results/ since the last upload must not linger there.
                          delete_patterns=["hhalign/**", "results/**"])
    except HHAlignError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _hub_error(space_id, exc) from None
    return f"https://huggingface.co/spaces/{space_id}"


def deploy(cfg: DeployConfig, api: Any = None) -> Staged:
    """Stage, then upload unless ``dry_run``; a temporary staging folder is removed after the upload."""
    import tempfile

    check_space_id(cfg.space_id)
    if not cfg.dry_run and api is None:
        _token(cfg.token)  # fail before staging when no upload could happen
    temp = None
    if cfg.staging:
        out = Path(cfg.staging)
    else:
        temp = Path(tempfile.mkdtemp(prefix="hhalign-space-"))
        out = temp / "space"
    try:
        space_args, dataset = cfg.space_args, results_dataset(cfg.results)
        if dataset:  # a Hub results dataset: the Space reads it at start-up instead of shipping a results/ folder
            staged = stage(out, None, max_file_mb=cfg.max_file_mb)
            _, launch = link_results_dataset(staged, str(cfg.results))
            space_args = f"{space_args} {launch}" if space_args else launch
        else:
            from ..stats.results import resolve_results_source

            staged = stage(out, resolve_results_source(cfg.results) if cfg.results else None,
                           max_file_mb=cfg.max_file_mb)
        logger.info(f"staged {len(staged.files)} files in {staged.path}")
        if cfg.dry_run:
            check_upload(staged, cfg.space_id, cfg.token, space_args)  # fails where the upload would
            print("\n".join(staged.files))
            return staged
        url = upload(staged, cfg.space_id, cfg.token, cfg.private, space_args, api)
        print(f"uploaded: {url}")
        return staged
    finally:
        if temp is not None and not cfg.dry_run:
            shutil.rmtree(temp, ignore_errors=True)


def main(cfg: DeployConfig) -> Staged:
    """Publish the Space: stage app.py, the hhalign package, a results folder and requirements, then upload them.

    Usage:
        # see exactly what would be uploaded (nothing leaves this machine)
        hhalign deploy --space_id my-org/hhalign --results results/opt350m --dry_run --staging /tmp/hhalign-space

        # create or update the Space (needs `hf auth login` or HF_TOKEN with write access)
        hhalign deploy --space_id my-org/hhalign --results results/opt350m

        # a Space whose Results tab reads a results dataset (hhalign eval --push_results_to_hub my-org/results)
        hhalign deploy --space_id my-org/hhalign --results hf://datasets/my-org/results
    """
    return deploy(cfg)

