"""Batched greedy generation under the study's protocols."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from .data import ASSISTANT, HUMAN
from .errors import HHAlignError

PROTOCOLS = ("paper", "chat")
DEFAULT_MAX_NEW_TOKENS = 50


@dataclass(frozen=True)
class Generation:
    """One response: text, prompt/new token counts, and whether the prompt lost its oldest tokens."""

    response: str
    n_prompt_tokens: int
    n_new_tokens: int
    prompt_truncated: bool


def model_input(prompt: str, protocol: str = "paper") -> str:
    """The text fed to the model: ``paper`` uses the prompt as is; ``chat`` appends the assistant cue."""
    if protocol == "paper":
        return prompt
    if protocol == "chat":
        return prompt if prompt.rstrip().endswith("Assistant:") else prompt.rstrip() + ASSISTANT
    raise HHAlignError(f"unknown --protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")


def postprocess(text: str, protocol: str = "paper") -> str:
    """``chat`` cuts the reply at the next human turn; both strip surrounding whitespace."""
    if protocol == "chat":
        for marker in (HUMAN, "\nHuman:"):
            cut = text.find(marker)
            if cut >= 0:
                text = text[:cut]
    return text.strip()


def context_limit(model: Any, max_new_tokens: int) -> int:
    """Most prompt tokens that still leave room for ``max_new_tokens`` in the model's context."""
    n_ctx = getattr(model.config, "max_position_embeddings", None) or 2048
    return max(1, n_ctx - max_new_tokens)


def encode_prompts(tokenizer: Any, texts: Sequence[str], max_prompt_tokens: int) -> list[tuple[list[int], bool]]:
    """Token ids per prompt; over-long prompts keep their last tokens (after the BOS token, if any)."""
    out = []
    for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]:
        if len(ids) <= max_prompt_tokens:
            out.append((list(ids), False))
            continue
        bos = tokenizer.bos_token_id
        head = [ids[0]] if bos is not None and ids[0] == bos else []
        out.append((head + list(ids[len(ids) - (max_prompt_tokens - len(head)):]), True))
    return out


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def greedy_config(tokenizer: Any, max_new_tokens: int) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], protocol: str = "paper",
             max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = 8,
             progress: Any | None = None) -> list[Generation]:
    """Greedy responses to ``prompts`` in input order; batched with left padding and an attention mask.

    ``progress`` (a tqdm bar) is advanced by the number of prompts finished in each batch.
    """
    import torch

    if batch_size <= 0:
        raise HHAlignError(f"--batch-size must be positive, got {batch_size}")
    if max_new_tokens <= 0:
        raise HHAlignError(f"--max-new-tokens must be positive, got {max_new_tokens}")
    encoded = encode_prompts(tokenizer, [model_input(p, protocol) for p in prompts],
                             context_limit(model, max_new_tokens))
    config = greedy_config(tokenizer, max_new_tokens)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    results: list[Generation | None] = [None] * len(prompts)
    for batch in length_sorted_batches([len(ids) for ids, _ in encoded], batch_size):
        width = max(len(encoded[i][0]) for i in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids = encoded[i][0]
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                 generation_config=config)
        for row, i in enumerate(batch):
            new = out[row, width:].tolist()
            # Stop at the first EOS: later positions in a batch are padding, never real tokens.
            if tokenizer.eos_token_id in new:
                new = new[: new.index(tokenizer.eos_token_id)]
            text = tokenizer.decode(new, skip_special_tokens=True)
            results[i] = Generation(postprocess(text, protocol), len(encoded[i][0]), len(new), encoded[i][1])
        if progress is not None:
            progress.update(len(batch))
    return results  # type: ignore[return-value]
