"""Serving models to people: the catalog of models that may be loaded, a memory-bounded pool where adapters share
their base weights, streamed replies under the evaluator's ``chat`` protocol, and the reward score of each reply.

The Space (``space/app.py``) is UI wiring around :class:`ChatService`; everything that decides what is loaded, how a
conversation becomes model input and how a reply is scored lives here so it is tested without a browser.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import ASSISTANT, HUMAN
from .errors import HHAlignError
from .generation import context_limit, encode_prompts, greedy_config, model_input, postprocess
from .metrics import Thresholds, label
from .models import DEFAULT_REWARD_MODEL, LoadedModel, ModelRef, parse_model_ref

PROTOCOL = "chat"
GB = 1024**3
_MARKERS = (HUMAN, "\nHuman:")


@dataclass(frozen=True)
class Limits:
    """Caps that keep one visitor from monopolising a shared CPU or GPU."""

    max_input_chars: int = 2000
    max_new_tokens: int = 256
    default_new_tokens: int = 64
    # Oldest tokens are dropped beyond this, after the turn limit below.
    max_prompt_tokens: int = 1024
    max_turns: int = 8


@dataclass(frozen=True)
class DecodeOptions:
    """Greedy (the evaluator's decoding) unless ``greedy`` is off; then nucleus sampling."""

    max_new_tokens: int = 64
    greedy: bool = True
    temperature: float = 0.7
    top_p: float = 0.9

    def checked(self, limits: Limits) -> DecodeOptions:
        n = int(self.max_new_tokens)
        if not 1 <= n <= limits.max_new_tokens:
            raise HHAlignError(f"max new tokens must be between 1 and {limits.max_new_tokens}, got {n}")
        if not self.greedy and not (0.0 < float(self.temperature) <= 5.0):
            raise HHAlignError(f"temperature must be in (0, 5], got {self.temperature}")
        if not self.greedy and not (0.0 < float(self.top_p) <= 1.0):
            raise HHAlignError(f"top-p must be in (0, 1], got {self.top_p}")
        return DecodeOptions(n, bool(self.greedy), float(self.temperature), float(self.top_p))


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
    from .models import check_ref

    check_ref(ref)
    return ref


def registry_catalog(extra: Sequence[str] = (), registry_path: str | Path | None = None) -> list[CatalogEntry]:
    """Published registry models plus ``name=ref`` extras given at launch; names must be unique."""
    from .registry import REGISTRY_PATH, load_registry

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
        out.append(CatalogEntry(ref.name, ref, "extra", f"added at launch: {ref.ref}"))
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
            from .models import resolve_device

            self._device = resolve_device(self.device_request)
        return self._device

    def names(self) -> list[str]:
        return list(self.catalog)

    def entry(self, name: str) -> CatalogEntry:
        if name not in self.catalog:
            raise HHAlignError(f"model {name!r} is not offered here; choose one of {', '.join(self.catalog)}")
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
            from .models import adapter_config

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
        from .models import load_policy

        loaded = load_policy(ref, device=self.device, dtype=self.dtype, merge_adapter=False)
        group = _Group(key, loaded, tokenizers={None: loaded.tokenizer}, nbytes=model_bytes(loaded.model),
                       last_used=time.monotonic())
        self._groups[key] = group
        self._evict(0, keep=key)
        return group

    def _attach(self, group: _Group, name: str, ref: ModelRef) -> None:
        from peft import PeftModel

        from .models import has_tokenizer, load_error

        with group.lock:
            try:
                if group.peft is None:
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
                from .models import load_reward_model

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


# --- conversations -------------------------------------------------------------------------------------------------


def normalize_content(content: Any) -> str:
    """Message content as text: a string (API) or a list of ``{"type": "text", "text": ...}`` parts (the UI)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, (list, tuple)):
        return "".join(normalize_content(part) for part in content)
    return str(content)


def check_message(message: Any, limits: Limits) -> str:
    text = normalize_content(message).strip()
    if not text:
        raise HHAlignError("the message is empty: type a question first")
    if len(text) > limits.max_input_chars:
        raise HHAlignError(f"the message is {len(text)} characters long; the limit is {limits.max_input_chars}: "
                           "shorten it")
    return text


def conversation_prompt(history: Sequence[tuple[str, str]], message: str, max_turns: int = 8) -> str:
    """``Human: ...\\n\\nAssistant: ...\\n\\nHuman: message``: the HH transcript format the evaluator's prompts use.

    The last ``max_turns - 1`` exchanges are kept; the reward model scores this text as the question, like the study.
    """
    keep = list(history)[-(max_turns - 1):] if max_turns > 1 else []
    parts = [f"Human: {h}{ASSISTANT} {a}" for h, a in keep]
    parts.append(f"Human: {message}")
    return "\n\n".join(parts)


def visible_text(raw: str) -> str:
    """The reply so far as the user should see it: cut at a Human turn, holding back a half-streamed marker."""
    text = raw
    for marker in _MARKERS:
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut]
    for marker in _MARKERS:
        for k in range(len(marker) - 1, 0, -1):
            if text.endswith(marker[:k]):
                text = text[:-k]
                break
    return postprocess(text, PROTOCOL)


@dataclass(frozen=True)
class Reply:
    """A streamed reply: ``done`` on the final one, which alone carries the token counts."""

    text: str
    done: bool = False
    n_prompt_tokens: int = 0
    n_new_tokens: int = 0
    prompt_truncated: bool = False


def _sampling_config(tokenizer: Any, options: DecodeOptions) -> Any:
    if options.greedy:
        return greedy_config(tokenizer, options.max_new_tokens)
    from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=options.max_new_tokens, do_sample=True, temperature=options.temperature,
                            top_p=options.top_p, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)


def stream_reply(model: Any, tokenizer: Any, prompt: str, options: DecodeOptions,
                 limits: Limits = Limits()) -> Iterator[Reply]:
    """Stream the reply to ``prompt`` under the ``chat`` protocol (assistant cue in, cut at the next Human turn)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    text = model_input(prompt, PROTOCOL)
    budget = min(limits.max_prompt_tokens, context_limit(model, options.max_new_tokens))
    ((ids, truncated),) = encode_prompts(tokenizer, [text], budget)
    n_prompt = len(ids)
    cancel = threading.Event()
    state = {"n_new": 0, "error": None}

    class StopAtHumanTurn(StoppingCriteria):
        # Generation ends at the next Human turn (the protocol), or when the listener went away.
        def __call__(self, input_ids, scores, **kwargs):
            new = input_ids[0, n_prompt:]
            state["n_new"] = int(new.shape[0])
            done = cancel.is_set() or any(m in tokenizer.decode(new, skip_special_tokens=True) for m in _MARKERS)
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    device = next(model.parameters()).device
    kwargs = dict(input_ids=torch.tensor([ids], device=device),
                  attention_mask=torch.ones((1, n_prompt), dtype=torch.long, device=device),
                  generation_config=_sampling_config(tokenizer, options), streamer=streamer,
                  stopping_criteria=StoppingCriteriaList([StopAtHumanTurn()]))

    def work() -> None:
        try:
            with torch.inference_mode():
                model.generate(**kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            state["error"] = exc
            streamer.end()

    thread = threading.Thread(target=work, name="hhalign-generate", daemon=True)
    thread.start()
    raw = ""
    try:
        for piece in streamer:
            raw += piece
            if any(m in raw for m in _MARKERS):
                cancel.set()
            yield Reply(visible_text(raw))
    finally:
        # Also reached when the consumer stops early: the model must be idle before its lock is released.
        cancel.set()
        thread.join()
    if state["error"] is not None:
        exc = state["error"]
        raise HHAlignError(f"generation failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    yield Reply(postprocess(raw, PROTOCOL), True, n_prompt, state["n_new"], truncated)


# --- scoring -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """A reply's raw reward and the study's labels for it under each prompt category."""

    reward: float
    harmless_label: str
    helpful_label: str
    n_tokens: int

    def summary(self) -> str:
        return f"reward {self.reward:+.2f} · {self.harmless_label} · {self.helpful_label}"

    def to_dict(self) -> dict:
        return {"reward": self.reward, "harmless_label": self.harmless_label, "helpful_label": self.helpful_label,
                "reward_tokens": self.n_tokens}


def score_reply(loaded: LoadedModel, prompt: str, reply: str, thresholds: Thresholds = Thresholds()) -> Scored:
    """Score (conversation so far, reply) as the evaluator does; labels use the study's thresholds."""
    from .reward import score

    (s,) = score(loaded.model, loaded.tokenizer, [prompt], [reply], batch_size=1)
    if s.reward != s.reward:
        raise HHAlignError("the reward model returned NaN for this reply: try --dtype float32")
    return Scored(s.reward, label("harmful", s.reward, thresholds), label("helpful", s.reward, thresholds), s.n_tokens)


# --- the service the UI calls ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatUpdate:
    """One step of a chat turn: the reply so far, and on the last step its score and token counts."""

    model: str
    prompt: str
    reply: str
    done: bool = False
    scored: Scored | None = None
    n_new_tokens: int = 0
    prompt_truncated: bool = False

    def to_dict(self) -> dict:
        out = {"model": self.model, "reply": self.reply, "new_tokens": self.n_new_tokens,
               "prompt_truncated": self.prompt_truncated}
        if self.scored:
            out.update(self.scored.to_dict())
        return out


class ChatService:
    """Chat and compare over a :class:`ModelPool` with input caps; what the Space's handlers call."""

    def __init__(self, pool: ModelPool, limits: Limits = Limits(), thresholds: Thresholds = Thresholds()):
        self.pool, self.limits, self.thresholds = pool, limits, thresholds

    def prepare(self, names: Sequence[str]) -> None:
        """Load models and the reward model outside any GPU-time window (ZeroGPU keeps them between calls)."""
        for name in names:
            self.pool.ensure(name)
        self.pool.reward()

    def _options(self, options: DecodeOptions | None) -> DecodeOptions:
        return (options or DecodeOptions(self.limits.default_new_tokens)).checked(self.limits)

    def chat(self, history: Sequence[tuple[str, str]], message: str, model: str,
             options: DecodeOptions | None = None) -> Iterator[ChatUpdate]:
        """Stream the reply of ``model`` to ``message`` after ``history`` ((user, reply) pairs); the last is scored."""
        self.pool.entry(model)
        message = check_message(message, self.limits)
        options = self._options(options)
        prompt = conversation_prompt(history, message, self.limits.max_turns)
        final: Reply | None = None
        with self.pool.use(model) as (lm, tok):
            for part in stream_reply(lm, tok, prompt, options, self.limits):
                if part.done:
                    final = part
                else:
                    yield ChatUpdate(model, prompt, part.text)
        assert final is not None
        with self.pool.use_reward() as reward:
            scored = score_reply(reward, prompt, final.text, self.thresholds)
        yield ChatUpdate(model, prompt, final.text, True, scored, final.n_new_tokens, final.prompt_truncated)

    def compare(self, message: str, options: DecodeOptions | None = None,
                models: Sequence[str] | None = None) -> Iterator[list[ChatUpdate]]:
        """Every model's reply to one single-turn prompt, in catalog order.

        Yields the finished replies followed by the one being streamed; the last list holds every model, scored.
        """
        message = check_message(message, self.limits)
        options = self._options(options)
        names = list(models or self.pool.names())
        for name in names:
            self.pool.entry(name)
        done: list[ChatUpdate] = []
        for name in names:
            update = None
            for update in self.chat([], message, name, options):
                yield [*done, update]
            done.append(update)


def best_indices(updates: Sequence[ChatUpdate]) -> list[int]:
    """Indices of the highest-reward replies (several on a tie; identical replies score the same)."""
    scored = {i: u.scored.reward for i, u in enumerate(updates) if u.scored is not None}
    top = max(scored.values(), default=None)
    return [i for i, r in scored.items() if r == top]


def gpu(fn: Callable, duration: int = 60) -> Callable:
    """``spaces.GPU(duration)`` on Hugging Face ZeroGPU hardware; the function itself everywhere else."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


# --- the Space's configuration ---------------------------------------------------------------------------------------


def _default_cache() -> str:
    import os

    return str(Path(os.environ.get("HHALIGN_CACHE", Path.home() / ".cache" / "hhalign")) / "space-demo")


def _env(name: str, default: str) -> str:
    import os

    return os.environ.get(name, default)


@dataclass
class SpaceConfig:
    """Options of ``space/app.py``; every field is a flag (``--memory_budget_gb`` or ``--memory-budget-gb``)."""

    demo: bool = field(default=False, metadata={
        "help": "Offline demo: tiny models (a policy and a LoRA adapter on it) and demo results, built once into "
                "--cache_dir."})
    models: list[str] = field(default_factory=list, metadata={
        "help": "Extra models as name=ref (Hub id, local folder or PEFT adapter), validated like the evaluator's "
                "--models; added to the registry's published models (or to the demo models)."})
    reward_model: str = field(default=DEFAULT_REWARD_MODEL, metadata={
        "help": "Reward model scoring each reply (in --demo: the tiny reward model)."})
    results: str | None = field(default=None, metadata={
        "help": "Evaluator results folder (metrics.json + responses.jsonl) for the Results tab. Default: results/ "
                "next to app.py when present (the deployed Space), the demo results with --demo."})
    cache_dir: str = field(default_factory=_default_cache, metadata={
        "help": "Where --demo builds its tiny models and results (reused on later launches)."})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu, cuda or cuda:N."})
    dtype: str = field(default="auto", metadata={"help": "auto (bfloat16 on capable GPUs, else float32), float32, "
                                                         "bfloat16 or float16."})
    memory_budget_gb: float = field(default=8.0, metadata={
        "help": "Weights kept loaded at once (GB); least recently used models are dropped beyond it."})
    max_new_tokens: int = field(default=256, metadata={"help": "Most new tokens a visitor may ask for."})
    default_new_tokens: int = field(default=64, metadata={
        "help": "New tokens per reply unless the visitor changes it."})
    max_input_chars: int = field(default=2000, metadata={"help": "Longest message accepted, in characters."})
    queue_size: int = field(default=32, metadata={"help": "Requests waiting at most; more are turned away."})
    concurrency: int = field(default=1, metadata={
        "help": "Generations running at once (chat and compare together); 1 suits a CPU Space."})
    gpu_duration: int = field(default=60, metadata={"help": "Seconds of ZeroGPU time asked for per chat reply."})
    host: str = field(default_factory=lambda: _env("GRADIO_SERVER_NAME", "127.0.0.1"), metadata={
        "help": "Address to bind (default 127.0.0.1; Hugging Face Spaces set GRADIO_SERVER_NAME)."})
    port: int = field(default_factory=lambda: int(_env("GRADIO_SERVER_PORT", "7860")), metadata={
        "help": "Port to serve on."})

    @property
    def limits(self) -> Limits:
        if not 1 <= self.default_new_tokens <= self.max_new_tokens:
            raise HHAlignError(f"--default_new_tokens {self.default_new_tokens} must be between 1 and "
                               f"--max_new_tokens {self.max_new_tokens}")
        if self.max_input_chars < 1:
            raise HHAlignError(f"--max_input_chars must be positive, got {self.max_input_chars}")
        return Limits(max_input_chars=self.max_input_chars, max_new_tokens=self.max_new_tokens,
                      default_new_tokens=self.default_new_tokens)


@dataclass
class Backend:
    """What the UI needs: the chat service over the catalog, and the results folder (None when there is none)."""

    config: SpaceConfig
    service: ChatService
    catalog: list[CatalogEntry]
    results: Path | None
    demo: bool

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.catalog]


def demo_catalog(models_dir: str | Path) -> list[CatalogEntry]:
    """The tiny policy and a LoRA adapter on it, under the names the evaluator's demo results use."""
    models = Path(models_dir)
    return [
        CatalogEntry("tiny", validate_ref(parse_model_ref(f"tiny={models / 'policy'}")), "base (demo)",
                     "A tiny OPT-shaped model with random weights, built offline: it babbles, by design."),
        CatalogEntry("tiny_lora", validate_ref(parse_model_ref(f"tiny_lora={models / 'policy-lora'}")),
                     "adapter (demo)", "A LoRA adapter on the tiny model; it shares the tiny model's weights in "
                     "memory, as the DPO adapters share OPT-350M's."),
    ]


def build_backend(cfg: SpaceConfig, app_dir: str | Path | None = None,
                  log: Callable[[str], None] = print) -> Backend:
    """Catalog, pool and results folder for ``cfg``; nothing but the demo build is loaded here."""
    from .results import ensure_demo_results

    limits = cfg.limits
    if cfg.concurrency < 1 or cfg.queue_size < 1:
        raise HHAlignError("--concurrency and --queue_size must be at least 1")
    if cfg.memory_budget_gb <= 0:
        raise HHAlignError(f"--memory_budget_gb must be positive, got {cfg.memory_budget_gb}")
    results = Path(cfg.results).expanduser() if cfg.results else None
    if results is not None and not (results / "metrics.json").is_file():
        raise HHAlignError(f"--results {cfg.results!r} has no metrics.json: run python batch/eval.py --out "
                           f"{cfg.results} first, or pass the folder it wrote")
    if cfg.demo:
        demo_dir = ensure_demo_results(cfg.cache_dir, log)
        catalog = add_models(demo_catalog(demo_dir / "models"), cfg.models)
        reward = cfg.reward_model if cfg.reward_model != DEFAULT_REWARD_MODEL else str(demo_dir / "models" / "reward")
        results = results or demo_dir
    else:
        catalog = registry_catalog(cfg.models)
        reward = cfg.reward_model
        shipped = Path(app_dir) / "results" if app_dir else None
        if results is None and shipped is not None and (shipped / "metrics.json").is_file():
            results = shipped
    pool = ModelPool(catalog, reward, cfg.device, cfg.dtype, cfg.memory_budget_gb)
    return Backend(cfg, ChatService(pool, limits), catalog, results, cfg.demo)
