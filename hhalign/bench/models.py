"""What the benchmark runs on: the study's prompts and stand-ins for its two models, built offline by
:mod:`hhalign.testing.builders` (the same builder as the tests' tiny models).

Nothing is downloaded. The models are OPT-350M (or, with ``--policy_shape smollm2-360m``, the Llama-family
SmolLM2-360M) and DeBERTa-v3-large built from their exact configurations with random weights (speed depends on
shapes, not on weight values); their tokenizers are the real models' classes trained on the spot on the local
HH-RLHF text, so prompts have realistic token counts. Random weights rarely produce EOS, so
every answer runs the full ``max_new_tokens``: a worst case for generation time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import HHAlignError

SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
# Stand-in vocabulary sizes. OPT's is its real one (50265 + 7 unused rows in the model): 0.236 tokens per character
# on the study's prompts, close to GPT-2 BPE's ~0.25 on English. A 128k vocabulary trained on the 16 MB of HH-RLHF
# alone would be made of whole dialogue words (0.179 tokens per character) and flatter the reward model; 32k pieces
# give 0.195, nearer a broad-corpus SentencePiece model's counts.
POLICY_VOCAB = 50265
REWARD_VOCAB = 32000
# --policy_shape: the policy's family (hhalign.testing.builders.FAMILIES), its exact configuration, the stand-in
# tokenizer's vocabulary size (the real model's), and a name for the table. --tiny runs the family's tiny model.
POLICY_SHAPES = {
    "opt-350m": ("opt", "OPT_350M", POLICY_VOCAB, "OPT-350M"),
    "smollm2-360m": ("llama", "SMOLLM2_360M", 49152, "SmolLM2-360M (Llama family)"),
}
# How --sample draws the timed prompts from --prompts (see bench_prompts).
SAMPLES = ("stratified", "first")


@dataclass
class StandIns:
    """The two models with their tokenizers, and where their text came from."""

    policy: Any
    policy_tokenizer: Any
    reward: Any
    reward_tokenizer: Any
    description: str


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


def stand_ins(tiny: bool, dataset: str | None, seed: int, policy_shape: str = "opt-350m") -> StandIns:
    """The policy of ``policy_shape`` (a key of :data:`POLICY_SHAPES`) and DeBERTa-v3-large with random weights (seeds
    ``seed`` and ``seed + 1``) and stand-in tokenizers; with ``tiny``, the tests' tiny models of those families
    (:mod:`hhalign.testing.tiny`), in memory."""
    from ..testing import builders
    from ..testing import tiny as tiny_models

    if policy_shape not in POLICY_SHAPES:
        raise HHAlignError(f"unknown --policy_shape {policy_shape!r}: use one of {', '.join(POLICY_SHAPES)}")
    family, config_name, vocab, label = POLICY_SHAPES[policy_shape]
    if tiny:
        corpus = tiny_models.CORPUS_PATH.read_text(encoding="utf-8")
        ptok = builders.train_policy_tokenizer([corpus], tiny_models.POLICY_VOCAB_TARGET)
        rtok = builders.train_reward_tokenizer([corpus], tiny_models.REWARD_VOCAB_TARGET)
        policy = builders.build_policy(ptok, builders.TINY_OPT, tiny_models.POLICY_SEED) if family == "opt" else \
            builders.build_causal_lm(family, ptok, seed=tiny_models.POLICY_SEED)
        return StandIns(policy, ptok,
                        builders.build_reward(rtok, builders.TINY_DEBERTA, tiny_models.REWARD_SEED,
                                              tiny_models.REWARD_CLASSIFIER_SCALE, tiny_models.REWARD_CLASSIFIER_BIAS),
                        rtok, f"the tests' tiny {family} policy and tiny DeBERTa (hhalign.testing), untrained")
    texts, source = training_texts(dataset)
    ptok = builders.train_policy_tokenizer(texts, vocab)
    rtok = builders.train_reward_tokenizer(texts, REWARD_VOCAB)
    config = getattr(builders, config_name)
    policy = builders.build_policy(ptok, config, seed) if family == "opt" else \
        builders.build_causal_lm(family, ptok, config, seed)
    return StandIns(policy, ptok, builders.build_reward(rtok, builders.DEBERTA_V3_LARGE, seed + 1), rtok,
                    f"{label} and DeBERTa-v3-large with random weights; stand-in tokenizers (OPT's and DeBERTa's "
                    f"classes, {len(ptok)} and {len(rtok)} tokens) trained on {source}")


def _strata(prompts: list, k: int, rng: Any) -> list:
    """``k`` prompts that follow ``prompts``' length distribution: sorted by length (characters), cut into ``k``
    strata of (nearly) equal count, one drawn at random from each, returned shortest stratum first."""
    ranked = sorted(prompts, key=lambda p: (len(p.prompt), p.prompt_id))
    bounds = [round(i * len(ranked) / k) for i in range(k + 1)]
    return [ranked[rng.randrange(bounds[i], bounds[i + 1])] for i in range(k) if bounds[i + 1] > bounds[i]]


def bench_prompts(n: int, dataset: str | None, source: str = "paper", sample: str = "stratified",
                  seed: int = 0) -> tuple[list[str], dict]:
    """``n`` prompts of ``source`` (a prompt set of :func:`hhalign.data.build_prompt_set` or a JSONL file; without a
    local HH-RLHF copy the study's sets fall back to the demo prompts) and a description of the sample.

    ``stratified`` (default): per category (n - n//2 harmful, n//2 helpful, or all n from a one-category source),
    one prompt drawn with ``seed`` from each of that many equal-count length strata, so the sample follows the
    source's length distribution and another seed gives another sample of the same shape; ``first``: the first
    prompts of each category, in order."""
    import random
    import statistics

    from ..data import CATEGORIES, build_prompt_set, limit_prompts

    if n <= 0:
        raise HHAlignError(f"--n must be a positive number of prompts, got {n}")
    if sample not in SAMPLES:
        raise HHAlignError(f"unknown --sample {sample!r}: use one of {', '.join(SAMPLES)}")
    from ..data import PROMPT_SETS

    needs_dataset = source in PROMPT_SETS and source != "demo"
    if needs_dataset and not (dataset and Path(dataset).expanduser().is_dir()):
        where = f"hhalign's demo prompts (no local HH-RLHF copy at {dataset!r})"
        pool, demo = build_prompt_set("demo"), True
    else:
        demo = source == "demo"
        pool = build_prompt_set(source, dataset) if needs_dataset else build_prompt_set(source)
        where = f"{source} ({dataset})" if needs_dataset else source
    if not pool:
        raise HHAlignError(f"--prompts {source}: no prompts in it")
    by_cat = {c: [p for p in pool if p.category == c] for c in CATEGORIES}
    present = [c for c in CATEGORIES if by_cat[c]]  # prompt files may hold one category only
    wanted = {CATEGORIES[0]: n - n // 2, CATEGORIES[1]: n // 2} if len(present) == 2 else {present[0]: n}
    if n > len(pool):
        # The demo prompts (a smoke test's source) are cycled: a timing needs n prompts, not n distinct ones.
        if not demo:
            raise HHAlignError(f"--n {n}: --prompts {source} has only {len(pool)} prompts; use a larger set "
                               "(paper-large) or a smaller --n")
        chosen = [pool[i % len(pool)] for i in range(n)]
    elif sample == "first":
        chosen = [p for c, k in wanted.items() for p in limit_prompts(by_cat[c], k) if k]
    else:
        rng = random.Random(seed)
        chosen = []
        for c, k in wanted.items():
            if k > len(by_cat[c]):
                raise HHAlignError(f"--n {n}: --prompts {source} has only {len(by_cat[c])} {c} prompts for {k}")
            chosen += _strata(by_cat[c], k, rng) if k else []
    if len(chosen) < n:
        raise HHAlignError(f"--n {n}: --prompts {source} gives only {len(chosen)} prompts")

    def chars(ps: list) -> dict:
        lengths = sorted(len(p.prompt) for p in ps)
        return {"n": len(lengths), "mean": round(statistics.fmean(lengths), 1),
                "quartiles": [lengths[(len(lengths) - 1) * q // 4] for q in range(5)]}

    counts = {c: sum(p.category == c for p in chosen) for c in CATEGORIES}
    info = {"source": where, "sample": sample, "seed": seed, "categories": counts,
            "prompt_ids": [p.prompt_id for p in chosen], "chars": chars(chosen), "source_chars": chars(pool)}
    text = ", ".join(f"{k} {c}" for c, k in counts.items() if k)
    info["description"] = (f"{len(chosen)} prompts of {where} ({text}), "
                           + (f"stratified by length, seed {seed}" if sample == "stratified" else "the first ones"))
    return [p.prompt for p in chosen], info
