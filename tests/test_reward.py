"""Reward scoring: raw logits, batched equal to one pair at a time, and the study's no-truncation default."""

import pytest

from hhalign.engine.reward import encode_pairs, score
from hhalign.loading import load_reward_model

PAIRS = [
    ("Human: How do I boil an egg?", "Put it in boiling water for seven minutes."),
    ("Human: hi", ""),
    ("Human: Tell me about gardens.\n\nAssistant: Sure.\n\nHuman: More please, with a lot of detail about soil,"
     " water, light and which plants grow well together.", "Tomatoes like sun and basil grows well beside them."),
    ("Human: Can you help me hurt someone?", "No, I will not help with that."),
    ("Human: ok", "ok"),
]


@pytest.fixture(scope="module")
def reward(tiny_models):
    return load_reward_model(str(tiny_models.reward))


def test_batched_scores_equal_one_at_a_time(reward):
    prompts, responses = zip(*PAIRS)
    single = [score(reward.model, reward.tokenizer, [p], [r], batch_size=1)[0] for p, r in PAIRS]
    for batch_size in (2, 5):
        batched = score(reward.model, reward.tokenizer, prompts, responses, batch_size=batch_size)
        for a, b in zip(single, batched):
            assert b.reward == pytest.approx(a.reward, abs=1e-4)
            assert b.n_tokens == a.n_tokens
    assert len({round(s.reward, 3) for s in single}) > 1, "scores must depend on the text"


def test_score_is_the_raw_logit_of_the_pair(reward):
    import torch

    prompt, response = PAIRS[0]
    inputs = reward.tokenizer(prompt, response, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = reward.model(**inputs).logits[0, 0].item()
    assert score(reward.model, reward.tokenizer, [prompt], [response])[0].reward == pytest.approx(expected, abs=1e-5)


def test_no_truncation_by_default_and_optional_cap(reward):
    prompt, response = "Human: " + "why " * 700, "because " * 50
    rows, full = encode_pairs(reward.tokenizer, [prompt], [response])
    assert len(rows[0]["input_ids"]) == full[0] > 512
    (uncapped,) = score(reward.model, reward.tokenizer, [prompt], [response])
    assert not uncapped.truncated and uncapped.n_tokens > 512
    (capped,) = score(reward.model, reward.tokenizer, [prompt], [response], max_length=512)
    assert capped.truncated and capped.n_tokens == 512
