"""The one registry of the project's models: the evaluator's defaults, the Space's selector and models.md.

The registry lives in ``hhalign/assets/registry.json`` (shipped with the package, so a Space that uploads
``hhalign/`` has it). ``models.md`` is rendered from it; a test keeps the two in step.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import HHAlignError
from ..files import ASSETS_DIR, CHECKOUT_DIR, write_json, write_text
from ..secrets import redact_text

logger = logging.getLogger(__name__)

REGISTRY_PATH = ASSETS_DIR / "registry.json"
MODELS_MD = CHECKOUT_DIR / "models.md"
ROLES = ("base", "sft", "dpo", "sft_dpo")
ROLE_TEXT = {
    "sft": "supervised fine-tuning (SFT) on the chosen HH-RLHF dialogues",
    "dpo": "Direct Preference Optimization (DPO) on HH-RLHF preference pairs",
    "sft_dpo": "DPO on HH-RLHF preference pairs, starting from the SFT model (SFT+DPO)",
}


@dataclass
class RegistryEntry:
    """A model the project publishes or compares against; ``ref`` is None until the checkpoint is pushed."""

    name: str
    role: str
    ref: str | None = None
    recipe: str | None = None
    command: str | None = None
    description: str = ""
    metrics: dict | None = None  # {"HmR": .., "HpR": .., "CAS": .., "ci95": {...}, "protocol": .., "source": ..}
    extra: dict = field(default_factory=dict)

    @property
    def published(self) -> bool:
        return bool(self.ref)

    def model_arg(self) -> str:
        """``name=ref`` as ``--models`` takes it."""
        if not self.ref:
            raise HHAlignError(f"model {self.name!r} has no published checkpoint yet: train and push it first "
                               "(training/pipeline.py) or pass --models name=path")
        return f"{self.name}={self.ref}"


def load_registry(path: str | Path = REGISTRY_PATH) -> list[RegistryEntry]:
    """Entries in file order."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HHAlignError(f"model registry {str(path)!r} cannot be read ({exc}); restore it from git") from None
    entries = [RegistryEntry(**item) for item in raw["models"]]
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise HHAlignError(f"model registry {str(path)!r} repeats a name: names must be unique")
    return entries


def save_registry(entries: list[RegistryEntry], path: str | Path = REGISTRY_PATH) -> None:
    write_json(path, {"models": [asdict(e) for e in entries]})


def published_models(path: str | Path = REGISTRY_PATH) -> list[str]:
    """``name=ref`` of every published registry model, for the evaluator's default ``--models``."""
    return [e.model_arg() for e in load_registry(path) if e.published]


def _metric(entry: RegistryEntry, key: str) -> str:
    if not entry.metrics or entry.metrics.get(key) is None:
        return "not measured"
    ci = (entry.metrics.get("ci95") or {}).get(key)
    return f"{entry.metrics[key]:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else f"{entry.metrics[key]:.1f}"


def render_models_md(entries: list[RegistryEntry]) -> str:
    """models.md: one row per registry model, with its Hub id only once it is really published."""
    lines = [
        "# Models",
        "",
        "Generated from `hhalign/assets/registry.json` by `python -m hhalign.registry`; edit the registry, not this "
        "file. A model has a Hub id only after `training/pipeline.py --push_to_hub` published it; metrics are those "
        "the evaluator measured for that checkpoint (95% bootstrap intervals in brackets).",
        "",
        "| name | role | Hub id | recipe | command | HmR % | HpR % | CAS % | measured with |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        hub = f"[`{e.ref}`](https://huggingface.co/{e.ref})" if e.ref and "/" in e.ref else (e.ref or "not published")
        how = (e.metrics or {}).get("protocol", "") if e.metrics else ""
        lines.append(
            f"| {e.name} | {e.role} | {hub} | {f'`{e.recipe}`' if e.recipe else '-'} | "
            f"{f'`{redact_text(e.command)}`' if e.command else '-'} | {_metric(e, 'HmR')} | {_metric(e, 'HpR')} | "
            f"{_metric(e, 'CAS')} | {how or '-'} |"
        )
    lines += ["", "Descriptions:", ""] + [f"- **{e.name}**: {e.description}" for e in entries if e.description]
    return "\n".join(lines) + "\n"


def write_models_md(path: str | Path, registry_path: str | Path = REGISTRY_PATH) -> Path:
    return write_text(path, render_models_md(load_registry(registry_path)))


def _registry_paths(registry_path: str | Path | None, models_md: str | Path | None) -> tuple[Path, Path]:
    return Path(registry_path or REGISTRY_PATH), Path(models_md or MODELS_MD)


def update_registry(name: str, *, role: str, ref: str, metrics: dict | None, recipe: str | None,
                    command: str | None, registry_path: str | Path | None = None,
                    models_md: str | Path | None = None) -> None:
    """Record a pushed checkpoint (real Hub id, measured metrics) and re-render models.md."""
    registry, md = _registry_paths(registry_path, models_md)
    entries = load_registry(registry)
    entry = next((e for e in entries if e.name == name), None)
    if entry is None:
        entry = RegistryEntry(name=name, role=role, description=f"{ROLE_TEXT.get(role, role)} ({name}).")
        entries.append(entry)
    entry.ref, entry.metrics = ref, metrics
    entry.recipe = recipe or entry.recipe
    # The command was redacted when it was recorded; redacted again here because the registry is published.
    entry.command = redact_text(command) if command else entry.command
    save_registry(entries, registry)
    write_models_md(md, registry)
    logger.info(f"registry: {name} = {ref}; {md} updated")


def update_base_metrics(base: str, metrics: dict, *, registry_path: str | Path | None = None,
                        models_md: str | Path | None = None) -> None:
    """Store the base model's measured metrics on the registry entry with the same Hub id, if there is one."""
    registry, md = _registry_paths(registry_path, models_md)
    entries = load_registry(registry)
    matches = [e for e in entries if e.role == "base" and e.ref == base]
    for entry in matches:
        entry.metrics = metrics
    if matches:
        save_registry(entries, registry)
        write_models_md(md, registry)
        logger.info(f"registry: metrics of base {base} updated")


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else MODELS_MD
    print(write_models_md(target))
