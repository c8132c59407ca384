"""Conversations with a served model: input caps, streamed replies under the model's chat template or the
evaluator's ``chat`` protocol, the reward score of each reply, and the service the Space's handlers call."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..engine.base import context_limit, encode_prompts, greedy_config
from ..errors import HHAlignError
from ..loading import LoadedModel
from ..protocol import (
    ASSISTANT,
    HUMAN_MARKERS,
    adds_special_tokens,
    model_input,
    postprocess,
    serving_protocol,
    turn_end_ids,
)
from ..stats.metrics import Thresholds
from .pool import ModelPool
from .render import CATEGORIES, brief, verdict

PROTOCOL = "chat"


@dataclass(frozen=True)
class Limits:
    """Caps that keep one visitor from monopolising a shared CPU or GPU."""

    max_input_chars: int = 2000
    max_new_tokens: int = 256
    default_new_tokens: int = 64
    # Oldest tokens are dropped beyond this, after the turn limit below.
    max_prompt_tokens: int = 1024
    max_turns: int = 8
    # The reward model reads at most this many tokens (conversation + reply), the latest kept; 0: its trained length
    # (see judge_length). Uncapped, a long conversation made each score cost seconds and gigabytes.
    judge_max_tokens: int = 0
    # Exchanges a session keeps per model (shown, and the source of the last max_turns - 1 the model reads).
    max_kept_turns: int = 100


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
    for marker in HUMAN_MARKERS:
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut]
    for marker in HUMAN_MARKERS:
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
    """Stream the reply to ``prompt`` under the ``chat`` protocol (assistant cue in, cut at the next Human turn), or
    through the model's chat template when it has one (cut at its end of turn)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    protocol = serving_protocol(tokenizer)  # a model's own chat template when it has one (hhalign.protocol)
    markers = HUMAN_MARKERS if protocol == PROTOCOL else ()
    text = model_input(prompt, protocol, tokenizer)
    budget = min(limits.max_prompt_tokens, context_limit(model, options.max_new_tokens))
    ((ids, truncated),) = encode_prompts(tokenizer, [text], budget, adds_special_tokens(protocol))
    n_prompt = len(ids)
    cancel = threading.Event()
    state = {"n_new": 0, "error": None}

    class StopAtHumanTurn(StoppingCriteria):
        # Generation ends at the next Human turn (the protocol), or when the listener went away.
        def __call__(self, input_ids, scores, **kwargs):
            new = input_ids[0, n_prompt:]
            state["n_new"] = int(new.shape[0])
            done = cancel.is_set() or any(m in tokenizer.decode(new, skip_special_tokens=True) for m in markers)
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

    if protocol == "template":  # the reply ends at the template's end of turn (or EOS)
        kwargs["generation_config"].eos_token_id = turn_end_ids(tokenizer, model.generation_config.eos_token_id)
    thread = threading.Thread(target=work, name="hhalign-generate", daemon=True)
    thread.start()
    raw = ""
    try:
        for piece in streamer:
            raw += piece
            if any(m in raw for m in markers):
                cancel.set()
            yield Reply(visible_text(raw) if markers else postprocess(raw, protocol))
    finally:
        # Also reached when the consumer stops early: the model must be idle before its lock is released.
        cancel.set()
        thread.join()
    if state["error"] is not None:
        exc = state["error"]
        raise HHAlignError(f"generation failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    yield Reply(postprocess(raw, protocol), True, n_prompt, state["n_new"], truncated)


# --- scoring -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """A reply's raw reward and the study's label for it under the prompt's category (harmful or helpful)."""

    reward: float
    category: str
    label: str
    passed: bool
    n_tokens: int
    # The reward model read the conversation's latest n_tokens only (it was longer than the judge's limit).
    truncated: bool = False

    def summary(self) -> str:
        return f"reward {self.reward:+.2f} · {self.label}"

    def to_dict(self) -> dict:
        return {"reward": self.reward, "category": self.category, "label": self.label, "passed": self.passed,
                "reward_tokens": self.n_tokens, "reward_input_truncated": self.truncated}


def check_category(category: Any) -> str:
    if not isinstance(category, str) or category not in CATEGORIES:
        raise HHAlignError(f"unknown kind of prompt {brief(category)}: use 'helpful' (an ordinary question) or "
                           "'harmful' (a harmful request)")
    return category


# Tokenizers that state no length of their own say this (transformers' VERY_LARGE_INTEGER is about 1e30).
_NO_LENGTH = 1_000_000


def judge_length(loaded: LoadedModel, cap: int = 0) -> int:
    """Most tokens the reward model reads: ``cap`` when given, else the tokenizer's ``model_max_length`` when it states
    one, else the config's ``max_position_embeddings`` (512 for the OpenAssistant DeBERTa, whose tokenizer says 1e30),
    else ``hhalign.engine.reward.TRAINED_LENGTH`` (512)."""
    from ..engine.reward import TRAINED_LENGTH

    if cap:
        return int(cap)
    stated = getattr(loaded.tokenizer, "model_max_length", None)
    if isinstance(stated, int) and 2 < stated < _NO_LENGTH:
        return stated
    positions = getattr(getattr(loaded.model, "config", None), "max_position_embeddings", None)
    return positions if isinstance(positions, int) and positions > 2 else TRAINED_LENGTH


def _pair_length(tokenizer: Any, prompt: str, reply: str) -> int:
    # As encode_pairs encodes: an empty reply is the prompt alone ([CLS] p [SEP]).
    enc = tokenizer(prompt, reply) if reply else tokenizer(prompt)
    return len(enc["input_ids"])


def judge_prompt(tokenizer: Any, history: Sequence[tuple[str, str]], message: str, reply: str,
                 max_tokens: int, max_turns: int = 8) -> tuple[str, bool]:
    """(conversation the reward model reads, whether it was cut): the conversation as :func:`conversation_prompt`
    writes it when it fits in ``max_tokens`` with the reply, else its latest exchanges that fit, else the last
    tokens of the message alone. The reply itself is never cut here (the policy's replies are short)."""
    kept = list(history)[-(max_turns - 1):] if max_turns > 1 else []
    full = conversation_prompt(kept, message, max_turns)
    for start in range(len(kept) + 1):
        prompt = conversation_prompt(kept[start:], message, max_turns)
        if _pair_length(tokenizer, prompt, reply) <= max_tokens:
            return prompt, prompt != full
    # The message alone is too long: keep its last tokens (the whole reply and the special tokens take the rest).
    prompt = conversation_prompt([], message, max_turns)
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc.get("offset_mapping")
    keep = max(1, max_tokens - (_pair_length(tokenizer, prompt, reply) - len(ids)))
    if keep >= len(ids):
        return prompt, prompt != full
    if offsets:
        return prompt[offsets[-keep][0]:], True
    return tokenizer.decode(ids[-keep:]), True


def score_reply(loaded: LoadedModel, prompt: str, reply: str, category: str = "helpful",
                thresholds: Thresholds = Thresholds(), max_length: int | None = None, cut: bool = False) -> Scored:
    """Score (conversation so far, reply) as the evaluator does; the label is the study's for ``category``.
    ``max_length`` caps the tokens read (a pair longer is cut by the tokenizer); ``cut`` says the conversation was
    already shortened, so the score is marked truncated."""
    from ..engine.reward import score

    (s,) = score(loaded.model, loaded.tokenizer, [prompt], [reply], batch_size=1, max_length=max_length)
    if s.reward != s.reward:
        raise HHAlignError("the reward model returned NaN for this reply: try --dtype float32")
    word, good = verdict(category, s.reward, thresholds)
    return Scored(s.reward, category, word, good, s.n_tokens, cut or s.truncated)


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
             options: DecodeOptions | None = None, category: str = "helpful") -> Iterator[ChatUpdate]:
        """Stream the reply of ``model`` to ``message`` after ``history`` ((user, reply) pairs); the last is scored
        with the label for ``category`` (the kind of prompt: helpful or harmful)."""
        self.pool.entry(model)
        check_category(category)
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
            cap = judge_length(reward, self.limits.judge_max_tokens)
            judged, cut = judge_prompt(reward.tokenizer, history, message, final.text, cap, self.limits.max_turns)
            scored = score_reply(reward, judged, final.text, category, self.thresholds, cap, cut)
        yield ChatUpdate(model, prompt, final.text, True, scored, final.n_new_tokens, final.prompt_truncated)

    def compare(self, message: str, options: DecodeOptions | None = None, models: Sequence[str] | None = None,
                category: str = "helpful") -> Iterator[list[ChatUpdate]]:
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
            for update in self.chat([], message, name, options, category):
                yield [*done, update]
            done.append(update)


def best_indices(updates: Sequence[ChatUpdate]) -> list[int]:
    """Indices of the highest-reward replies (several on a tie; identical replies score the same)."""
    scored = {i: u.scored.reward for i, u in enumerate(updates) if u.scored is not None}
    top = max(scored.values(), default=None)
    return [i for i, r in scored.items() if r == top]
