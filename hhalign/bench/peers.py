"""The systems a user would pick instead of hhalign's engines, run on the benchmark's prompts and models.

Each peer is prepared once (conversions are cached by weights) and returns a callable that takes the indices of the
prompts (pairs) to run and gives the same thing as the engine it is compared with: new token ids per prompt (cut
before EOS), or one reward per pair. A peer whose package or hardware is missing raises :class:`Skipped` with the
line the table shows instead of a time.

Generation: transformers ``generate`` on length-sorted, left-padded batches; transformers' continuous batching
(``generate_batch``); CTranslate2 (the same random weights converted, float32 and int8, in length groups); vLLM (CUDA).
Scoring: a plain padded transformers batch; ONNX Runtime (the model exported once, float32 and dynamic int8, in the
engine's length groups).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.base import prefill_groups, until_eos


class Skipped(Exception):
    """A peer that cannot run here; the message says why (one line)."""


@dataclass(frozen=True)
class Peer:
    """A peer system: its table label, number format, and how to prepare it (returns the callable to time)."""

    label: str
    fmt: str
    prepare: Callable[[], Callable[[Sequence[int]], list]]


def fingerprint(model: Any) -> str:
    """Cache key of a model's conversion: its config, a sample of every weight, and the converting packages."""
    import torch
    import transformers

    # save_pretrained stamps the config (architectures, versions, dtype): those keys say nothing about the weights.
    config = {k: v for k, v in model.config.to_dict().items()
              if k not in ("architectures", "transformers_version", "_name_or_path", "dtype", "torch_dtype")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(f"{torch.__version__}|{transformers.__version__}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        digest.update(name.encode())
        digest.update(flat[:: max(1, flat.numel() // 1024)].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _length_groups(lengths: Sequence[int], max_rows: int) -> list[list[int]]:
    """Indices longest first in groups of near-equal length (the engine's prefill groups)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[a:b] for a, b in prefill_groups([lengths[i] for i in order], max_rows)]


def _require(module: str, install: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise Skipped(f"{module} is not installed ({install})") from None


# --- generation ---------------------------------------------------------------------------------------------------


def generation_peers(model: Any, tokenizer: Any, ids: list[list[int]], max_new_tokens: int, batch_size: int,
                     device: str, cache: Path) -> list[Peer]:
    """The generation peers for ``ids`` (prompt token ids) on ``model``."""
    import torch

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    def hf_generate() -> Callable[[Sequence[int]], list]:
        from ..engine.hf import hf_batched_ids

        return lambda rows: hf_batched_ids(model, [ids[i] for i in rows], max_new_tokens, eos, pad, batch_size,
                                           None)

    def continuous() -> Callable[[Sequence[int]], list]:
        if not hasattr(model, "generate_batch"):
            raise Skipped("this transformers has no continuous batching (generate_batch)")
        import inspect

        from transformers import GenerationConfig

        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad)
        sizing = {}
        if "continuous_batching_config" in inspect.signature(model.generate_batch).parameters:
            from transformers import ContinuousBatchingConfig

            # Left to itself the paged cache takes most of the machine's free memory (on a CPU, its RAM): size it
            # for these prompts instead.
            page = 256
            sizing["continuous_batching_config"] = ContinuousBatchingConfig(
                page_size=page, num_blocks=sum(-(-(len(x) + max_new_tokens) // page) for x in ids) + 1,
                max_batch_tokens=max(max(len(x) for x in ids), 512))
        elif not device.startswith("cuda"):
            raise Skipped("this transformers cannot size generate_batch's cache, which would fill the RAM")

        def run(rows: Sequence[int]) -> list[list[int]]:
            # Not under inference_mode: its generation thread updates tensors created outside it.
            out = model.generate_batch(inputs=[list(ids[i]) for i in rows], generation_config=config,
                                       progress_bar=False, **sizing)
            if len(out) != len(rows):
                raise RuntimeError(f"generate_batch answered {len(out)} of {len(rows)} requests")
            # Results are keyed by request id, in the order the requests were given.
            return [until_eos(list(out[key].generated_tokens), eos) for key in out]

        return run

    def ctranslate2(compute_type: str) -> Callable[[], Callable[[Sequence[int]], list]]:
        def prepare() -> Callable[[Sequence[int]], list]:
            ct2 = _require("ctranslate2", "pip install ctranslate2")
            ct2_device = "cuda" if device.startswith("cuda") else "cpu"
            if ct2_device == "cuda" and ct2.get_cuda_device_count() == 0:
                raise Skipped("this ctranslate2 build has no CUDA support")
            folder = cache / f"ct2-{fingerprint(model)}"
            if not (folder / "model.bin").is_file():
                _convert_ct2(model, tokenizer, folder)
            generator = ct2.Generator(str(folder), device=ct2_device, compute_type=compute_type,
                                      intra_threads=torch.get_num_threads(), inter_threads=1)
            tokens = [tokenizer.convert_ids_to_tokens(list(x)) for x in ids]

            def run(rows: Sequence[int]) -> list[list[int]]:
                out: list[list[int]] = [[] for _ in rows]
                for group in _length_groups([len(ids[i]) for i in rows], batch_size):
                    results = generator.generate_batch([tokens[rows[k]] for k in group], max_length=max_new_tokens,
                                                       sampling_topk=1, beam_size=1, include_prompt_in_result=False,
                                                       end_token=tokenizer.eos_token)
                    for k, result in zip(group, results):
                        out[k] = until_eos(list(result.sequences_ids[0]), eos)
                return out

            return run

        return prepare

    def vllm(dtype: str) -> Callable[[], Callable[[Sequence[int]], list]]:
        def prepare() -> Callable[[Sequence[int]], list]:
            _require("vllm", "pip install vllm, on a CUDA machine")
            if not device.startswith("cuda"):
                raise Skipped("vLLM runs on CUDA GPUs; this run is on a CPU")
            from ..engine.vllm import VLLMSession

            folder = cache / f"hf-{fingerprint(model)}"
            _save(model, tokenizer, folder)
            # Loaded once, outside the timings; two sessions and the transformers models share the card.
            session = VLLMSession(str(folder), dtype, gpu_memory_utilization=0.3)
            return lambda rows: session.generate_ids([ids[i] for i in rows], max_new_tokens, eos)

        return prepare

    peers = [Peer("transformers generate, length-sorted left-padded batches", "float32", hf_generate),
             Peer("transformers continuous batching (generate_batch)", "float32", continuous),
             Peer("CTranslate2, length groups", "float32", ctranslate2("float32")),
             Peer("CTranslate2, length groups", "int8", ctranslate2("int8")),
             Peer("vLLM", "float32", vllm("float32"))]
    if device.startswith("cuda"):
        peers.append(Peer("vLLM", "bfloat16", vllm("bfloat16")))
    return peers


def _save(model: Any, tokenizer: Any, folder: Path) -> None:
    """``model`` and ``tokenizer`` saved to ``folder`` once (written aside, then moved into place)."""
    if (folder / "config.json").is_file():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    from ..testing.builders import quiet_progress_bars

    with tempfile.TemporaryDirectory(prefix=".save-", dir=folder.parent) as tmp, quiet_progress_bars():
        staged = Path(tmp) / "model"
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        if folder.exists():
            shutil.rmtree(folder)
        staged.rename(folder)


def _convert_ct2(model: Any, tokenizer: Any, folder: Path) -> None:
    from ctranslate2.converters import TransformersConverter

    source = folder.parent / (folder.name + "-hf")
    _save(model, tokenizer, source)
    # quantization None keeps float32 weights; int8 is applied when a generator loads them (compute_type).
    TransformersConverter(str(source), low_cpu_mem_usage=True).convert(str(folder), force=True)


# --- scoring ------------------------------------------------------------------------------------------------------


def scoring_peers(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], batch_size: int,
                  device: str, cache: Path) -> list[Peer]:
    """The scoring peers for the (prompt, response) pairs on ``model``."""
    import torch

    def padded() -> Callable[[Sequence[int]], list]:
        def run(rows: Sequence[int]) -> list[float]:
            out: list[float] = []
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                enc = tokenizer([prompts[i] for i in chunk], [responses[i] for i in chunk], padding=True,
                                truncation=True, return_tensors="pt").to(device)
                with torch.inference_mode():
                    out += model(**enc).logits[:, 0].float().tolist()
            return out

        return run

    def onnxruntime(fmt: str) -> Callable[[], Callable[[Sequence[int]], list]]:
        def prepare() -> Callable[[Sequence[int]], list]:
            ort = _require("onnxruntime", "pip install onnxruntime onnx")
            _require("onnx", "pip install onnx")
            if device != "cpu":
                raise Skipped("the ONNX Runtime peer runs on its CPU provider; this run is on a GPU")
            path = _onnx_model(model, cache / f"onnx-{fingerprint(model)}", fmt)
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            return _ort_scorer(session, tokenizer, prompts, responses, batch_size)

        return prepare

    return [Peer("transformers, padded batches", "float32", padded),
            Peer("ONNX Runtime, length groups", "float32", onnxruntime("float32")),
            Peer("ONNX Runtime dynamic int8, length groups", "int8", onnxruntime("int8"))]


def _onnx_model(model: Any, folder: Path, fmt: str) -> Path:
    """The reward model exported to ONNX once (dynamic batch and sequence axes), and its int8 quantization."""
    import torch

    fp32 = folder / "model.onnx"
    if not fp32.is_file():
        folder.mkdir(parents=True, exist_ok=True)

        class Logits(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0]

        ids = torch.randint(5, 100, (2, 17))
        with torch.no_grad(), warnings.catch_warnings(), tempfile.TemporaryDirectory(dir=folder) as tmp:
            warnings.simplefilter("ignore")
            staged = Path(tmp) / "model.onnx"
            torch.onnx.export(Logits().eval(), (ids, torch.ones_like(ids)), str(staged), dynamo=False,
                              input_names=["input_ids", "attention_mask"], output_names=["logits"], opset_version=17,
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                            "attention_mask": {0: "batch", 1: "seq"}, "logits": {0: "batch"}})
            for path in Path(tmp).iterdir():
                os.replace(path, folder / path.name)
    if fmt == "float32":
        return fp32
    int8 = folder / "model.int8.onnx"
    if not int8.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            quantize_dynamic(str(fp32), str(Path(tmp) / int8.name), weight_type=QuantType.QInt8, per_channel=True)
            os.replace(Path(tmp) / int8.name, int8)
    return int8


def _ort_scorer(session: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
                batch_size: int) -> Callable[[Sequence[int]], list[float]]:
    import numpy as np

    def run(pairs: Sequence[int]) -> list[float]:
        rows = tokenizer([prompts[i] for i in pairs], [responses[i] for i in pairs], truncation=True)["input_ids"]
        out = [0.0] * len(rows)
        for group in _length_groups([len(r) for r in rows], batch_size):
            width = len(rows[group[0]])
            ids = np.full((len(group), width), tokenizer.pad_token_id or 0, dtype=np.int64)
            mask = np.zeros((len(group), width), dtype=np.int64)
            for row, i in enumerate(group):  # padded on the right, as the engine pads
                ids[row, : len(rows[i])] = rows[i]
                mask[row, : len(rows[i])] = 1
            logits = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            for row, i in enumerate(group):
                out[i] = float(logits[row])
        return out

    return run
