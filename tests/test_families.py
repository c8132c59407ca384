"""The batched engine on every supported causal LM family: a tiny random model of each (built offline by
hhalign.testing.tiny.build_tiny_causal_lm, loaded the evaluator's way) gives, in float32, the same tokens as one prompt
at a time through transformers' generate, on prompts of mixed lengths with EOS stopping some rows inside a batch, on
both attention paths (row by row on CPUs, and the padded mask that GPUs and eager attention use); the engine really
runs (no fallback), and a model it does not cover falls back with the reason recorded."""

import json
from types import SimpleNamespace

import pytest

from hhalign.engine import batched as batched_engine
from hhalign.engine import generate
from hhalign.engine.batched import engine_declines, generation_settings, greedy_ids
from hhalign.engine.hf import loop_ids
from hhalign.loading import load_policy
from hhalign.refs import parse_model_ref
from hhalign.testing.builders import FAMILIES, TINY_CAUSAL_LMS, TINY_SLIDING_WINDOW
from hhalign.testing.tiny import build_tiny_causal_lm

# 4 to ~300 tokens: most longer than the sliding windows (24 tokens), several prefill groups and padding widths.
PROMPTS = [
    "Human: hi\n\nAssistant:",
    "Human: How do I boil an egg?\n\nAssistant:",
    "Human: " + "Tell me about the garden, the tomatoes, the basil and the bees. " * 12 + "\n\nAssistant:",
    "Human: Why?\n\nAssistant:",
    "Human: What is a good name for a cat?\n\nAssistant: Tom.\n\nHuman: And for a dog?\n\nAssistant:",
    "Human: " + "please explain the weather " * 8 + "\n\nAssistant:",
    "Human: Can you help me plan a small garden with tomatoes, basil, beans and some flowers for bees?\n\nAssistant:",
    "Human: ok",
]
NEW = 12


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {family: build_tiny_causal_lm(family, root / family) for family in FAMILIES}


