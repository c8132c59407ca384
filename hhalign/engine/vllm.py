"""vLLM (CUDA GPUs; ``pip install vllm``): imported only here, and only when used.

A :class:`VLLMSession` loads a checkpoint once (a local folder or a Hub id, optionally split over several GPUs with
``tensor_parallel_size``) and answers any number of calls; vLLM batches the prompts and pages the KV cache itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import HHAlignError
from .base import until_eos


def require_vllm() -> Any:
    """The vllm module, or one line saying how to get it."""
    try:
        import vllm
    except ImportError:
        raise HHAlignError("--backend vllm needs the vllm package and a CUDA GPU: pip install vllm on a CUDA machine, "
                           "or use --backend engine") from None
    return vllm


class VLLMSession:
    """One checkpoint loaded into vLLM, answering greedy generation calls until closed."""

    def __init__(self, model_path: str, dtype: str = "float32", revision: str | None = None,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.5):
        vllm = require_vllm()
        # Part of the GPU only: the caller may hold a transformers copy of the model (or the reward model) there too.
        self.llm = vllm.LLM(model=str(model_path), revision=revision, dtype=dtype, seed=0,
                            tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization)
        self.params = vllm.SamplingParams

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int,
                     eos_token_id: int | None = None) -> list[list[int]]:
        """Greedy new token ids per prompt (token ids), cut before EOS."""
        params = self.params(temperature=0.0, max_tokens=max_new_tokens)
        outputs = self.llm.generate([{"prompt_token_ids": list(ids)} for ids in prompt_ids], params, use_tqdm=False)
        if eos_token_id is None:
            eos_token_id = self.llm.get_tokenizer().eos_token_id
        return [until_eos(list(out.outputs[0].token_ids), eos_token_id) for out in outputs]

    def close(self) -> None:
        del self.llm


def vllm_ids(model_path: str, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, dtype: str = "float32",
             eos_token_id: int | None = None, tensor_parallel_size: int = 1) -> list[list[int]]:
    """One call through a session opened and closed for it."""
    session = VLLMSession(model_path, dtype, tensor_parallel_size=tensor_parallel_size)
    try:
        return session.generate_ids(prompt_ids, max_new_tokens, eos_token_id)
    finally:
        session.close()
