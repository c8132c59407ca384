"""A run folder as a small database: its file names, the settings its records belong to, and the checks that keep
one folder from mixing two runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import data as hdata
from ..errors import HHAlignError
from ..files import write_json, write_jsonl
from ..refs import ModelRef
from .config import EvalConfig
from .judges import judges_fingerprint
from .schema import FILES


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


def run_fingerprint(cfg: EvalConfig, prompts: list[hdata.EvalPrompt], device: str) -> dict:
    """The settings that change records; a folder's records may only be extended under the same fingerprint."""
    return {
        "prompts_sha256": prompts_digest(prompts),
        "protocol": cfg.protocol,
        "max_new_tokens": cfg.max_new_tokens,
        "reward_model": judges_fingerprint(cfg.reward_model, cfg.judge_formats),
        "reward_max_length": cfg.reward_max_length,
        "dtype": cfg.dtype,
        # fp32 is how every run before --mode existed was made: left out so such folders still resume.
        **({"mode": cfg.mode} if cfg.mode != "fp32" else {}),
        "device_type": device.split(":")[0],
        "batch_size": cfg.batch_size,
        "reward_batch_size": cfg.reward_batch_size or cfg.batch_size,
    }


def check_resume(out: Path, fingerprint: dict, refs: list[ModelRef]) -> dict:
    """Refuse to mix settings or to reuse a model name for another reference; return the saved run state."""
    path = out / FILES["run"]
    state = json.loads(path.read_text()) if path.exists() else {"fingerprint": fingerprint, "models": {}}
    old = state["fingerprint"]
    changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed)
        raise HHAlignError(f"--out {str(out)!r} holds a run with other settings ({detail}); use a new --out folder "
                           "or the same settings to resume")
    for ref in refs:
        saved = state["models"].get(ref.name)
        if saved is not None and saved != str(ref):
            raise HHAlignError(f"--out {str(out)!r} already has model {ref.name!r} = {saved!r}, not {str(ref)!r}; "
                               "give this model another name or use a new --out folder")
        state["models"][ref.name] = str(ref)
    write_json(path, state)
    return state


def write_prompts(out: Path, prompts: list[hdata.EvalPrompt]) -> Path:
    path = out / FILES["prompts"]
    write_jsonl(path, (p.to_dict() for p in prompts))
    return path
