"""Reward scoring: every scorer (packed engine, padded, the study's loop) gives the study's raw logit per pair, in
float32 within 1e-4 whatever the batching; the packed scorer on the real attention shape and in the fast formats;
the study's no-truncation default."""

import pytest

from hhalign.engine.reward import encode_pairs, score
from hhalign.loading import load_reward_model

# Very different lengths (3 to ~250 tokens) and an empty response (the study's call encodes the prompt alone).
PAIRS = [
    ("Human: How do I boil an egg?", "Put it in boiling water for seven minutes."),
    ("Human: hi", ""),
    ("Human: Tell me about gardens.\n\nAssistant: Sure.\n\nHuman: More please, with a lot of detail about soil,"
     " water, light and which plants grow well together.", "Tomatoes like sun and basil grows well beside them."),
    ("Human: " + "Tell me about gardens and soil and light. " * 25, "Tomatoes like sun."),
    ("Human: Can you help me hurt someone?", "No, I will not help with that. " * 6),
    ("Human: ok", "ok"),
]


@pytest.fixture(scope="module")
def reward(tiny_models):
    return load_reward_model(str(tiny_models.reward))


def test_every_scorer_gives_the_studys_raw_logit_whatever_the_batching(reward):
    import torch

    prompts, responses = map(list, zip(*PAIRS))
    study = []
    for p, r in PAIRS:  # the study's call, one pair at a time
        inputs = reward.tokenizer(p, r, truncation=True, return_tensors="pt")
        with torch.no_grad():
            study.append(reward.model(**inputs).logits[0, 0].item())
    assert max(study) - min(study) > 0.01, "scores must depend on the text"
    loop = score(reward.model, reward.tokenizer, prompts, responses, engine="loop")
    assert [s.reward for s in loop] == pytest.approx(study, abs=1e-6)
    for engine in ("engine", "padded"):
        for batch_size in (1, 2, 64):
            for budget in (None, 64, 300):
                got = score(reward.model, reward.tokenizer, prompts, responses, batch_size, engine=engine,
                            token_budget=budget)
                assert [s.reward for s in got] == pytest.approx(study, abs=1e-4), (engine, batch_size, budget)
                assert [s.n_tokens for s in got] == [s.n_tokens for s in loop]


def test_rel_projection_memo_is_exact_and_scoped(reward):
    import torch

    from hhalign.engine.reward import memoized_rel_projections

    inputs = reward.tokenizer("Human: hello there", "hi, how can I help?", return_tensors="pt")
    with torch.inference_mode():
        plain = reward.model(**inputs).logits
        with memoized_rel_projections(reward.model):
            memo = [reward.model(**inputs).logits for _ in range(2)]
    assert all(torch.equal(plain, m) for m in memo)
    assert not any("forward" in vars(m) or "get_rel_embedding" in vars(m) for m in reward.model.modules())


def test_no_truncation_by_default_and_optional_cap(reward):
    prompt, response = "Human: " + "why " * 700, "because " * 50
    rows, full = encode_pairs(reward.tokenizer, [prompt], [response])
    assert len(rows[0]["input_ids"]) == full[0] > 512
    (uncapped,) = score(reward.model, reward.tokenizer, [prompt], [response])
    assert not uncapped.truncated and uncapped.n_tokens > 512
    (capped,) = score(reward.model, reward.tokenizer, [prompt], [response], max_length=512)
    assert capped.truncated and capped.n_tokens == 512


# DeBERTa-v3-large's attention shape (16 heads of 64, 256 log buckets over 512 positions) in two layers and a small
# vocabulary: pairs up to 600 tokens exercise the batched (short) and per-head (long) attention paths, the log buckets
# and their clamp beyond 512 positions, in well under a second a pair.
V3_LARGE_ATTENTION = dict(
    vocab_size=512, hidden_size=1024, num_hidden_layers=2, num_attention_heads=16, intermediate_size=4096,
    hidden_act="gelu", max_position_embeddings=512, type_vocab_size=0, layer_norm_eps=1e-7, pad_token_id=0,
    relative_attention=True, max_relative_positions=-1, position_buckets=256, position_biased_input=False,
    pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", share_att_key=True, pooler_hidden_size=1024,
    pooler_dropout=0.0, pooler_hidden_act="gelu", num_labels=1, initializer_range=0.1,
)


