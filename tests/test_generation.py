"""Generation: protocols, context truncation, and batched output identical to one prompt at a time (fp32)."""

import pytest

from hhalign.engine import context_limit, encode_prompts, generate, model_input, postprocess
from hhalign.loading import load_policy
from hhalign.refs import parse_model_ref

PROMPTS = [
    "Human: How do I boil an egg?",
    "Human: hi",
    "Human: Tell me about the weather today and tomorrow.\n\nAssistant: It is sunny.\n\nHuman: And the day after,"
    " and please also say something about the wind, the rain and the clouds in a lot of detail?",
    "Human: What is a good name for a cat?",
    "Human: Why?",
    "Human: Can you help me plan a small garden with tomatoes, basil, beans and some flowers for bees?",
    "Human: ok",
]


@pytest.fixture(scope="module")
def policy(tiny_models):
    return load_policy(parse_model_ref(str(tiny_models.policy)))


@pytest.mark.parametrize(
    ("prompt", "protocol", "expected"),
    [
        ("Human: hi", "paper", "Human: hi"),
        ("Human: hi", "chat", "Human: hi\n\nAssistant:"),
        ("Human: hi\n\nAssistant:", "chat", "Human: hi\n\nAssistant:"),
    ],
)
def test_model_input(prompt, protocol, expected):
    assert model_input(prompt, protocol) == expected


@pytest.mark.parametrize(
    ("text", "protocol", "expected"),
    [
        ("  Sure, here it is.\n\nHuman: thanks\n\nAssistant: ok", "chat", "Sure, here it is."),
        ("  Sure.\n\nHuman: thanks", "paper", "Sure.\n\nHuman: thanks"),
        ("A\nHuman: b", "chat", "A"),
    ],
)
def test_postprocess(text, protocol, expected):
    assert postprocess(text, protocol) == expected


def test_batched_generation_is_token_identical_to_one_at_a_time(policy):
    single = [generate(policy.model, policy.tokenizer, [p], max_new_tokens=12, batch_size=1)[0] for p in PROMPTS]
    for batch_size in (2, 3, 8):
        batched = generate(policy.model, policy.tokenizer, PROMPTS, max_new_tokens=12, batch_size=batch_size)
        assert batched == single, f"batch_size={batch_size}"
    assert all(g.n_new_tokens <= 12 for g in single)
    assert any(g.response for g in single)


def test_response_is_the_new_tokens_only(policy):
    (gen,) = generate(policy.model, policy.tokenizer, ["Human: hello there"], max_new_tokens=8)
    ids = policy.tokenizer("Human: hello there", return_tensors="pt")
    out = policy.model.generate(**ids, max_new_tokens=8, do_sample=False)
    expected = policy.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert gen.response == expected
    assert gen.n_prompt_tokens == ids["input_ids"].shape[1]


def test_long_prompts_keep_their_last_tokens(policy):
    tok = policy.tokenizer
    limit = 10
    (ids, truncated), (short_ids, short_truncated) = encode_prompts(tok, ["word " * 50, "hi"], limit)
    assert truncated and len(ids) == limit and ids[0] == tok.bos_token_id
    assert ids[1:] == tok("word " * 50)["input_ids"][-(limit - 1):]
    assert not short_truncated and short_ids == tok("hi")["input_ids"]
    assert context_limit(policy.model, 50) == policy.model.config.max_position_embeddings - 50


def test_over_long_prompt_is_generated_and_recorded(policy):
    long_prompt = "Human: " + "tell me more " * 1200
    (gen,) = generate(policy.model, policy.tokenizer, [long_prompt], max_new_tokens=4)
    assert gen.prompt_truncated
    assert gen.n_prompt_tokens == context_limit(policy.model, 4)
