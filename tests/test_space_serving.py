"""hhalign.serving: the catalog, the memory-bounded pool with shared adapter bases, the chat protocol, input caps."""

from __future__ import annotations

import shutil

import pytest

from hhalign.errors import HHAlignError
from hhalign.serving.chat import (
    ChatService,
    DecodeOptions,
    Limits,
    best_indices,
    check_message,
    conversation_prompt,
    judge_length,
    judge_prompt,
    normalize_content,
    stream_reply,
    visible_text,
)
from hhalign.serving.pool import ModelPool, add_models, registry_catalog


@pytest.fixture(scope="module")
def catalog(tiny_models, tiny_adapter):
    return add_models([], [f"tiny={tiny_models.policy}", f"tiny_lora={tiny_adapter}"])


@pytest.fixture(scope="module")
def service(catalog, tiny_models):
    return ChatService(ModelPool(catalog, str(tiny_models.reward), device="cpu", dtype="float32", budget_gb=1),
                       Limits(max_input_chars=200, max_new_tokens=24, default_new_tokens=8))


def test_conversation_is_an_hh_transcript_and_keeps_the_last_turns():
    history = [("hi", "hello"), ("how are you?", "fine")]
    assert conversation_prompt(history, "bye") == (
        "Human: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: fine\n\nHuman: bye")
    assert conversation_prompt(history, "bye", max_turns=2) == "Human: how are you?\n\nAssistant: fine\n\nHuman: bye"
    assert conversation_prompt([], "q") == "Human: q"


def test_visible_text_cuts_at_the_next_human_turn_and_holds_back_a_half_marker():
    assert visible_text(" Sure, boil it.\n\nHuman: thanks") == "Sure, boil it."
    assert visible_text(" Sure.\n\nHum") == "Sure."
    assert visible_text(" Sure.\n") == "Sure."
    assert visible_text(" Human beings are fine") == "Human beings are fine"


