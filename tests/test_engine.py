"""The batched generation engine against one prompt at a time and the study's loop, on the tiny models (fp32), and
its CPU kernels. Scoring is tested in test_reward.py."""

from types import SimpleNamespace

import pytest

from hhalign.engine import generate
from hhalign.engine.base import budget_batches, prefill_groups
from hhalign.engine.batched import greedy_ids
from hhalign.engine.hf import loop_ids
from hhalign.engine.kernels import engine_kernels
from hhalign.engine.precision import fast_format, to_fast
from hhalign.loading import load_policy
from hhalign.refs import parse_model_ref

# Very different lengths: 3 tokens to several hundred, so prefill groups, padding and the KV layout all get exercised.
PROMPTS = [
    "Human: hi",
    "Human: How do I boil an egg?",
    "Human: " + "Tell me about the garden, the tomatoes, the basil and the bees. " * 30,
    "Human: Why?",
    "Human: What is a good name for a cat?\n\nAssistant: Tom.\n\nHuman: And for a dog?",
    "Human: " + "please explain the weather " * 8,
    "Human: ok",
    "Human: Can you help me plan a small garden with tomatoes, basil, beans and some flowers for bees?",
]
NEW = 12


@pytest.fixture(scope="module")
def policy(tiny_models):
    return load_policy(parse_model_ref(str(tiny_models.policy)))


@pytest.fixture(scope="module")
def prompt_ids(policy):
    return [policy.tokenizer(p)["input_ids"] for p in PROMPTS]


@pytest.fixture(scope="module")
def early_eos(policy, prompt_ids):
    """A token id that some answers produce early: used as EOS, it stops those rows mid-batch."""
    free = greedy_ids(policy.model, prompt_ids, NEW, None, policy.tokenizer.pad_token_id, batch_size=1)
    counts = {}
    for tokens in free:
        for t in set(tokens[1:6]):
            counts[t] = counts.get(t, 0) + 1
    # Seen early in some answers but not in all, so stopped and running rows share a batch.
    eos = max((t for t, c in counts.items() if c < len(free)), key=lambda t: (counts[t], -t))
    return eos


def _loop_reference(policy, prompt_ids, eos):
    tok = SimpleNamespace(eos_token_id=eos, pad_token_id=policy.tokenizer.pad_token_id,
                          bos_token_id=policy.tokenizer.bos_token_id)
    return loop_ids(policy.model, tok, prompt_ids, NEW)


def test_batched_equals_one_at_a_time_and_the_study_loop(policy, prompt_ids, early_eos):
    pad = policy.tokenizer.pad_token_id
    single = [greedy_ids(policy.model, [ids], NEW, early_eos, pad, batch_size=1)[0] for ids in prompt_ids]
    assert single == _loop_reference(policy, prompt_ids, early_eos)
    assert any(len(s) < NEW for s in single) and any(len(s) == NEW for s in single), "EOS must stop some rows only"
    assert all(early_eos not in s for s in single)
    for batch_size in (2, 3, 64):
        for budget in (None, 64, 400):
            batched = greedy_ids(policy.model, prompt_ids, NEW, early_eos, pad, batch_size, budget)
            assert batched == single, f"batch_size={batch_size} token_budget={budget}"


def test_generate_engines_agree(policy):
    loop = generate(policy.model, policy.tokenizer, PROMPTS, max_new_tokens=NEW, engine="loop")
    batched = generate(policy.model, policy.tokenizer, PROMPTS, max_new_tokens=NEW, batch_size=64)
    assert batched == loop
    assert [g.n_prompt_tokens for g in loop] == [len(policy.tokenizer(p)["input_ids"]) for p in PROMPTS]


def test_batch_plans_cover_every_row_within_limits():
    lengths = [5, 300, 12, 12, 40, 7, 800, 3, 64]
    batches = list(budget_batches(lengths, 3, 500, extra=10))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * (max(lengths[i] for i in b) + 10) <= 500)
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
    ordered = sorted(lengths, reverse=True)
    groups = prefill_groups(ordered, max_rows=4)
    assert groups[0] == (0, 1) and groups[1] == (1, 2), "long prompts are prefilled alone, without padding"
    assert [i for a, b in groups for i in range(a, b)] == list(range(len(ordered)))
    assert all(b - a <= 4 for a, b in groups)