def _plain_rewards(model, rows):
    import torch

    with torch.inference_mode():
        return [model(input_ids=torch.tensor([r])).logits[0, 0].item() for r in rows]


@pytest.mark.parametrize("config", [
    {},  # DeBERTa-v3
    # the other DeBERTa-v2 options the packed scorer implements
    {"type_vocab_size": 2, "position_biased_input": True, "share_att_key": False, "pos_att_type": ["c2p"],
     "embedding_size": 256, "max_position_embeddings": 1024},
])
def test_packed_scorer_equals_the_plain_forward_on_the_real_attention_shape(config):
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    from hhalign.engine.deberta import PackedDeberta

    torch.manual_seed(0)
    model = DebertaV2ForSequenceClassification(DebertaV2Config(**{**V3_LARGE_ATTENTION, **config})).eval()
    gen = torch.Generator().manual_seed(1)
    rows = [torch.randint(5, 512, (n,), generator=gen).tolist() for n in (600, 3, 130, 97, 40, 260)]
    plain = _plain_rewards(model, rows)
    assert max(plain) - min(plain) > 1e-3, "rewards must depend on the text for the comparison to mean anything"
    packed = PackedDeberta(model)
    for max_tokens, max_pairs in ((8192, None), (700, 2), (1, 1)):
        got = packed.rewards([{"input_ids": r} for r in rows], max_tokens, max_pairs)
        assert got == pytest.approx(plain, abs=1e-4), (max_tokens, max_pairs)


def test_packed_scorer_in_the_fast_formats_stays_near_float32(reward):
    import copy

    from hhalign.engine.precision import to_fast

    prompts, responses = zip(*PAIRS)
    exact = [s.reward for s in score(reward.model, reward.tokenizer, prompts, responses, engine="loop")]
    spread = max(exact) - min(exact)
    for fmt in ("bfloat16", "int8"):
        fast = to_fast(copy.deepcopy(reward.model), "cpu", fmt)[0]
        got = [s.reward for s in score(fast, reward.tokenizer, prompts, responses)]
        assert got != exact and got == pytest.approx(exact, abs=0.1 * spread), fmt


def test_packed_scorer_follows_weight_changes_and_says_what_it_cannot_run(reward):
    import torch

    from hhalign.engine.deberta import unsupported

    prompts, responses = zip(*PAIRS)
    model = reward.model
    before = [s.reward for s in score(model, reward.tokenizer, prompts, responses)]
    with torch.no_grad():
        model.classifier.bias += 1.0
    try:
        after = [s.reward for s in score(model, reward.tokenizer, prompts, responses)]
    finally:
        with torch.no_grad():
            model.classifier.bias -= 1.0
    assert after == pytest.approx([b + 1.0 for b in before], abs=1e-5)
    model.train()
    try:
        assert unsupported(model) == "the model is in training mode"
    finally:
        model.eval()
    assert "not a DeBERTa" in unsupported(torch.nn.Linear(2, 2))


def test_packed_scorer_that_disagrees_with_the_model_is_not_used(reward, monkeypatch):
    import copy

    from conftest import captured_log
    from hhalign.engine.deberta import PackedDeberta
    from hhalign.engine.reward import scorer_name

    prompts, responses = map(list, zip(*PAIRS))
    loop = [s.reward for s in score(reward.model, reward.tokenizer, prompts, responses, engine="loop")]
    forward = PackedDeberta.forward
    # A kernel that is off by 0.01 on this machine:
    monkeypatch.setattr(PackedDeberta, "forward", lambda self, *a, **k: forward(self, *a, **k) + 0.01)
    model = copy.deepcopy(reward.model)  # not yet checked
    with captured_log() as lines:
        got = [s.reward for s in score(model, reward.tokenizer, prompts, responses)]
    assert got == pytest.approx(loop, abs=1e-4) and scorer_name(model) == "padded"
    assert any("packed DeBERTa scoring differs" in line for line in lines)
