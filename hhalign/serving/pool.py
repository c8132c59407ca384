"""Which models may be served (the catalog) and a memory-bounded pool that loads them on first use; adapters share
their base model's weights."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HHAlignError
from ..loading import LoadedModel, quiet_peft
from ..refs import DEFAULT_REWARD_MODEL, ModelRef, parse_model_ref
from .render import brief

GB = 1024**3

# --- which models may be loaded -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogEntry:
    """A selectable model: its display name, where it is loaded from, and what it is."""

    name: str
    ref: ModelRef
    role: str = ""
    description: str = ""


def validate_ref(ref: ModelRef) -> ModelRef:
    """The loader's own checks (existing folder with a config, or a well-formed Hub id), before anything loads."""
    from ..refs import check_ref

    check_ref(ref)
    return ref


def registry_catalog(extra: Sequence[str] = (), registry_path: str | Path | None = None) -> list[CatalogEntry]:
    """Published registry models plus ``name=ref`` extras given at launch; names must be unique."""
    from ..publish.registry import REGISTRY_PATH, load_registry

    entries = [CatalogEntry(e.name, validate_ref(parse_model_ref(e.model_arg())), e.role, e.description)
               for e in load_registry(registry_path or REGISTRY_PATH) if e.published]
    return add_models(entries, extra)


def add_models(entries: list[CatalogEntry], extra: Sequence[str]) -> list[CatalogEntry]:
    out = list(entries)
    for text in extra:
        ref = validate_ref(parse_model_ref(text))
        if any(e.name == ref.name for e in out):
            raise HHAlignError(f"--models: the name {ref.name!r} is already taken; pick another, "
                               f"e.g. my_{ref.name}={ref.ref}")
        # A local folder's path is the server's business: visitors see a Hub id only.
        where = "a local checkpoint" if ref.is_local else ref.ref
        out.append(CatalogEntry(ref.name, ref, "extra", f"added at launch: {where}"))
    if not out:
        raise HHAlignError("no model to serve: the registry has no published model yet; pass --models name=ref "
                           "or run with --demo")
    return out


# --- the memory-bounded pool ----------------------------------------------------------------------------------------