def test_engine_kernels_are_scoped(policy):
    import torch

    model = policy.model
    with engine_kernels(model) as per_row:
        assert per_row and model.config._attn_implementation == "hhalign_rows"
        assert any("forward" in vars(m) for m in model.modules() if type(m) is torch.nn.Linear)
    assert model.config._attn_implementation == "sdpa"
    assert not any("forward" in vars(m) for m in model.modules())


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_decode_attention_of_all_rows_is_each_rows_own_attention(window, kv_heads):
    """One decode step for rows with different starts (left padding): each row's output is the attention of its query
    over its own keys (its last ``window`` keys in a sliding layer), computed alone."""
    import torch
    import torch.nn.functional as F

    from hhalign.engine.kernels import _rows_attention

    gen = torch.Generator().manual_seed(0)
    rows, heads, kv_len, dim = 4, 4, 12, 8
    query = torch.randn(rows, heads, 1, dim, generator=gen)
    key, value = (torch.randn(rows, kv_heads, kv_len, dim, generator=gen) for _ in range(2))
    starts = [0, 3, 3, 9]
    for r, s in enumerate(starts):  # padding slots hold zeros, as the engine's buffers do
        key[r, :, :s] = value[r, :, :s] = 0
    module = SimpleNamespace(training=False)
    out, _ = _rows_attention(module, query, key, value, None, scaling=0.3, hhalign_row_starts=starts,
                             sliding_window=window)
    assert out.shape == (rows, 1, heads, dim)
    for r, s in enumerate(starts):
        k0 = s if window is None else max(s, kv_len - window)
        k, v = (t[r : r + 1, :, k0:].repeat_interleave(heads // kv_heads, dim=1) for t in (key, value))
        alone = F.scaled_dot_product_attention(query[r : r + 1], k, v, scale=0.3)
        assert torch.allclose(out[r, 0], alone[0, :, 0], atol=1e-6), r


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_linear_kernel_computes_the_linear_layer(dtype):
    import torch
    import torch.nn.functional as F

    from hhalign.engine.kernels import kernel_candidates, linear_fn, measured_kernels

    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(48, 32, generator=gen).to(dt), torch.randn(48, generator=gen).to(dt)
    tol = 1e-4 if dtype == "float32" else 5e-2
    for shape in ((3, 32), (2, 70, 32)):  # few rows, many rows (3-D, as in a model)
        x = torch.randn(*shape, generator=gen).to(dt)
        expected = F.linear(x.float(), weight.float(), bias.float())
        for kernel in kernel_candidates(dt):
            for gelu in (False, True):
                got = linear_fn(weight, bias, kernel, gelu=gelu)(x).float()
                want = F.gelu(expected) if gelu else expected
                assert got.shape == want.shape and torch.allclose(got, want, atol=tol, rtol=tol), (kernel, gelu)
    assert set(measured_kernels(dtype).values()) <= set(kernel_candidates(dt))


@pytest.mark.parametrize("fmt", ["bfloat16", "int8"])
def test_fast_formats_convert_the_model_and_mostly_agree_with_float32(policy, prompt_ids, fmt):
    import copy

    import torch

    from hhalign.bench.measure import agreement

    pad, eos = policy.tokenizer.pad_token_id, policy.tokenizer.eos_token_id
    fast, got = to_fast(copy.deepcopy(policy.model), "cpu", fmt)
    assert got == fmt
    linear = fast.model.decoder.layers[0].fc1
    assert linear.weight.dtype == torch.bfloat16 if fmt == "bfloat16" else not isinstance(linear, torch.nn.Linear)
    exact = greedy_ids(policy.model, prompt_ids, NEW, eos, pad, batch_size=64)
    _, share = agreement(exact, greedy_ids(fast, prompt_ids, NEW, eos, pad, batch_size=64))
    assert share > 0.5  # about 0.9 on these prompts; a broken conversion gives noise


@pytest.mark.parametrize("flags, engines, expected", [
    ({"avx512_bf16", "avx2"}, ["x86"], "bfloat16"),
    ({"amx_bf16"}, [], "bfloat16"),
    ({"avx2", "fma"}, ["x86", "fbgemm"], "int8"),
    ({"avx2"}, ["qnnpack"], "float32"),
    (set(), ["x86"], "float32"),
])
def test_fast_format_follows_the_cpu_features(monkeypatch, flags, engines, expected):
    import torch

    import hhalign.engine.precision as precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    monkeypatch.setattr(type(torch.backends.quantized), "supported_engines", property(lambda self: engines))
    assert fast_format("cpu") == expected


@pytest.mark.gpu
def test_vllm_backend_when_installed(policy, prompt_ids, tmp_path):
    pytest.importorskip("vllm")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    from hhalign.bench.measure import agreement
    from hhalign.engine import get_generator

    policy.model.save_pretrained(tmp_path)
    policy.tokenizer.save_pretrained(tmp_path)
    backend = get_generator("vllm", model_path=str(tmp_path))
    out = backend.generate_ids(policy.model, policy.tokenizer, prompt_ids, NEW, 8)
    backend.close()
    exact = greedy_ids(policy.model, prompt_ids, NEW, policy.tokenizer.eos_token_id, policy.tokenizer.pad_token_id)
    assert agreement(exact, out)[1] > 0.9  # float32 on both sides; kernels differ, so a rare near-tie may flip
