"""Benchmark machinery behind ``batch/bench.py``: the study's loop against hhalign's engine, on the real architectures.

Nothing is downloaded. The models are OPT-350M and DeBERTa-v3-large built from their exact configurations with
random weights (speed depends on shapes, not on weight values); their tokenizers are stand-ins trained on the spot
(byte-level BPE like OPT's GPT-2 vocabulary, a SentencePiece-style vocabulary like DeBERTa-v3's) on the local
HH-RLHF text, so prompts have realistic token counts. Random weights rarely produce EOS, so every answer runs the
full ``max_new_tokens``: a worst case for generation time.

Three modes per task, on the same prompts: the study's loop (one prompt or pair per call, float32), the engine in
float32, and the engine in the hardware's fastest number format (:func:`hhalign.generation.fast_format`). The FLOP
floor is the workload's arithmetic divided by the machine's measured matrix-multiply rate.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import check_device, check_positive
from ..errors import HHAlignError
from ..files import write_json

logger = logging.getLogger(__name__)

# facebook/opt-350m's config.json (the fields that shape the computation).
OPT_350M = dict(
    vocab_size=50272, hidden_size=1024, num_hidden_layers=24, ffn_dim=4096, num_attention_heads=16,
    word_embed_proj_dim=512, do_layer_norm_before=False, max_position_embeddings=2048, activation_function="relu",
    enable_bias=True, dropout=0.1, attention_dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2,
    prefix="</s>",
)
# OpenAssistant/reward-model-deberta-v3-large-v2's config.json (DeBERTa-v3-large with a one-logit head).
DEBERTA_V3_LARGE = dict(
    vocab_size=128100, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    hidden_act="gelu", max_position_embeddings=512, type_vocab_size=0, layer_norm_eps=1e-7, pad_token_id=0,
    relative_attention=True, max_relative_positions=-1, position_buckets=256, position_biased_input=False,
    pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", share_att_key=True, pooler_hidden_size=1024,
    pooler_dropout=0.0, pooler_hidden_act="gelu", num_labels=1,
)
# The same shapes in miniature (the tests' size): seconds instead of minutes.
OPT_TINY = {**OPT_350M, "hidden_size": 64, "num_hidden_layers": 2, "ffn_dim": 128, "num_attention_heads": 4,
            "word_embed_proj_dim": 32, "vocab_size": 2048}
DEBERTA_TINY = {**DEBERTA_V3_LARGE, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "intermediate_size": 128, "pooler_hidden_size": 64, "vocab_size": 2048}

POLICY_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # OPT's first four ids
REWARD_SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")  # DeBERTa-v3's
# Stand-in vocabulary sizes. OPT's is its real one (50265 + 7 unused rows in the model): 0.236 tokens per character
# on the study's prompts, close to GPT-2 BPE's ~0.25 on English. A 128k vocabulary trained on the 16 MB of HH-RLHF
# alone would be made of whole dialogue words (0.179 tokens per character) and flatter the reward model; 32k pieces
# give 0.195, nearer a broad-corpus SentencePiece model's counts.
POLICY_VOCAB = 50265
REWARD_VOCAB = 32000
TINY_VOCAB = 2000
SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
DEFAULT_N = 16


@dataclass
class BenchConfig:
    """Options of ``batch/bench.py``; every field is a CLI flag (``--field_name``)."""

    n: int = field(default=DEFAULT_N, metadata={
        "help": "Prompts to time (the first n/2 harmful and n/2 helpful prompts of the study's set). The study's loop "
                "dominates the run: about 6 s per prompt for OPT-350M on a 2-core CPU, plus 2 s per pair scored."})
    dataset: str = field(default="../shared/data/hh-rlhf", metadata={
        "help": "Local HH-RLHF folder for the study's prompts and the stand-in tokenizers; when it does not exist the "
                "shipped demo prompts are used (nothing is downloaded)."})
    max_new_tokens: int = field(default=50, metadata={"help": "Greedy tokens per answer (the study: 50)."})
    batch_size: int = field(default=32, metadata={
        "help": "Engine: most prompts decoded together (the evaluator's default)."})
    token_budget: int | None = field(default=None, metadata={
        "help": "Engine: KV-cache positions per decode batch (default: hhalign.generation.DEFAULT_TOKEN_BUDGET)."})
    reward_batch_size: int = field(default=32, metadata={
        "help": "Engine: most pairs per reward forward pass (the evaluator's default)."})
    reward_token_budget: int | None = field(default=None, metadata={
        "help": "Engine: padded tokens per reward forward pass (default: hhalign.reward.DEFAULT_TOKEN_BUDGET)."})
    fast: str = field(default="auto", metadata={
        "help": "Fast mode's number format: auto (bfloat16 where the hardware has it, else int8 on x86 CPUs), "
                "bfloat16, int8 or float32."})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu or cuda."})
    backend: str = field(default="hf", metadata={
        "help": "Generation engine: hf (hhalign's engine over transformers) or vllm (GPU; needs the vllm package)."})
    tiny: bool = field(default=False, metadata={
        "help": "Miniature architectures and vocabularies: a smoke test in seconds, not a measurement."})
    seed: int = field(default=0, metadata={"help": "Seed of the random weights."})
    repeat: int = field(default=1, metadata={
        "help": "Time every mode this many times and keep the fastest (other processes only ever add time)."})
    json: str | None = field(default=None, metadata={"help": "Also write the table as JSON to this file."})

    def __post_init__(self) -> None:
        check_positive(self, {"n": "prompts", "max_new_tokens": "tokens", "batch_size": "prompts",
                              "token_budget": "positions", "reward_batch_size": "pairs",
                              "reward_token_budget": "tokens", "repeat": "rounds"})
        if self.backend not in ("hf", "vllm"):
            raise HHAlignError(f"unknown --backend {self.backend!r}: use hf or vllm")
        if self.fast not in ("auto", "bfloat16", "int8", "float32"):
            raise HHAlignError(f"unknown --fast {self.fast!r}: use auto, bfloat16, int8 or float32")
        check_device(self.device)


# --- models -------------------------------------------------------------------------------------------------------


def training_texts(dataset: str | None) -> tuple[list[str], str]:
    """Text for the stand-in tokenizers: HH-RLHF test dialogues from a local folder, else the shipped corpus."""
    if dataset and Path(dataset).expanduser().is_dir():
        from ..data import load_hh

        texts = []
        for subset in SUBSETS:
            if (Path(dataset).expanduser() / subset).is_dir():
                for row in load_hh(dataset, subset, "test"):
                    texts += [row["chosen"], row["rejected"]]
        if texts:
            return texts, f"HH-RLHF test dialogues in {dataset}"
    from ..data import DEMO_PROMPTS_PATH
    from ..testing.tiny import CORPUS_PATH

    texts = CORPUS_PATH.read_text(encoding="utf-8").splitlines()
    lines = DEMO_PROMPTS_PATH.read_text(encoding="utf-8").splitlines()
    texts += [json.loads(line)["prompt"] for line in lines if line.strip()]
    return texts, "hhalign's tiny corpus and demo prompts"


def policy_tokenizer(texts: Sequence[str], vocab_size: int = POLICY_VOCAB) -> Any:
    """Byte-level BPE with OPT's special ids; prepends ``</s>`` as BOS like OPT's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(POLICY_SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="</s> $A", pair="</s> $A </s> $B",
                                                       special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", padding_side="left")


def reward_tokenizer(texts: Sequence[str], vocab_size: int = REWARD_VOCAB) -> Any:
    """Metaspace subword vocabulary with DeBERTa-v3's special ids and pair template ``[CLS] A [SEP] B [SEP]``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(),
                                           normalizers.Strip(left=False, right=True)])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(REWARD_SPECIALS), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    # model_max_length as the real reward model's tokenizer: truncation=True alone truncates nothing.
    return PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                   unk_token="[UNK]", mask_token="[MASK]", model_max_length=int(1e30),
                                   padding_side="right")


def _seeded(build: Callable[[], Any], seed: int) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def build_policy(tiny: bool = False, seed: int = 0) -> Any:
    """OPT-350M (or its miniature) with random weights."""
    from transformers import GenerationConfig, OPTConfig, OPTForCausalLM

    config = OPTConfig(**(OPT_TINY if tiny else OPT_350M))
    model = _seeded(lambda: OPTForCausalLM(config), seed)
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=2, pad_token_id=1)
    return model


def build_reward(tiny: bool = False, seed: int = 0) -> Any:
    """DeBERTa-v3-large reward model (or its miniature) with random weights."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    config = DebertaV2Config(**(DEBERTA_TINY if tiny else DEBERTA_V3_LARGE))
    return _seeded(lambda: DebertaV2ForSequenceClassification(config), seed + 1)


# --- prompts ------------------------------------------------------------------------------------------------------


def bench_prompts(n: int, dataset: str | None) -> tuple[list[str], str]:
    """The first ``n`` prompts of the study's set, half harmful and half helpful, else the demo prompts (cycled)."""
    from ..data import build_prompt_set, limit_prompts

    if n <= 0:
        raise HHAlignError(f"--n must be a positive number of prompts, got {n}")
    if dataset and Path(dataset).expanduser().is_dir():
        prompts = build_prompt_set("paper", dataset)
        harmful = [p.prompt for p in limit_prompts(prompts, n - n // 2) if p.category == "harmful"]
        helpful = [p.prompt for p in limit_prompts(prompts, n // 2) if p.category == "helpful"]
        chosen = harmful + helpful
        if len(chosen) < n:
            raise HHAlignError(f"--n {n}: the study's prompt set has only {len(prompts)} prompts")
        return chosen, f"the study's prompts ({len(harmful)} harmful + {len(helpful)} helpful, from {dataset})"
    demo = [p.prompt for p in build_prompt_set("demo")]
    return [demo[i % len(demo)] for i in range(n)], "hhalign's demo prompts (no local HH-RLHF copy)"


# --- measurement --------------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str = "cpu") -> tuple[Any, float]:
    """``fn()``'s result and its wall-clock seconds."""
    gc.collect()
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return result, time.perf_counter() - start


def matmul_rate(fmt: str = "float32", device: str = "cpu", m: int = 512, k: int = 1024, n: int = 4096,
                seconds: float = 1.0) -> float:
    """Best observed multiply-adds x 2 per second for an (m x k) @ (k x n) product in ``fmt`` (a prefill-sized product
    of these models' 1024 -> 4096 layers). ``int8`` times PyTorch's dynamically quantized linear layer."""
    import torch

    from ..engine.precision import to_fast

    with torch.inference_mode():
        layer = torch.nn.Linear(k, n, bias=False).to(device)
        x = torch.randn(m, k, device=device)
        if fmt == "bfloat16":
            layer, x = layer.to(torch.bfloat16), x.to(torch.bfloat16)
        elif fmt == "int8":
            layer = to_fast(torch.nn.Sequential(layer), device, "int8")[0]
        layer(x)
        best, deadline = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            _sync(device)
            start = time.perf_counter()
            layer(x)
            _sync(device)
            best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best


def _linear_params(model: Any, skip: Sequence[str] = ()) -> int:
    import torch

    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(name.startswith(s) for s in skip):
            total += module.weight.numel()
    return total


def generation_flops(model: Any, prompt_lengths: Sequence[int], new_lengths: Sequence[int],
                     max_new_tokens: int) -> float:
    """Arithmetic of greedy generation with a KV cache: 2 x (linear weights) per token fed, the vocabulary projection
    per token chosen, and 4 x hidden x context per token and layer in attention."""
    config = model.config
    head = model.get_output_embeddings().weight.numel()
    body = _linear_params(model) - head
    d, layers = config.hidden_size, config.num_hidden_layers
    total = 0.0
    for t, g in zip(prompt_lengths, new_lengths):
        stopped = g < max_new_tokens  # the EOS token was chosen too but never fed back
        fed = t + g - (0 if stopped else 1)
        chosen = g + (1 if stopped else 0)
        total += 2 * body * fed + 2 * head * chosen + 2 * d * layers * fed * (fed + 1)
    return total


def scoring_flops(model: Any, lengths: Sequence[int]) -> float:
    """Arithmetic of DeBERTa-v2/v3 scoring: 2 x (linear weights) per token, 4 x hidden x n per token and layer for
    content attention, 2 x 2 x (2 x buckets) x hidden per token and layer for the two relative terms, and the
    relative embeddings' projections once (they do not depend on the text)."""
    config = model.config
    body = _linear_params(model, skip=("pooler", "classifier"))
    d, layers = config.hidden_size, config.num_hidden_layers
    span = 2 * (config.position_buckets if config.position_buckets > 0 else config.max_position_embeddings)
    total = 2 * layers * 2 * span * d * d  # rel embeddings through query_proj and key_proj (shared keys)
    for n in lengths:
        total += 2 * body * n + 4 * d * layers * n * n + 4 * span * d * layers * n + 2 * (d * d + d)
    return total


def machine_info(device: str, threads: int) -> dict:
    import torch

    from ..env import cpu_flags

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    flags = cpu_flags()
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni") if f in flags]
    info = {"cpu": cpu, "cpus": os.cpu_count(), "simd": simd, "threads": threads, "device": device,
            "torch": torch.__version__, "gpu": None, "load_average": [round(x, 2) for x in os.getloadavg()]}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# --- the benchmark ------------------------------------------------------------------------------------------------


def _agreement(reference: Sequence[Sequence[int]], other: Sequence[Sequence[int]]) -> tuple[int, float]:
    """(answers identical to the reference, share of the reference's token positions with the same token)."""
    same = sum(list(a) == list(b) for a, b in zip(reference, other))
    positions = sum(max(len(a), len(b)) for a, b in zip(reference, other))
    equal = sum(sum(x == y for x, y in zip(a, b)) for a, b in zip(reference, other))
    return same, (equal / positions if positions else 1.0)


def _resolve_device(device: str) -> str:
    from ..loading import resolve_device

    return resolve_device(device)


def run(cfg: BenchConfig) -> dict:
    """Run the benchmark as configured; returns the table (the ``--json`` layout)."""
    import torch

    from ..engine.precision import fast_format

    device = _resolve_device(cfg.device)
    fmt = fast_format(device) if cfg.fast == "auto" else cfg.fast
    machine = machine_info(device, torch.get_num_threads())
    prompts, prompt_source = bench_prompts(cfg.n, cfg.dataset)
    setup_start = time.perf_counter()
    texts, text_source = training_texts(cfg.dataset)
    # Miniature vocabularies for the miniature models (they must fit the models' 2048 embedding rows).
    ptok = policy_tokenizer(texts, TINY_VOCAB if cfg.tiny else POLICY_VOCAB)
    rtok = reward_tokenizer(texts, TINY_VOCAB if cfg.tiny else REWARD_VOCAB)
    logger.info(
        f"{'tiny OPT' if cfg.tiny else 'OPT-350M'} and {'tiny DeBERTa' if cfg.tiny else 'DeBERTa-v3-large'} with "
        f"random weights on {device}; {len(prompts)} prompts: {prompt_source}; stand-in tokenizers trained on "
        f"{text_source} ({time.perf_counter() - setup_start:.0f} s); fast mode: {fmt}")
    # The machine's matmul rate, before and after the timings; the better one sets the floor (an optimistic bound).
    rates = [(matmul_rate("float32", device), matmul_rate(fmt, device))]
    generation, responses = _bench_generation(cfg, device, fmt, prompts, ptok)
    scoring = _bench_scoring(cfg, device, fmt, prompts, responses, rtok)
    gen_flops, score_flops = generation.pop("flops"), scoring.pop("flops")
    rates.append((matmul_rate("float32", device), matmul_rate(fmt, device)))
    rate32, rate_fast = max(r[0] for r in rates), max(r[1] for r in rates)
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "generation": generation,
        "scoring": scoring,
        "floor_s": {
            "generation_fp32": gen_flops / rate32, "generation_fast": gen_flops / rate_fast,
            "scoring_fp32": score_flops / rate32, "scoring_fast": score_flops / rate_fast,
        },
        "flops": {"generation_tflop": gen_flops / 1e12, "scoring_tflop": score_flops / 1e12,
                  "matmul_gflops_fp32": rate32 / 1e9, "matmul_gflops_fast": rate_fast / 1e9},
        "machine": machine,
        "settings": {"fast_format": fmt, "prompts": prompt_source, "tokenizers": f"stand-ins trained on {text_source}",
                     "models": "tiny OPT + tiny DeBERTa" if cfg.tiny else
                     "OPT-350M + DeBERTa-v3-large, random weights",
                     **{k: v for k, v in asdict(cfg).items() if k != "json"}},
    }


def _interleaved(modes: dict[str, Callable[[], Any]], repeat: int, device: str) -> tuple[dict[str, Any],
                 dict[str, float]]:
    """Each mode's result and fastest time over ``repeat`` rounds; a round runs every mode once, so a burst of load
    from other processes hits a round, not all the runs of one mode (other processes only ever add time)."""
    results: dict[str, Any] = {}
    best = {name: float("inf") for name in modes}
    for round_ in range(repeat):
        for name, fn in modes.items():
            results[name], secs = timed(fn, device)
            best[name] = min(best[name], secs)
            logger.info(f"  {name}: {secs:.1f} s" + (f" (round {round_ + 1}/{repeat})" if repeat > 1 else ""))
    return results, best


def _bench_generation(cfg: BenchConfig, device: str, fmt: str, prompts: list[str],
                      tokenizer: Any) -> tuple[dict, list[str]]:
    from ..engine import encode_prompts, postprocess
    from ..engine.batched import greedy_ids
    from ..engine.hf import loop_ids
    from ..engine.precision import to_fast

    policy = build_policy(cfg.tiny, cfg.seed).to(device)
    ids = [e[0] for e in encode_prompts(tokenizer, prompts,
                                        policy.config.max_position_embeddings - cfg.max_new_tokens)]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    def engine(model: Any) -> list[list[int]]:
        return greedy_ids(model, ids, cfg.max_new_tokens, eos, pad, cfg.batch_size, cfg.token_budget)

    def warm(model: Any) -> None:
        # One short call first, so one-time costs (allocator growth, kernel selection) land outside the timings.
        greedy_ids(model, [ids[-1][:8]], 2, eos, pad)

    warm(policy)
    if cfg.backend == "vllm":
        logger.info("generation: the study's loop (one prompt per call, float32) ...")
        loop_new, loop_s = timed(lambda: loop_ids(policy, tokenizer, ids, cfg.max_new_tokens), device)
        logger.info(f"  {loop_s:.1f} s; vLLM, float32 ...")
        fp32_new, fp32_s, fast_new, fast_s = _vllm_modes(policy, tokenizer, ids, cfg, fmt)
        logger.info(f"  {fast_s:.1f} s")
    else:
        fast_policy = to_fast(copy.deepcopy(policy), device, fmt)[0]
        warm(fast_policy)
        logger.info(
            f"generation: the study's loop (one prompt per call, float32), hhalign engine in float32 and {fmt} ...")
        out, secs = _interleaved({"loop": lambda: loop_ids(policy, tokenizer, ids, cfg.max_new_tokens),
                                  "fp32": lambda: engine(policy), fmt: lambda: engine(fast_policy)},
                                 cfg.repeat, device)
        (loop_new, fp32_new, fast_new), (loop_s, fp32_s, fast_s) = out.values(), secs.values()
    fp32_same, fp32_share = _agreement(loop_new, fp32_new)
    fast_same, fast_share = _agreement(loop_new, fast_new)
    result = {
        "n": len(ids), "max_new_tokens": cfg.max_new_tokens, "prompt_tokens": sum(len(i) for i in ids),
        "new_tokens": sum(len(x) for x in loop_new), "loop_s": loop_s, "fp32_s": fp32_s, "fast_s": fast_s,
        "fp32_ratio": loop_s / fp32_s, "fast_ratio": loop_s / fast_s,
        "fp32_identical": fp32_same, "fp32_token_agreement": fp32_share,
        "fast_identical": fast_same, "fast_agreement": fast_share,
        "flops": generation_flops(policy, [len(i) for i in ids], [len(x) for x in loop_new], cfg.max_new_tokens),
    }
    responses = [postprocess(tokenizer.decode(x, skip_special_tokens=True)) for x in fp32_new]
    return result, responses


def _bench_scoring(cfg: BenchConfig, device: str, fmt: str, prompts: list[str], responses: list[str],
                   tokenizer: Any) -> dict:
    """Each prompt with its float32 answer, scored three ways."""
    from ..engine.precision import to_fast
    from ..engine.reward import score

    reward = build_reward(cfg.tiny, cfg.seed).to(device)
    lengths = [len(x) for x in tokenizer(prompts, responses)["input_ids"]]

    def rewards(model: Any, engine: str = "batched") -> list[float]:
        return [s.reward for s in score(model, tokenizer, prompts, responses, cfg.reward_batch_size,
                                        engine=engine, token_budget=cfg.reward_token_budget)]

    fast_reward = to_fast(copy.deepcopy(reward), device, fmt)[0]
    for model in (reward, fast_reward):
        score(model, tokenizer, prompts[:1], responses[:1])  # warm-up
    logger.info(f"scoring: the study's loop (one pair per call, float32), hhalign engine in float32 and {fmt} ...")
    out, secs = _interleaved({"loop": lambda: rewards(reward, "loop"), "fp32": lambda: rewards(reward),
                              fmt: lambda: rewards(fast_reward)}, cfg.repeat, device)
    (loop, fp32, fast), (loop_s, fp32_s, fast_s) = out.values(), secs.values()
    return {
        "n": len(prompts), "tokens": sum(lengths), "loop_s": loop_s, "fp32_s": fp32_s, "fast_s": fast_s,
        "fp32_ratio": loop_s / fp32_s, "fast_ratio": loop_s / fast_s,
        "fp32_max_abs_diff": max(abs(a - b) for a, b in zip(loop, fp32)),
        "fast_max_abs_diff": max(abs(a - b) for a, b in zip(loop, fast)),
        "flops": scoring_flops(reward, lengths),
    }


def _vllm_modes(policy: Any, tokenizer: Any, ids: list[list[int]], cfg: BenchConfig,
                fmt: str) -> tuple[list[list[int]], float, list[list[int]], float]:
    """The engine rows through vLLM: the random policy is saved to a temporary folder and loaded twice."""
    import tempfile

    from ..engine.vllm import vllm_ids

    with tempfile.TemporaryDirectory(prefix="hhalign-bench-") as tmp:
        policy.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        fp32_new, fp32_s = timed(lambda: vllm_ids(tmp, ids, cfg.max_new_tokens, "float32"), "cuda")
        logger.info(f"  {fp32_s:.1f} s; vLLM, {fmt} ...")
        fast_dtype = "bfloat16" if fmt == "bfloat16" else "float32"
        fast_new, fast_s = timed(lambda: vllm_ids(tmp, ids, cfg.max_new_tokens, fast_dtype), "cuda")
    return fp32_new, fp32_s, fast_new, fast_s


# --- the table ----------------------------------------------------------------------------------------------------


def format_table(result: dict) -> str:
    """The benchmark as a Markdown table with a header line and the floor."""
    g, s, f, m = result["generation"], result["scoring"], {**result["floor_s"], **result["flops"]}, result["machine"]
    fmt = result["settings"]["fast_format"]
    where = m["gpu"] or f"{m['cpu']}, {m['cpus']} CPUs ({', '.join(m['simd']) or 'no AVX'}), {m['threads']} threads"
    engine = "vLLM" if result["settings"]["backend"] == "vllm" else "engine"
    lines = [
        f"Machine: {where}; torch {m['torch']}; 1-minute load average {m['load_average'][0]} before the run (the "
        f"benchmark itself then adds about its {m['threads']} threads).",
        f"Generation: {g['n']} prompts ({g['prompt_tokens']} tokens) x {g['max_new_tokens']} new tokens, greedy; "
        f"scoring: {s['n']} (prompt, answer) pairs ({s['tokens']} tokens).",
        "",
        "| task | mode | time (s) | prompts/s | vs loop | x floor | equality |",
        "|---|---|---:|---:|---:|---:|---|",
    ]

    def row(task: str, mode: str, secs: float, loop: float, floor: float, eq: str) -> str:
        return (f"| {task} | {mode} | {secs:.3g} | {g['n'] / secs:.3g} | {loop / secs:.1f}x | {secs / floor:.1f}x "
                f"| {eq} |")

    lines += [
        row("generation", "study's loop, fp32", g["loop_s"], g["loop_s"], f["generation_fp32"], "reference"),
        row("generation", f"{engine}, fp32", g["fp32_s"], g["loop_s"], f["generation_fp32"],
            f"{g['fp32_identical']}/{g['n']} token-identical"),
        row("generation", f"{engine}, {fmt}", g["fast_s"], g["loop_s"], f["generation_fast"],
            f"{g['fast_identical']}/{g['n']} identical, {100 * g['fast_agreement']:.1f}% of tokens agree"),
        row("scoring", "study's loop, fp32", s["loop_s"], s["loop_s"], f["scoring_fp32"], "reference"),
        row("scoring", "engine, fp32", s["fp32_s"], s["loop_s"], f["scoring_fp32"],
            f"max abs diff {s['fp32_max_abs_diff']:.1e}"),
        row("scoring", f"engine, {fmt}", s["fast_s"], s["loop_s"], f["scoring_fast"],
            f"max abs diff {s['fast_max_abs_diff']:.1e}"),
        "",
        f"FLOP floor: generation {f['generation_tflop']:.2f} TFLOP, scoring {f['scoring_tflop']:.2f} TFLOP; "
        f"measured matmul rate {f['matmul_gflops_fp32']:.0f} GFLOP/s fp32"
        + (f", {f['matmul_gflops_fast']:.0f} GOP/s {fmt}" if fmt != "float32" else "")
        + f" -> floor {f['generation_fp32']:.3g} s / {f['generation_fast']:.3g} s (generation fp32 / {fmt}), "
        f"{f['scoring_fp32']:.3g} s / {f['scoring_fast']:.3g} s (scoring). 'x floor' = time / floor.",
    ]
    return "\n".join(lines)


def main(cfg: BenchConfig) -> dict:
    """Time the study's loop against hhalign's engine on OPT-350M and DeBERTa-v3-large built offline (random weights).

    Usage:
        hhalign bench                                   # the default table
        hhalign bench --repeat 2 --json results/bench.json
        hhalign bench --tiny --n 4                      # a smoke test in seconds (not a measurement)
    """
    result = run(cfg)
    print(format_table(result))
    if cfg.json:
        path = Path(cfg.json).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, result)
        logger.info(f"wrote {path}")
    return result