def model_bytes(model: Any) -> int:
    """Bytes held by parameters and buffers; tied weights are counted once."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        ptr = t.data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        total += t.numel() * t.element_size()
    return total


def estimate_bytes(ref: ModelRef) -> int:
    """Size of the weight files on disk (local folder or Hugging Face cache); 0 when unknown."""
    import json

    if ref.is_local:
        folder = Path(ref.path)
        return sum(p.stat().st_size for p in folder.glob("*") if p.suffix in (".safetensors", ".bin"))
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return 0
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(ref.ref, name, revision=ref.revision)
        if isinstance(path, str):
            return Path(path).stat().st_size
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        path = try_to_load_from_cache(ref.ref, name, revision=ref.revision)
        if isinstance(path, str):
            return int(json.loads(Path(path).read_text()).get("metadata", {}).get("total_size", 0))
    return 0


@dataclass
class _Group:
    """One set of base weights and the adapters attached to it; the lock serialises use (one adapter is active)."""

    key: str
    base: LoadedModel
    peft: Any = None
    tokenizers: dict = field(default_factory=dict)
    nbytes: int = 0
    last_used: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model(self) -> Any:
        return self.peft if self.peft is not None else self.base.model


class ModelPool:
    """Loads catalog models on first use and keeps them within a memory budget, least recently used out first.

    A PEFT adapter whose base is already loaded (or is loaded for it) is attached to that base instead of copying it,
    so base, SFT and two DPO adapters cost two sets of weights. Only catalog names can be loaded; remote code never is.
    """

    def __init__(self, catalog: Sequence[CatalogEntry], reward_model: str | ModelRef = DEFAULT_REWARD_MODEL,
                 device: str = "auto", dtype: str = "auto", budget_gb: float = 8.0):
        self.catalog = {e.name: e for e in catalog}
        self.reward_ref = parse_model_ref(reward_model) if isinstance(reward_model, str) else reward_model
        validate_ref(self.reward_ref)
        self.device_request, self.dtype = device, dtype
        self.budget = int(budget_gb * GB)
        self._device: str | None = None
        self._groups: dict[str, _Group] = {}
        self._members: dict[str, tuple[str, str | None]] = {}
        self._reward: LoadedModel | None = None
        self._reward_lock = threading.Lock()
        self._lock = threading.RLock()

    @property
    def device(self) -> str:
        if self._device is None:
            from ..loading import resolve_device

            self._device = resolve_device(self.device_request)
        return self._device

    def names(self) -> list[str]:
        return list(self.catalog)

    def entry(self, name: str) -> CatalogEntry:
        if not isinstance(name, str) or name not in self.catalog:
            raise HHAlignError(f"model {brief(name)} is not offered here; choose one of {', '.join(self.catalog)}")
        return self.catalog[name]

    def used_bytes(self) -> int:
        reward = self._reward.info.get("bytes", 0) if self._reward else 0
        return reward + sum(g.nbytes for g in self._groups.values())

    def stats(self) -> dict:
        return {"device": self.device, "budget_bytes": self.budget, "used_bytes": self.used_bytes(),
                "loaded": {k: sorted(n for n, (g, _) in self._members.items() if g == k) for k in self._groups},
                "reward_loaded": self._reward is not None}

    # Loading -------------------------------------------------------------------------------------------------------

    def is_loaded(self, name: str) -> bool:
        key = self._members.get(name, (None,))[0]
        return key in self._groups

    def ensure(self, name: str) -> None:
        """Load ``name`` (and its base) now, so a later :meth:`use` only computes."""
        self._resolve(name)

    def _resolve(self, name: str) -> tuple[_Group, str | None]:
        entry = self.entry(name)
        with self._lock:
            if name in self._members:
                key, adapter = self._members[name]
                if key in self._groups:
                    return self._groups[key], adapter
                del self._members[name]
            from ..loading import adapter_config

            config = adapter_config(entry.ref)
            if config is None:
                group = self._group_for(entry.ref, estimate_bytes(entry.ref))
                self._members[name] = (group.key, None)
                return group, None
            base_id = config.get("base_model_name_or_path")
            if not base_id:
                raise HHAlignError(f"adapter {entry.ref.ref!r} names no base_model_name_or_path in "
                                   "adapter_config.json: fix the adapter folder")
            base_ref = validate_ref(parse_model_ref(base_id))
            group = self._group_for(base_ref, estimate_bytes(base_ref) + estimate_bytes(entry.ref))
            self._attach(group, name, entry.ref)
            self._members[name] = (group.key, name)
            return group, name

    @staticmethod
    def _key(ref: ModelRef) -> str:
        return f"{ref.path}@{ref.revision or ''}"

    def _group_for(self, ref: ModelRef, estimate: int) -> _Group:
        key = self._key(ref)
        if key in self._groups:
            return self._groups[key]
        if estimate > self.budget:
            raise HHAlignError(f"model {ref.ref!r} needs about {estimate / GB:.1f} GB, more than the memory budget of "
                               f"{self.budget / GB:.1f} GB: raise --memory-budget-gb")
        self._evict(estimate)
        from ..loading import load_policy

        loaded = load_policy(ref, device=self.device, dtype=self.dtype, merge_adapter=False)
        group = _Group(key, loaded, tokenizers={None: loaded.tokenizer}, nbytes=model_bytes(loaded.model),
                       last_used=time.monotonic())
        self._groups[key] = group
        self._evict(0, keep=key)
        return group

    def _attach(self, group: _Group, name: str, ref: ModelRef) -> None:
        from peft import PeftModel

        from ..loading import has_tokenizer, load_error

        with group.lock:
            try:
                if group.peft is None:
                    with quiet_peft():
                        group.peft = PeftModel.from_pretrained(group.base.model, ref.path, adapter_name=name,
                                                               revision=ref.revision, is_trainable=False)
                elif name not in group.peft.peft_config:
                    group.peft.load_adapter(ref.path, adapter_name=name, revision=ref.revision, is_trainable=False)
            except Exception as exc:  # noqa: BLE001
                raise load_error(ref, exc) from None
            group.peft.to(self.device).eval()
            group.tokenizers[name] = self._tokenizer(ref) if has_tokenizer(ref) else group.base.tokenizer
            group.nbytes = model_bytes(group.peft)

    @staticmethod
    def _tokenizer(ref: ModelRef) -> Any:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ref.path, revision=ref.revision, trust_remote_code=False)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        return tok

    def _evict(self, needed: int, keep: str | None = None) -> None:
        """Drop idle groups, oldest first, until ``needed`` more bytes fit; a group in use is never dropped."""
        for group in sorted(self._groups.values(), key=lambda g: g.last_used):
            if self.used_bytes() + needed <= self.budget:
                return
            if group.key == keep or not group.lock.acquire(blocking=False):
                continue
            try:
                del self._groups[group.key]
                for name in [n for n, (k, _) in self._members.items() if k == group.key]:
                    del self._members[name]
            finally:
                group.lock.release()
        self._free_device_cache()

    def _free_device_cache(self) -> None:
        import gc

        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    @contextmanager
    def use(self, name: str) -> Iterator[tuple[Any, Any]]:
        """``(model, tokenizer)`` of ``name`` with its adapter active (or all adapters off for a base model)."""
        group, adapter = self._resolve(name)
        with group.lock:
            group.last_used = time.monotonic()
            tokenizer = group.tokenizers.get(adapter, group.base.tokenizer)
            if group.peft is None:
                yield group.base.model, tokenizer
            elif adapter is None:
                with group.peft.disable_adapter():
                    yield group.peft, tokenizer
            else:
                group.peft.set_adapter(adapter)
                yield group.peft, tokenizer

    def reward(self) -> LoadedModel:
        with self._lock:
            if self._reward is None:
                from ..loading import load_reward_model

                self._evict(estimate_bytes(self.reward_ref))
                loaded = load_reward_model(self.reward_ref, device=self.device, dtype=self.dtype)
                loaded.info["bytes"] = model_bytes(loaded.model)
                self._reward = loaded
            return self._reward

    @contextmanager
    def use_reward(self) -> Iterator[LoadedModel]:
        loaded = self.reward()
        with self._reward_lock:
            yield loaded
