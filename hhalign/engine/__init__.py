"""Generation and reward scoring engines.

One interface, :class:`Generator`, with backends chosen by name (``--backend``):

* ``engine`` (default; alias ``batched``): hhalign's batched engine (:mod:`.batched`), token-identical to one prompt at
  a time in float32;
* ``loop``: the study's loop, one ``model.generate`` call per prompt (:mod:`.hf`);
* ``hf``: transformers ``generate`` on length-sorted, left-padded batches (:mod:`.hf`);
* ``vllm``: vLLM on CUDA GPUs, optionally split over several (:mod:`.vllm`).

Reward scoring lives in :mod:`.reward`, precision modes in :mod:`.precision`, the engine's CPU kernels in
:mod:`.kernels`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import HHAlignError
from ..protocol import adds_special_tokens, check_template, cut_at_turn_end, model_input, postprocess, turn_end_ids
from .base import DEFAULT_MAX_NEW_TOKENS, Generation, context_limit, encode_prompts

GENERATORS: dict[str, type[Generator]] = {}
ALIASES = {"batched": "engine"}


def register_generator(name: str) -> Callable[[type], type]:
    """Class decorator: make a :class:`Generator` subclass available under ``name``."""

    def add(cls: type) -> type:
        cls.name = name
        GENERATORS[name] = cls
        return cls

    return add


class Generator:
    """A way to produce greedy continuations: new token ids (cut before EOS) for each prompt's token ids."""

    name = ""

    def generate_ids(self, model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int,
                     batch_size: int, progress: Any | None = None) -> list[list[int]]:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the backend holds between calls (a loaded vLLM model); nothing for the others."""


def get_generator(name: str, **options: Any) -> Generator:
    """The backend registered as ``name`` (or one of its aliases), built with ``options``."""
    name = ALIASES.get(name, name)
    if name not in GENERATORS:
        raise HHAlignError(f"unknown generation backend {name!r}: use one of {', '.join(GENERATORS)}")
    return GENERATORS[name](**options)


@register_generator("engine")
class EngineGenerator(Generator):
    def __init__(self, token_budget: int | None = None):
        self.token_budget = token_budget

    def generate_ids(self, model, tokenizer, prompt_ids, max_new_tokens, batch_size, progress=None):
        from .batched import greedy_ids

        return greedy_ids(model, prompt_ids, max_new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id,
                          batch_size, self.token_budget, progress)


@register_generator("loop")
class LoopGenerator(Generator):
    def generate_ids(self, model, tokenizer, prompt_ids, max_new_tokens, batch_size, progress=None):
        from .hf import loop_ids

        return loop_ids(model, tokenizer, prompt_ids, max_new_tokens, progress)


@register_generator("hf")
class HFGenerator(Generator):
    def generate_ids(self, model, tokenizer, prompt_ids, max_new_tokens, batch_size, progress=None):
        from .hf import hf_batched_ids

        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return hf_batched_ids(model, prompt_ids, max_new_tokens, tokenizer.eos_token_id, pad, batch_size, progress)


@register_generator("vllm")
class VLLMGenerator(Generator):
    """vLLM on CUDA GPUs. The checkpoint vLLM loads is ``model_path`` (default: the model's ``name_or_path``), split
    over ``tensor_parallel_size`` GPUs; it stays loaded for later calls until :meth:`close`."""

    def __init__(self, model_path: str | None = None, revision: str | None = None, tensor_parallel_size: int = 1):
        from .vllm import require_vllm

        require_vllm()  # a missing package is one line before any work
        self.model_path, self.revision, self.tensor_parallel_size = model_path, revision, tensor_parallel_size
        self.session: Any = None
        self.key: tuple | None = None

    def generate_ids(self, model, tokenizer, prompt_ids, max_new_tokens, batch_size, progress=None):
        from .vllm import VLLMSession

        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        key = (self.model_path or model.name_or_path, self.revision, dtype)
        if self.key != key:
            self.close()
            self.session, self.key = VLLMSession(key[0], dtype, self.revision, self.tensor_parallel_size), key
        ids = self.session.generate_ids(prompt_ids, max_new_tokens, tokenizer.eos_token_id)
        if progress is not None:
            progress.update(len(ids))
        return ids

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = self.key = None


def generator_for(mode: str, backend: str = "engine", **vllm_options: Any) -> Generator:
    """The generation backend of an evaluator run: vLLM (``vllm_options``: model_path, revision,
    tensor_parallel_size) or the engine of ``mode`` (:func:`hhalign.engine.precision.engine_for`)."""
    from .precision import engine_for

    return get_generator("vllm", **vllm_options) if backend == "vllm" else get_generator(engine_for(mode))


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], protocol: str = "paper",
             max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = 8, progress: Any | None = None, *,
             engine: str | Generator = "engine") -> list[Generation]:
    """Greedy responses to ``prompts`` in input order, through the backend ``engine`` (a name or a Generator).

    ``batch_size`` caps the rows decoded together; ``progress`` (a tqdm bar) is advanced as prompts finish.
    """
    if batch_size <= 0:
        raise HHAlignError(f"--batch_size must be positive, got {batch_size}")
    if max_new_tokens <= 0:
        raise HHAlignError(f"--max_new_tokens must be positive, got {max_new_tokens}")
    backend = get_generator(engine) if isinstance(engine, str) else engine
    stops: list[int] = []
    if protocol == "template":
        check_template(tokenizer, getattr(model, "name_or_path", "") or "the model")
        stops = turn_end_ids(tokenizer, getattr(getattr(model, "generation_config", None), "eos_token_id", None))
        if stops[0] != tokenizer.eos_token_id:
            tokenizer = StopAt(tokenizer, stops[0])  # decoding stops at the end of the assistant turn
    encoded = encode_prompts(tokenizer, [model_input(p, protocol, tokenizer) for p in prompts],
                             context_limit(model, max_new_tokens), adds_special_tokens(protocol))
    new = backend.generate_ids(model, tokenizer, [e[0] for e in encoded], max_new_tokens, batch_size, progress)
    results = []
    for (prompt_ids, truncated), tokens in zip(encoded, new):
        tokens = cut_at_turn_end(tokens, stops)
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        results.append(Generation(postprocess(text, protocol), len(prompt_ids), len(tokens), truncated))
    return results


class StopAt:
    """A tokenizer whose EOS, for the backends' stopping rule only, is ``eos_token_id`` (a chat template's end of
    turn, e.g. Gemma's ``<end_of_turn>`` where the tokenizer's EOS is ``<eos>``); everything else is the tokenizer."""

    def __init__(self, tokenizer: Any, eos_token_id: int):
        self._tokenizer, self.eos_token_id = tokenizer, eos_token_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._tokenizer(*args, **kwargs)


__all__ = ["ALIASES", "EngineGenerator", "Generation", "Generator", "GENERATORS", "HFGenerator", "LoopGenerator",
           "VLLMGenerator", "generate", "generator_for", "get_generator", "register_generator"]
