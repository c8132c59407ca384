"""A run folder as a small database: the settings its records belong to, a lock for its one writer, and the checks
that keep one folder from mixing two runs.

The order is what makes a refusal harmless: :func:`open_run` first checks everything against the folder while
reading only; then it creates the folder, takes the lock (a second writer is refused), repairs torn tails of the logs
(a killed write), checks again under the lock, and only then records the run's settings in ``run.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from .. import data as hdata
from ..errors import HHAlignError
from ..files import check_files_writable, read_json, repair_torn_tail, write_json, write_jsonl
from ..refs import ModelRef, parse_model_ref
from ..stats.judges import judges_fingerprint
from .config import EvalConfig
from .records import read_run_log
from .schema import FILES

logger = logging.getLogger(__name__)

LOGS = ("generations", "responses")
# The options behind each fingerprint key, named in a refusal in the user's own words ("--limit was 25, now 10").
FINGERPRINT_OPTIONS = {
    "prompts_sha256": ("prompt_set", "dataset", "split", "n_per_category", "seed", "limit"),
    "device_type": ("device",),
    "reward_batch_size": ("reward_batch_size", "batch_size"),
    "inputs_sha256": ("from_responses",),
}
# Settings that only change the rewards: free to change while no response has been scored.
SCORING_KEYS = ("reward_model", "reward_max_length", "reward_batch_size")
# The options recorded in run.json as the user gave them.
GENERATED_OPTIONS = ("models", "reward_model", "prompt_set", "dataset", "split", "n_per_category", "seed", "limit",
                     "protocol", "max_new_tokens", "batch_size", "reward_batch_size", "reward_max_length", "dtype",
                     "mode", "device", "backend")
IMPORTED_OPTIONS = ("from_responses", "limit")


def prepare_out(out: str | Path) -> Path:
    """Create the output folder and prove it is writable before any work is done."""
    path = Path(out).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise HHAlignError(f"--out {str(out)!r} is not writable ({exc.strerror}): choose another folder") from None
    return path


def prompts_digest(prompts: list[hdata.EvalPrompt]) -> str:
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(json.dumps(p.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()


def inputs_digest(paths: Sequence[str]) -> str:
    """SHA-256 over the bytes of the files ``--from_responses`` reads (a folder: its JSON files by name)."""
    digest = hashlib.sha256()
    for given in paths:
        path = Path(given)
        for file in sorted(path.glob("*.json")) if path.is_dir() else [path]:
            digest.update(file.name.encode() + b"\0" + hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def ref_identity(text: str) -> str:
    """A model reference as a run folder records it: a local folder by its resolved path, so any spelling of the
    same folder (relative, absolute, through a symlink, from another working directory) is the same model; a Hub id as
    given."""
    ref = parse_model_ref(text)
    if not ref.is_local:
        return text.strip()
    rev = f"@{ref.revision}" if ref.revision else ""
    resolved = str(Path(ref.path).resolve()) + rev
    return f"{ref.name}={resolved}" if text.partition("=")[1] else resolved


def _judges_identity(value: object) -> object:
    """A fingerprint's judges with local paths resolved (older folders recorded them as given)."""
    if isinstance(value, str):
        try:
            return ref_identity(value)
        except HHAlignError:
            return value
    return value


def run_fingerprint(cfg: EvalConfig, prompts: list[hdata.EvalPrompt], device: str) -> dict:
    """The settings that change records; a folder's records may only be extended under the same fingerprint."""
    return {
        "prompts_sha256": prompts_digest(prompts),
        "protocol": cfg.protocol,
        "max_new_tokens": cfg.max_new_tokens,
        "reward_model": judges_fingerprint([ref_identity(t) for t in cfg.reward_model], cfg.judge_formats),
        "reward_max_length": cfg.reward_max_length,
        "dtype": cfg.dtype,
        # fp32 is how every run before --mode existed was made: left out so such folders still resume.
        **({"mode": cfg.mode} if cfg.mode != "fp32" else {}),
        **({"backend": cfg.backend} if cfg.backend != "engine" else {}),  # likewise for runs before --backend
        "device_type": device.split(":")[0],
        "batch_size": cfg.batch_size,
        "reward_batch_size": cfg.reward_batch_size or cfg.batch_size,
    }


def imported_fingerprint(cfg: EvalConfig) -> dict:
    """What a ``--from_responses`` run's records come from: the input files' contents and --limit."""
    return {"source": "from_responses", "inputs_sha256": inputs_digest(cfg.from_responses), "limit": cfg.limit}


def user_options(cfg: EvalConfig) -> dict:
    """The options that define a run, as the user gave them (for refusals in the user's own words)."""
    names = IMPORTED_OPTIONS if cfg.from_responses else GENERATED_OPTIONS
    return {name: getattr(cfg, name) for name in names}


def read_state(out: Path) -> dict | None:
    """The folder's run.json, None when there is none; a damaged one is a one-line error."""
    path = out / FILES["run"]
    if not path.exists():
        return None
    state = read_json(path, "run state", "it was damaged (an edit or a failed copy): restore it, or use a new --out "
                      "folder")
    if not isinstance(state, dict) or not isinstance(state.get("fingerprint"), dict) or not isinstance(
            state.get("models", {}), dict):
        raise HHAlignError(f"run state {str(path)!r} lacks its fingerprint and models: restore it, or use a new "
                           "--out folder")
    return state


def _show(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) or "none"
    return str(value)


