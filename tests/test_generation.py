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
        ("Human: hi\n\nAssistant:  \n", "chat", "Human: hi\n\nAssistant:  \n"),
        ("Human: hi  \n", "chat", "Human: hi\n\nAssistant:"),
        # the study's quirk: a prompt that ends in the paragraphs of an assistant reply is continued, not re-cued
        ("Human: hi\n\nAssistant: Hello.", "chat", "Human: hi\n\nAssistant: Hello."),
        ("Human: hi\n\nAssistant: One.\n\nTwo.", "chat", "Human: hi\n\nAssistant: One.\n\nTwo."),
        ("\n\nHuman: a\n\nAssistant: b\n\nHuman: c", "chat", "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:"),
        # a label inside a human turn is text, not a turn
        ("Human: what does 'Assistant: hi' mean?", "chat", "Human: what does 'Assistant: hi' mean?\n\nAssistant:"),
        ("no labels at all", "chat", "no labels at all\n\nAssistant:"),
        ("Human: hi\n\nAssistant: Hello.", "paper", "Human: hi\n\nAssistant: Hello."),
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
        # inline turns, as 46 chosen HH-RLHF test replies hold them
        ("I see. Human: OK, and then?", "chat", "I see."),
        ("Sure.  Assistant: Sure again.", "chat", "Sure."),
        ("Human: no reply at all", "chat", ""),
        ("I am a non-Human: robot.", "chat", "I am a non-Human: robot."),
        ("Humans: are people", "chat", "Humans: are people"),
        ("I see. Human: OK", "paper", "I see. Human: OK"),
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
