"""vLLM (GPUs; ``pip install vllm``): imported only inside the function that uses it."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import HHAlignError
from .base import until_eos


def vllm_ids(model_path: str, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, dtype: str = "float32",
             eos_token_id: int | None = None) -> list[list[int]]:
    """Greedy new token ids from vLLM (GPUs; ``pip install vllm``) for a saved checkpoint folder or Hub id, cut
    before EOS. vLLM batches and pages the KV cache itself; it is imported only here."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise HHAlignError("the vllm backend needs the vllm package and a CUDA GPU: pip install vllm, or use the "
                           "default backend") from None
    # Half the GPU: the caller may hold a transformers copy of the model on the same card.
    llm = LLM(model=str(model_path), dtype=dtype, seed=0, gpu_memory_utilization=0.5)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    outputs = llm.generate([{"prompt_token_ids": list(ids)} for ids in prompt_ids], params, use_tqdm=False)
    if eos_token_id is None:
        eos_token_id = llm.get_tokenizer().eos_token_id
    del llm
    return [until_eos(list(out.outputs[0].token_ids), eos_token_id) for out in outputs]