def describe_change(key: str, old: Mapping, new: Mapping, old_options: Mapping, new_options: Mapping) -> list[str]:
    """One changed setting in the user's words: the options behind ``key`` that differ, else the key itself."""
    names = FINGERPRINT_OPTIONS.get(key, (key,))
    changed = [n for n in names if n in old_options and old_options.get(n) != new_options.get(n)]
    if changed:
        return [f"--{n} was {_show(old_options[n])}, now {_show(new_options.get(n))}" for n in changed]
    if key == "prompts_sha256":
        return ["the prompts differ (the prompt file or the dataset changed)"]
    if key == "inputs_sha256":
        return ["the records files' contents differ"]
    return [f"--{key} was {_show(old.get(key))}, now {_show(new.get(key))}"]


def _recorded(out: Path) -> dict[str, set[str]]:
    """Model names with records in each log (complete lines only)."""
    return {name: {str(r.get("model")) for r in read_run_log(out / FILES[name])} for name in LOGS}


def check_folder(out: Path, fingerprint: dict, options: dict, refs: Sequence[ModelRef] = (),
                 only: Sequence[str] | None = None) -> dict:
    """Refuse to mix settings or reuse a model name for another reference; reads only. Returns the state to record.

    A folder without records takes new settings (a run that failed before its first record lost nothing); one with
    generations but no scores takes a new reward model. ``only`` limits the comparison to those keys.
    """
    check_files_writable(out, skip=("models",))  # the demo's built models are read, never replaced
    state = read_state(out)
    recorded = _recorded(out) if out.is_dir() else {name: set() for name in LOGS}
    if state is None:
        if any(recorded.values()) or (out / FILES["metrics"]).exists():
            raise HHAlignError(f"--out {str(out)!r} holds results without a run.json (another tool's, or an old "
                               "hhalign's): use a new --out folder")
        return {"fingerprint": fingerprint, "options": options, "models": {r.name: ref_identity(str(r)) for r in refs}}
    old = dict(state["fingerprint"])
    if "reward_model" in old:
        old["reward_model"] = _judges_identity(old["reward_model"])
    if old.get("source") != fingerprint.get("source"):
        held = "records imported with --from_responses" if old.get("source") else "a run generated from models"
        raise HHAlignError(f"--out {str(out)!r} holds {held}; this run would mix its records with them: use a new "
                           "--out folder")
    keys = set(only) if only is not None else set(old) | set(fingerprint)
    if not fingerprint.get("source"):  # generated: what no record depends on yet may change
        if not any(recorded.values()):
            keys = set()
        elif not recorded["responses"]:
            keys -= set(SCORING_KEYS)
    changed = sorted(k for k in keys if old.get(k) != fingerprint.get(k))
    if changed:
        parts = [d for k in changed for d in describe_change(k, old, fingerprint, state.get("options", {}), options)]
        detail = "; ".join(dict.fromkeys(parts))
        raise HHAlignError(f"--out {str(out)!r} holds a run with other settings ({detail}): use a new --out folder, "
                           "or the same settings to resume")
    models = dict(state.get("models", {}))
    for ref in refs:
        saved, now = models.get(ref.name), ref_identity(str(ref))
        if saved is not None and _judges_identity(saved) != now and \
                ref.name in recorded["generations"] | recorded["responses"]:
            raise HHAlignError(f"--out {str(out)!r} already has model {ref.name!r} = {saved!r}, not {str(ref)!r}; "
                               "give this model another name or use a new --out folder")
        models[ref.name] = now
    new_state = {**state, "fingerprint": fingerprint, "options": options, "models": models}
    if any(old.get(k) != fingerprint.get(k) for k in SCORING_KEYS):
        new_state.pop("reward_info", None)  # the reward model changed before anything was scored
    return new_state


@contextmanager
def lock(out: Path) -> Iterator[None]:
    """Hold the folder's lock while the block runs; a folder another process holds is refused at once."""
    from filelock import FileLock, Timeout

    path = out / FILES["lock"]
    held = FileLock(str(path), timeout=0)
    try:
        held.acquire()
    except Timeout:
        raise HHAlignError(f"--out {str(out)!r} is in use by another evaluator (it holds {path.name}): wait for it "
                           "to finish, or use another --out folder") from None
    try:
        yield
    finally:
        held.release()


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove what killed runs left: the temporary files of atomic writes (``.<name>.<random>.tmp``) and the write
    probe, in the folder and under ``exports/``. Called under the folder's lock, so no live writer owns them."""
    stale = [p for p in [*out.glob(".*.tmp"), *out.glob("exports/**/.*.tmp"), out / ".write-test"] if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
        logger.info(f"removed {path}, left by a killed run")
    return stale


@contextmanager
def open_run(out_option: str, fingerprint: dict, options: dict, refs: Sequence[ModelRef] = (),
             only: Sequence[str] | None = None) -> Iterator[Path]:
    """The run folder, checked, locked, repaired and with its settings in run.json (not when ``only`` limits the
    check: a partial fingerprint is not a run's); see the module docstring for the order. Nothing is written before
    every check has passed."""
    out = Path(out_option).expanduser()
    check_folder(out, fingerprint, options, refs, only)
    prepare_out(out)
    with lock(out):
        remove_stale_temporaries(out)
        for name in LOGS:
            if repair_torn_tail(out / FILES[name]):
                logger.warning(f"{out / FILES[name]}: removed a torn last line (a killed write); that record is "
                               "made again")
        state = check_folder(out, fingerprint, options, refs, only)  # another writer may have finished meanwhile
        if only is None:
            write_json(out / FILES["run"], state)
        yield out


def write_prompts(out: Path, prompts: list[hdata.EvalPrompt]) -> Path:
    path = out / FILES["prompts"]
    write_jsonl(path, (p.to_dict() for p in prompts))
    return path
