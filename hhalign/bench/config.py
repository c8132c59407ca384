"""Options of ``batch/bench.py`` / ``hhalign bench``, validated once when they are built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import check_device, check_positive

# Prompts timed by default: 8 of the study's (4 harmful, 4 helpful) keep the default run under 3 minutes on a
# 2-core CPU, most of it the study's loop (about 5 s a prompt for OPT-350M, 1 s a pair scored).
DEFAULT_N = 8


@dataclass
class BenchConfig:
    """Options of ``batch/bench.py``; every field is a CLI flag (``--field_name``)."""

    n: int = field(default=DEFAULT_N, metadata={
        "help": "Prompts to time, drawn from --prompts as --sample says (n - n/2 harmful, n/2 helpful; the study's "
                "loop dominates the run: about 5 s a prompt for OPT-350M on a 2-core CPU, plus 1 s a pair scored)."})
    prompts: str = field(default="paper", metadata={
        "help": "Where the timed prompts come from: a prompt set (paper: the study's 100; paper-large, sample, "
                "harmful-all, demo) or a JSONL file of prompts."})
    sample: Literal["stratified", "first"] = field(default="stratified", metadata={
        "help": "stratified: per category, one prompt from each of n/2 equal-count length strata, drawn with "
                "--sample_seed (the sample follows the set's length distribution); first: the first n/2 of each "
                "category (the bench before this option)."})
    sample_seed: int = field(default=0, metadata={
        "help": "Seed of the stratified draw: another seed gives another sample of the same length profile."})
    dataset: str = field(default="../shared/data/hh-rlhf", metadata={
        "help": "Local HH-RLHF folder for the study's prompts and the stand-in tokenizers; when it does not exist the "
                "shipped demo prompts are used (nothing is downloaded)."})
    policy_shape: Literal["opt-350m", "smollm2-360m"] = field(default="opt-350m", metadata={
        "help": "The policy's architecture and size, from its exact configuration (random weights): opt-350m (the "
                "study's facebook/opt-350m) or smollm2-360m (HuggingFaceTB/SmolLM2-360M: Llama family, grouped-query "
                "attention, a model of the same size a student aligns next)."})
    max_new_tokens: int = field(default=50, metadata={"help": "Greedy tokens per answer (the study: 50)."})
    batch_size: int = field(default=32, metadata={
        "help": "Engine (and transformers generate): most prompts decoded together (the evaluator's default)."})
    token_budget: int | None = field(default=None, metadata={
        "help": "Engine: KV-cache positions per decode batch (default: hhalign.engine.base.DEFAULT_TOKEN_BUDGET)."})
    reward_batch_size: int = field(default=32, metadata={
        "help": "Most pairs per reward forward pass (the evaluator's default), for the engine and the padded batch."})
    reward_token_budget: int | None = field(default=None, metadata={
        "help": "Engine: tokens per reward forward pass (default: hhalign.engine.deberta.PACKED_TOKENS)."})
    fast: Literal["auto", "bfloat16", "int8", "float32"] = field(default="auto", metadata={
        "help": "Fast mode's number format: auto (bfloat16 where the hardware has it, else int8 on x86 CPUs), "
                "bfloat16, int8 or float32."})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu or cuda."})
    backend: Literal["engine", "vllm"] = field(default="engine", metadata={
        "help": "What the engine rows of generation run on: engine (hhalign's batched engine) or vllm (a CUDA GPU "
                "and the vllm package)."})
    peers: bool = field(default=False, metadata={
        "help": "Also time what a user would pick instead, on the same prompts: transformers generate (length-sorted "
                "left-padded batches), transformers continuous batching (generate_batch), CTranslate2 and vLLM; for "
                "scoring a plain padded transformers batch and ONNX Runtime. Peers that are not installed are listed "
                "as skipped."})
    peer_cache: str | None = field(default=None, metadata={
        "help": "Folder for the peers' converted models (ONNX exports, CTranslate2 conversions), reused while the "
                "weights are the same. Default: $HHALIGN_CACHE/bench, else ~/.cache/hhalign/bench."})
    tiny: bool = field(default=False, metadata={
        "help": "The tests' miniature models and tokenizers: a smoke test in seconds, not a measurement (no FLOP "
                "floor)."})
    seed: int = field(default=0, metadata={"help": "Seed of the random weights."})
    repeat: int = field(default=1, metadata={
        "help": "Rounds: each round times every system once, in turn, and each keeps its fastest (other processes "
                "only ever add time)."})
    json: str | None = field(default=None, metadata={"help": "Also write the table as JSON to this file."})

    def __post_init__(self) -> None:
        check_positive(self, {"n": "prompts", "max_new_tokens": "tokens", "batch_size": "prompts",
                              "token_budget": "positions", "reward_batch_size": "pairs",
                              "reward_token_budget": "tokens", "repeat": "rounds"})
        check_device(self.device)