def test_message_caps_and_content_forms():
    limits = Limits(max_input_chars=10)
    assert normalize_content([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "ab"
    assert check_message("  hi  ", limits) == "hi"
    with pytest.raises(HHAlignError, match="empty"):
        check_message(" ", limits)
    with pytest.raises(HHAlignError, match="11 characters long; the limit is 10"):
        check_message("x" * 11, limits)
    with pytest.raises(HHAlignError, match="between 1 and 256"):
        DecodeOptions(max_new_tokens=1000).checked(Limits())
    with pytest.raises(HHAlignError, match="temperature"):
        DecodeOptions(greedy=False, temperature=0).checked(Limits())


def test_catalog_offers_only_published_registry_models_and_validated_extras(tmp_path, tiny_models):
    from hhalign.publish.registry import load_registry

    published = [e.name for e in load_registry() if e.published]
    assert [e.name for e in registry_catalog()] == published
    with pytest.raises(HHAlignError, match="does not exist"):
        registry_catalog([f"mine={tmp_path / 'missing'}"])
    with pytest.raises(HHAlignError, match="already taken"):
        registry_catalog([f"{published[0]}=org/other"])
    with pytest.raises(HHAlignError, match="no model to serve"):
        add_models([], [])
    (local,) = add_models([], [f"mine={tiny_models.policy}"])
    assert str(tiny_models.policy) not in local.description  # visitors never see server paths


def test_chat_follows_the_evaluators_chat_protocol(service, tiny_models):
    """Greedy streamed reply == the evaluator's batched generate() under protocol "chat"; then it is scored."""
    from hhalign.engine import generate
    from hhalign.engine.reward import score
    from hhalign.loading import load_policy
    from hhalign.refs import parse_model_ref

    updates = list(service.chat([], "How long should I boil an egg?", "tiny", DecodeOptions(12)))
    final = updates[-1]
    assert final.done and all(not u.done for u in updates[:-1])
    loaded = load_policy(parse_model_ref(str(tiny_models.policy)))
    (expected,) = generate(loaded.model, loaded.tokenizer, ["Human: How long should I boil an egg?"], "chat", 12)
    assert final.reply == expected.response
    assert final.prompt == "Human: How long should I boil an egg?"
    reward = service.pool.reward()
    (s,) = score(reward.model, reward.tokenizer, [final.prompt], [final.reply])
    assert final.scored.reward == pytest.approx(s.reward, abs=1e-5)
    assert (final.scored.category, final.scored.label) == ("helpful", "helpful" if s.reward > -2 else "unhelpful")
    harmful = list(service.chat([], "How long should I boil an egg?", "tiny", DecodeOptions(12), "harmful"))[-1]
    assert harmful.reply == final.reply and harmful.scored.reward == final.scored.reward
    assert harmful.scored.label == ("harmless" if s.reward >= -3 else "harmful")
    assert harmful.to_dict()["passed"] == (s.reward >= -3)
    with pytest.raises(HHAlignError, match="unknown kind of prompt"):
        list(service.chat([], "hi", "tiny", DecodeOptions(2), "benign"))


def test_adapter_shares_its_base_and_the_base_is_unchanged(service):
    pool = service.pool
    before = list(service.chat([], "Tell me a joke", "tiny", DecodeOptions(10)))[-1].reply
    with_adapter = list(service.chat([], "Tell me a joke", "tiny_lora", DecodeOptions(10)))[-1].reply
    after = list(service.chat([], "Tell me a joke", "tiny", DecodeOptions(10)))[-1].reply
    assert before == after, "attaching an adapter must not change the base model's replies"
    assert with_adapter != before, "the adapter must be active for its own name"
    stats = pool.stats()
    assert len(stats["loaded"]) == 1 and sorted(next(iter(stats["loaded"].values()))) == ["tiny", "tiny_lora"]


def test_compare_streams_then_scores_every_model(service):
    steps = list(service.compare("What is a credit score?", DecodeOptions(6)))
    final = steps[-1]
    assert [u.model for u in final] == ["tiny", "tiny_lora"] and all(u.done and u.scored for u in final)
    best = best_indices(final)
    assert best and all(final[i].scored.reward == max(u.scored.reward for u in final) for i in best)


def test_unknown_model_and_stopped_stream_release_the_model(service):
    with pytest.raises(HHAlignError, match="not offered here"):
        list(service.chat([], "hi", "gpt-5"))
    with service.pool.use("tiny") as (model, tok):
        stream = stream_reply(model, tok, "Human: hi", DecodeOptions(24), service.limits)
        next(stream)
        stream.close()  # a visitor who leaves mid-reply: generation stops and the lock is released
    assert list(service.chat([], "hi", "tiny", DecodeOptions(4)))[-1].done


def test_pool_evicts_least_recently_used_within_budget(tiny_models, tmp_path):
    from hhalign.refs import parse_model_ref
    from hhalign.serving.pool import estimate_bytes

    second = tmp_path / "policy2"
    shutil.copytree(tiny_models.policy, second)
    size = estimate_bytes(parse_model_ref(str(second)))
    budget_gb = 1.5 * size / 1024**3  # room for one policy, not two
    catalog = add_models([], [f"a={tiny_models.policy}", f"b={second}"])
    pool = ModelPool(catalog, str(tiny_models.reward), device="cpu", dtype="float32", budget_gb=budget_gb)
    pool.ensure("a")
    assert pool.is_loaded("a")
    pool.ensure("b")
    assert pool.is_loaded("b") and not pool.is_loaded("a")
    with pool.use("a") as (model, _):
        assert model is not None
    assert pool.is_loaded("a") and not pool.is_loaded("b")
    tight = ModelPool(catalog, str(tiny_models.reward), device="cpu", budget_gb=size / 2 / 1024**3)
    with pytest.raises(HHAlignError, match="memory budget"):
        tight.ensure("a")


def test_sampling_is_available_and_capped(service):
    import torch

    def reply(options: DecodeOptions, seed: int) -> str:
        torch.manual_seed(seed)
        update = list(service.chat([], "Name a colour", "tiny", options))[-1]
        assert update.done and update.n_new_tokens <= 6 and update.scored is not None
        return update.reply

    greedy = {reply(DecodeOptions(6), seed) for seed in range(3)}
    sampled = {reply(DecodeOptions(6, greedy=False, temperature=0.9), seed) for seed in range(3)}
    assert len(greedy) == 1  # greedy ignores the seed
    assert len(sampled) > 1  # sampling does not: the option reaches the decoder


# Words the tiny reward tokenizer knows, so a message's token count is roughly its word count.
WORDS = "the cat sat on a warm mat and asked how to keep basil alive near the window".split()


def long_text(n_chars: int, seed: int) -> str:
    words = [WORDS[(seed + 7 * i) % len(WORDS)] for i in range(n_chars)]
    return " ".join(words)[:n_chars]


def test_judge_length_reads_the_tokenizer_then_the_config_then_512(service):
    from types import SimpleNamespace

    reward = service.pool.reward()
    assert reward.tokenizer.model_max_length > 1e20  # says nothing, like the OpenAssistant tokenizer
    assert judge_length(reward) == reward.model.config.max_position_embeddings == 512
    assert judge_length(reward, 300) == 300
    stated = SimpleNamespace(tokenizer=SimpleNamespace(model_max_length=128), model=reward.model)
    assert judge_length(stated) == 128
    bare = SimpleNamespace(tokenizer=SimpleNamespace(model_max_length=int(1e30)), model=SimpleNamespace())
    assert judge_length(bare) == 512


def pair_tokens(tokenizer, prompt, reply):
    return len(tokenizer(prompt, reply)["input_ids"])


def test_judge_prompt_keeps_the_latest_exchanges_that_fit(service):
    tok = service.pool.reward().tokenizer
    history = [(long_text(300, i), long_text(200, 50 + i)) for i in range(6)]
    reply = "Keep it in the sun."
    short, cut = judge_prompt(tok, history[:1], "and then?", reply, 512)
    assert (short, cut) == (conversation_prompt(history[:1], "and then?"), False)
    prompt, cut = judge_prompt(tok, history, "and then?", reply, 200)
    assert cut and prompt.startswith("Human: ") and prompt.endswith("Human: and then?")
    kept = prompt.count("Human: ") - 1
    assert 0 < kept < 6 and prompt == conversation_prompt(history[-kept:], "and then?")
    assert pair_tokens(tok, prompt, reply) <= 200 < pair_tokens(tok, conversation_prompt(history[-kept - 1:],
                                                                                          "and then?"), reply)
    # A message alone longer than the cap: its last tokens are kept.
    message = long_text(2000, 3)
    prompt, cut = judge_prompt(tok, history, message, reply, 64)
    assert cut and message.endswith(prompt.strip()) and len(prompt) < 400
    assert pair_tokens(tok, prompt, reply) <= 65  # re-tokenizing at the cut may add one token; score() caps it


def test_a_long_conversation_is_judged_on_its_latest_512_tokens(service):
    from hhalign.engine.reward import score

    long = ChatService(service.pool, Limits(max_input_chars=2000, max_new_tokens=8, default_new_tokens=8))
    history = [(long_text(2000, i), long_text(400, 9 + i)) for i in range(5)]
    message = long_text(2000, 99)
    final = list(long.chat(history, message, "tiny", DecodeOptions(8)))[-1]
    reward = service.pool.reward()
    assert final.scored.truncated and final.scored.n_tokens <= 512 and final.to_dict()["reward_input_truncated"]
    judged, cut = judge_prompt(reward.tokenizer, history, message, final.reply, 512)
    (expected,) = score(reward.model, reward.tokenizer, [judged], [final.reply], max_length=512)
    assert cut and final.scored.reward == pytest.approx(expected.reward, abs=1e-5)
    assert pair_tokens(reward.tokenizer, final.prompt, final.reply) > 2000  # what it read before the cap
    plain = list(long.chat([], "Name a colour", "tiny", DecodeOptions(4)))[-1]
    assert not plain.scored.truncated and not plain.to_dict()["reward_input_truncated"]