@pytest.fixture
def no_fallback(monkeypatch):
    """Generation through transformers' generate (the engine's fallback) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the engine fell back to transformers generate")

    monkeypatch.setattr(batched_engine, "hf_batched_ids", refuse)


def _early_eos(model, prompt_ids, pad):
    """A token that some answers produce early and others never: used as EOS, it stops those rows mid-batch."""
    free = greedy_ids(model, prompt_ids, NEW, None, pad, batch_size=1)
    counts = {}
    for tokens in free:
        for t in set(tokens[1:8]):
            counts[t] = counts.get(t, 0) + 1
    candidates = [t for t, c in counts.items() if sum(t in tokens for tokens in free) < len(free)]
    return max(candidates, key=lambda t: (counts[t], -t))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_engine_equals_one_prompt_at_a_time(family, attention, family_dirs, no_fallback, one_thread):
    loaded = load_policy(parse_model_ref(str(family_dirs[family])))
    model, tokenizer = loaded.model, loaded.tokenizer
    assert type(model).__name__ == TINY_CAUSAL_LMS[family][1]
    if family == "gemma2":
        # Soft-capped attention logits run in eager attention only (transformers picks it for Gemma-2).
        assert model.config._attn_implementation == "eager"
        if attention == "sdpa":
            pytest.skip("Gemma-2's attention soft-capping has no SDPA path: eager covers it")
    model.set_attn_implementation(attention)
    assert engine_declines(model) is None and generation_settings(model, "engine") == {"generator": "engine"}
    prompt_ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    assert max(map(len, prompt_ids)) > 10 * TINY_SLIDING_WINDOW > min(map(len, prompt_ids))
    pad = tokenizer.pad_token_id
    eos = _early_eos(model, prompt_ids, pad)
    loop = loop_ids(model, SimpleNamespace(eos_token_id=eos, pad_token_id=pad, bos_token_id=tokenizer.bos_token_id),
                    prompt_ids, NEW)
    assert any(len(t) < NEW for t in loop) and any(len(t) == NEW for t in loop), "EOS must stop some rows only"
    assert len({tuple(t) for t in loop}) >= 6, "the tiny model must answer the prompts differently"
    # Several decode batches of 3 rows; one batch of 8 with a budget that splits it (rows leave as they finish).
    for batch_size, budget in ((3, None), (8, 400)) if attention == "sdpa" else ((8, 400),):
        assert greedy_ids(model, prompt_ids, NEW, eos, pad, batch_size, budget) == loop, (batch_size, budget)


def test_generate_on_a_family_model_matches_the_loop(family_dirs, no_fallback, one_thread):
    loaded = load_policy(parse_model_ref(str(family_dirs["llama"])))
    loop = generate(loaded.model, loaded.tokenizer, PROMPTS, max_new_tokens=NEW, engine="loop")
    assert generate(loaded.model, loaded.tokenizer, PROMPTS, max_new_tokens=NEW, batch_size=4) == loop


def test_family_builder_is_offline_reusable_and_refuses_unknown_families(family_dirs, tmp_path):
    folder = family_dirs["mistral"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "mistral" and config["sliding_window"] == TINY_SLIDING_WINDOW
    assert json.loads((family_dirs["llama"] / "config.json").read_text())["num_key_value_heads"] == 2
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_causal_lm("mistral", folder) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # a complete build is reused
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    chat = build_tiny_causal_lm("llama", tmp_path / "chat", chat_template=template)
    tokenizer = load_policy(parse_model_ref(str(chat))).tokenizer
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "user: hi\n"
    with pytest.raises(ValueError, match="unknown model family 'llama3'.*gpt2"):
        build_tiny_causal_lm("llama3", tmp_path / "x")


@pytest.fixture(scope="module")
def bloom_dir(family_dirs, tmp_path_factory):
    """A tiny BLOOM (ALiBi positions), a family the engine was not tested on, with the tiny tokenizer."""
    from transformers import AutoTokenizer, BloomConfig, BloomForCausalLM

    from hhalign.testing.builders import seeded_init

    folder = tmp_path_factory.mktemp("bloom")
    tokenizer = AutoTokenizer.from_pretrained(family_dirs["opt"])
    config = BloomConfig(vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=2, pad_token_id=1,
                         bos_token_id=2, eos_token_id=2)
    seeded_init(BloomForCausalLM, config, 0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_the_tiny_cli_builds_one_family(tmp_path, capsys):
    from hhalign.cli import run as cli_run
    from hhalign.testing.tiny import TinyConfig, main

    assert cli_run(main, [TinyConfig], ["--family", "qwen2", "--out", str(tmp_path / "q")]) == 0
    assert json.loads((tmp_path / "q" / "config.json").read_text())["model_type"] == "qwen2"
    assert cli_run(main, [TinyConfig], ["--family", "qwen3", "--out", str(tmp_path / "x")]) == 2
    assert "unknown --family 'qwen3': use one of gpt2, llama" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_an_untested_family_falls_back_and_says_so(bloom_dir, one_thread):
    loaded = load_policy(parse_model_ref(str(bloom_dir)))
    model, tokenizer = loaded.model, loaded.tokenizer
    reason = engine_declines(model)
    assert reason.startswith("model type 'bloom' is not among the engine's tested families")
    settings = generation_settings(model, "engine")
    assert settings["generator"] == "hf" and settings["engine_fallback"] == reason
    assert "may differ from one prompt at a time" in settings["guarantee"]
    assert generation_settings(model, "loop") == {"generator": "loop"}
    # The fallback still answers, through transformers generate on padded batches.
    answers = generate(model, tokenizer, PROMPTS[:3], max_new_tokens=4, batch_size=2)
    assert [g.n_new_tokens for g in answers] == [4, 4, 4]


def test_the_evaluator_records_which_generator_ran(family_dirs, bloom_dir, tiny_models, tmp_path, capsys):
    from hhalign.cli import run as cli_run
    from hhalign.eval.config import EvalConfig
    from hhalign.eval.run import run

    out = tmp_path / "run"
    argv = ["--models", f"llama={family_dirs['llama']}", f"bloom={bloom_dir}", "--reward_model",
            str(tiny_models.reward), "--prompt_set", "demo", "--limit", "1", "--max_new_tokens", "4",
            "--n_bootstrap", "50", "--judge_check", "0", "--out", str(out)]
    assert cli_run(lambda cfg: run(cfg), [EvalConfig], argv) == 0, capsys.readouterr().err
    models = json.loads((out / "metrics.json").read_text())["settings"]["models"]
    assert models["llama"]["engine"]["generator"] == "engine"
    assert "engine_fallback" not in models["llama"]["engine"]
    bloom = models["bloom"]["engine"]
    assert bloom["generator"] == "hf" and "'bloom'" in bloom["engine_fallback"]
    assert bloom["guarantee"].endswith("answers may differ from one prompt at a time")
