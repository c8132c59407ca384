"""Naming a model, the same way everywhere: ``[name=]reference[@revision]`` where the reference is a Hub id, a local
folder written by ``save_pretrained``, or a PEFT adapter (Hub or local). The one place that decides whether a string
is a local path or a Hub id."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import HHAlignError

DEFAULT_REWARD_MODEL = "OpenAssistant/reward-model-deberta-v3-large-v2"
# A Hub repo id: "name" (legacy root models such as gpt2) or "org/name".
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def is_local(text: str) -> bool:
    """Whether ``text`` names a local path: it exists, or it is written as one (./, /, ~)."""
    return bool(text) and (text.startswith((".", "/", "~")) or Path(text).expanduser().exists())


def is_hub_id(text: str | None, namespaced: bool = False) -> bool:
    """Whether ``text`` can only be a Hub repo id (never a local path); ``namespaced`` requires ``org/name``."""
    if not text or is_local(text) or not _REPO_ID.match(text) or ".." in text:
        return False
    return "/" in text or not namespaced


def resolve_local(text: str | None) -> str | None:
    """An absolute path for a local reference; a Hub id (or None) unchanged."""
    if text and is_local(text):
        return str(Path(text).expanduser().resolve())
    return text


@dataclass(frozen=True)
class ModelRef:
    """``[name=]reference[@revision]``: a Hub id, a local folder, or a PEFT adapter (Hub or local)."""

    name: str
    ref: str
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        return is_local(self.ref)

    @property
    def path(self) -> str:
        return resolve_local(self.ref) or self.ref

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.name}={self.ref}{rev}"


def parse_model_ref(text: str) -> ModelRef:
    """Parse ``[name=]ref[@revision]``; the name defaults to the last path part of ``ref``."""
    text = text.strip()
    if not text:
        raise HHAlignError("empty model reference: pass a Hub id, a local folder or name=ref")
    name, sep, ref = text.partition("=")
    if not sep:
        name, ref = "", text
    revision = None
    if "@" in ref and not Path(ref).expanduser().exists():
        ref, revision = ref.rsplit("@", 1)
        if not revision:
            raise HHAlignError(f"model reference {text!r} ends with '@' but names no revision: write id@branch-or-sha")
    if not ref:
        raise HHAlignError(f"model reference {text!r} has no model after '=': write name=org/model")
    name = name.strip() or Path(ref.rstrip("/")).name
    if not re.fullmatch(r"[\w.\-+]+", name):
        raise HHAlignError(f"model name {name!r} may only hold letters, digits, '_', '-', '.', '+'; rename it")
    return ModelRef(name=name, ref=ref, revision=revision)


def parse_model_refs(texts: Sequence[str]) -> list[ModelRef]:
    """Parse several references; names must be unique."""
    refs = [parse_model_ref(t) for t in texts]
    names = [r.name for r in refs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise HHAlignError(f"model name(s) {', '.join(dupes)} given twice: name them, e.g. sft=org/model")
    return refs


def check_ref(ref: ModelRef) -> None:
    if ref.is_local:
        if not Path(ref.path).is_dir():
            raise HHAlignError(f"model folder {ref.ref!r} does not exist: check the path or pass a Hub id")
        if not (Path(ref.path) / "config.json").exists() and not (Path(ref.path) / "adapter_config.json").exists():
            raise HHAlignError(f"model folder {ref.ref!r} has neither config.json nor adapter_config.json: "
                               "point at a folder written by save_pretrained")
    elif not is_hub_id(ref.ref):
        raise HHAlignError(f"model {ref.ref!r} is neither an existing folder nor a valid Hub id (org/name)")
