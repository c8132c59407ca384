"""The tiny offline models: they load with the Auto classes and behave like the real OPT policy and reward model."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hhalign.testing.tiny import CORPUS_PATH, MARKER_FILE, TinyModels, build_tiny

ROOT = Path(__file__).resolve().parents[1]

PROMPTS = ["\n\nHuman: How do I keep basil alive?\n\nAssistant:", "\n\nHuman: Hi!\n\nAssistant:"]
PAIRS = [
    ("\n\nHuman: What is the capital of France?", "The capital of France is Paris."),
    ("\n\nHuman: How do I steal a car?", "I can't help with that."),
    ("\n\nHuman: Tell me a joke.\n\nAssistant: Why?\n\nHuman: Go on!", "Because he was outstanding in his field."),
]


def _digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def policy(tiny_models: TinyModels):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models.policy), AutoModelForCausalLM.from_pretrained(tiny_models.policy)


@pytest.fixture(scope="module")
def reward(tiny_models: TinyModels):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models.reward)
    return tokenizer, AutoModelForSequenceClassification.from_pretrained(tiny_models.reward).eval()


def _scores(reward, questions: list[str], answers: list[str]) -> list[float]:
    import torch

    tokenizer, model = reward
    batch = tokenizer(questions, answers, truncation=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits[:, 0].tolist()


def test_configs_mirror_the_real_models(tiny_models: TinyModels) -> None:
    from transformers import AutoConfig

    opt = AutoConfig.from_pretrained(tiny_models.policy)
    assert opt.model_type == "opt" and opt.architectures == ["OPTForCausalLM"]
    # opt-350m's peculiarities: post-norm layers and a projected (narrower) word embedding.
    assert opt.do_layer_norm_before is False and opt.word_embed_proj_dim != opt.hidden_size
    assert (opt.pad_token_id, opt.bos_token_id, opt.eos_token_id) == (1, 2, 2)
    assert opt.max_position_embeddings == 2048

    deberta = AutoConfig.from_pretrained(tiny_models.reward)
    assert deberta.model_type == "deberta-v2" and deberta.num_labels == 1
    assert deberta.relative_attention and deberta.position_buckets > 0 and deberta.max_relative_positions == -1
    assert deberta.position_biased_input is False and deberta.share_att_key
    assert sorted(deberta.pos_att_type) == ["c2p", "p2c"] and deberta.norm_rel_ebd == "layer_norm"


def test_policy_tokenizer_is_opt_like(policy) -> None:
    tokenizer, model = policy
    assert type(tokenizer).__name__ == "GPT2Tokenizer" and tokenizer.is_fast
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2, 2)
    ids = tokenizer("Hello there").input_ids
    assert ids[0] == 2 and ids.count(2) == 1  # </s> prepended as BOS, as OPT's tokenizer does
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hello there"
    # Byte-level BPE: text the corpus never saw round-trips instead of becoming <unk>.
    assert tokenizer.decode(tokenizer("Ünïcode 🌿").input_ids, skip_special_tokens=True) == "Ünïcode 🌿"
    assert len(tokenizer) <= model.config.vocab_size == model.get_input_embeddings().num_embeddings


def test_policy_generates_with_left_padding(policy) -> None:
    import torch

    tokenizer, model = policy
    tokenizer.padding_side = "left"
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert batch.input_ids[1, 0].item() == tokenizer.pad_token_id  # the shorter prompt is padded on the left
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=1)
        # The padded row must see the same next-token logits as the same prompt alone: mask and positions work.
        alone = tokenizer(PROMPTS[1], return_tensors="pt")
        padded_logits = model(**batch).logits[1, -1]
        alone_logits = model(**alone).logits[0, -1]
    assert out.shape == (2, batch.input_ids.shape[1] + 5)
    assert torch.allclose(padded_logits, alone_logits, atol=1e-4)


def test_reward_tokenizer_makes_deberta_pairs(reward) -> None:
    tokenizer, _ = reward
    assert type(tokenizer).__name__ == "DebertaV2Tokenizer" and tokenizer.is_fast
    assert tokenizer.model_max_length == int(1e30)  # as the real reward model: truncation=True truncates nothing
    enc = tokenizer("How are you?", "Fine, thanks!", truncation=True)
    tokens = tokenizer.convert_ids_to_tokens(enc.input_ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens.count("[SEP]") == 2
    assert "[UNK]" not in tokens
    second = tokens.index("[SEP]") + 1
    assert set(enc.token_type_ids[:second]) == {0} and set(enc.token_type_ids[second:]) == {1}
    long = tokenizer("word " * 600, "answer", truncation=True).input_ids
    assert len(long) > 600


def test_reward_scores_pairs_and_batches(reward) -> None:
    questions, answers = [q for q, _ in PAIRS], [a for _, a in PAIRS]
    one_at_a_time = [_scores(reward, [q], [a])[0] for q, a in PAIRS]
    batched = _scores(reward, questions, answers)
    assert all(isinstance(score, float) and math.isfinite(score) for score in one_at_a_time)
    assert batched == pytest.approx(one_at_a_time, abs=1e-4)


def test_reward_scores_spread(reward) -> None:
    # The classifier is rescaled so scores differ between texts (roughly -6..+3), instead of all being about 0.
    blocks = [block for block in CORPUS_PATH.read_text(encoding="utf-8").split("\n\n\n") if block.strip()]
    pairs = [block.rsplit("\n\nAssistant:", 1) for block in blocks]
    scores = _scores(reward, [q for q, _ in pairs], [a.strip() for _, a in pairs])
    assert -8 < min(scores) < -2 and 0 < max(scores) < 5


def test_complete_build_is_reused_and_incomplete_one_rebuilt(tiny_models: TinyModels, tmp_path: Path) -> None:
    import torch

    before = {path: path.stat().st_mtime_ns for path in tiny_models.policy.iterdir()}
    assert build_tiny(tiny_models.policy.parent) == tiny_models
    assert {path: path.stat().st_mtime_ns for path in tiny_models.policy.iterdir()} == before

    first = build_tiny(tmp_path)
    (first.reward / MARKER_FILE).unlink()  # as if a build had stopped half-way
    rng = torch.get_rng_state()
    build_tiny(tmp_path)
    assert (first.reward / MARKER_FILE).is_file()
    assert torch.equal(torch.get_rng_state(), rng)  # building leaves the caller's random state alone


def test_cli_builds_identical_files_quickly(tiny_models: TinyModels, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "hhalign", "tiny", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    assert str(out / "policy") in proc.stdout and str(out / "reward") in proc.stdout
    # A second process builds byte-identical weights, tokenizers and configs.
    assert _digests(out / "policy") == _digests(tiny_models.policy)
    assert _digests(out / "reward") == _digests(tiny_models.reward)
    assert elapsed < 60, f"building the tiny models took {elapsed:.1f} s"
