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
