"""batch/bench.py end to end on the tests' tiny models (a smoke test of the machinery, not a measurement), and the
FLOP counts on the real architectures."""

import importlib.util
import json

import pytest

from conftest import ROOT
from hhalign.bench.config import BenchConfig
from hhalign.bench.measure import (
    agreement,
    decode_bytes,
    generation_flops,
    memory_bandwidth,
    reward_error,
    scoring_flops,
)
from hhalign.bench.run import _roofline
from hhalign.cli import run as cli_run


def _bench_script():
    spec = importlib.util.spec_from_file_location("bench_cli", ROOT / "batch" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_cli_prints_the_table_with_peers_and_writes_json(tmp_path, capsys, one_thread):
    out = tmp_path / "bench.json"
    argv = ["--tiny", "--n", "3", "--dataset", "", "--max_new_tokens", "6", "--peers", "--repeat", "2", "--peer_cache",
            str(tmp_path / "cache"), "--json", str(out)]
    assert cli_run(_bench_script().main, [BenchConfig], argv) == 0
    printed = capsys.readouterr().out
    for text in ("| generation | the study's loop | fp32 |", "| scoring | hhalign engine | fp32 |", "token-identical",
                 "transformers generate", "transformers, padded batches", "load average"):
        assert text in printed
    assert "x floor" not in printed and "FLOP floor" not in printed and "Roofline" not in printed, "--tiny: no floor"
    result = json.loads(out.read_text())
    # The keys of the table before peers existed, and the peers.
    assert set(result["generation"]) >= {"n", "loop_s", "fp32_ratio", "fast_ratio", "fp32_identical",
                                         "fast_agreement"}
    assert set(result["scoring"]) >= {"n", "loop_s", "fp32_ratio", "fast_ratio", "fp32_max_abs_diff",
                                      "fast_max_abs_diff", "reward_std"}
    assert result["roofline"] is None
    assert set(result["floor_s"]) == {"generation_fp32", "generation_fast", "scoring_fp32", "scoring_fast"}
    assert {"cpu", "vendor", "family", "model", "model_name", "simd", "threads", "torch", "load_average",
            "load_average_end", "kernels"} <= set(result["machine"])
    chosen = result["machine"]["kernels"]["float32"]["chosen"]
    assert set(chosen) == {"few", "many"} and f"fp32 linear kernels chosen at start-up: {chosen['many']}" in printed
    assert f"Fast mode here: {result['settings']['fast_format']}" in printed
    # --repeat 2: every system's two rounds, their mean and spread, the warm-up kept out of them and stated.
    for task in ("generation", "scoring"):
        for key in ("loop", "fp32", "fast"):
            r = result[task]["rounds"][key]
            assert len(r["rounds_s"]) == 2 and r["best_s"] == min(r["rounds_s"]) == result[task][f"{key}_s"]
            assert r["warmup_s"] > 0 and r["sd_s"] >= 0 and len(r["vs_loop_rounds"]) == 2
    assert "excluded" in result["settings"]["warmup"] and "mean ± sd (s)" in printed
    sample = result["settings"]["prompt_sample"]
    assert sample["sample"] == "stratified" and len(sample["prompt_ids"]) == 3
    assert result["generation"]["fp32_identical"] == 3
    assert result["scoring"]["fp32_max_abs_diff"] < 1e-4
    peers = {(p["task"], p["system"], p["format"]): p for p in result["peers"]}
    hf = peers[("generation", "transformers generate, length-sorted left-padded batches", "float32")]
    assert hf["identical"] == 3 and hf["time_s"] > 0 and hf["vs_loop"] > 0
    padded = peers[("scoring", "transformers, padded batches", "float32")]
    assert padded["max_abs_diff"] < 1e-4
    # CI installs the [bench] peers (requirements.txt): where they are present they must run and agree with the loop.
    for module, key in (("ctranslate2", ("generation", "CTranslate2, length groups", "float32")),
                        ("onnxruntime", ("scoring", "ONNX Runtime, length groups", "float32"))):
        if importlib.util.find_spec(module) is not None:
            peer = peers[key]
            assert peer["skipped"] is None and peer["time_s"] > 0, peer
            assert peer.get("identical") == 3 if key[0] == "generation" else peer["max_abs_diff"] < 1e-4, peer
        else:
            assert module in peers[key]["skipped"]
    for peer in result["peers"]:  # every peer either ran or says why not, on one line
        assert (peer["time_s"] is None) == bool(peer["skipped"])
        if peer["skipped"]:
            assert "\n" not in peer["skipped"] and f"skipped: {peer['skipped']}" in printed


def test_bench_on_the_llama_family_shape(tmp_path, capsys, one_thread):
    out = tmp_path / "bench.json"
    argv = ["--tiny", "--policy_shape", "smollm2-360m", "--n", "3", "--dataset", "", "--max_new_tokens", "6",
            "--json", str(out)]
    assert cli_run(_bench_script().main, [BenchConfig], argv) == 0
    printed = capsys.readouterr().out
    assert "tiny llama policy" in printed and "--policy_shape smollm2-360m" in printed
    result = json.loads(out.read_text())
    assert result["settings"]["policy_shape"] == "smollm2-360m"
    assert result["generation"]["fp32_identical"] == 3  # the engine (not a fallback) on Llama: the loop's tokens


def test_bench_refuses_bad_options(capsys):
    assert cli_run(_bench_script().main, [BenchConfig], ["--tiny", "--n", "0", "--dataset", ""]) == 2
    assert "--n must be a positive" in capsys.readouterr().err


@pytest.mark.parametrize("reference, other, expected", [
    ([[1, 2, 3], [4]], [[1, 2, 3], [4]], (2, 1.0)),
    ([[1, 2, 3], [4]], [[1, 2, 9], [4, 5]], (0, 3 / 5)),  # 3 equal positions of max(3, 3) + max(1, 2)
    ([[]], [[]], (1, 1.0)),
])
def test_agreement_counts_answers_and_token_positions(reference, other, expected):
    assert agreement(reference, other) == expected


def test_reward_error_is_measured_against_the_rewards_spread():
    error = reward_error([0.0, 2.0], [0.5, 2.0])  # std 1.0
    assert error["max_abs_diff"] == 0.5 and error["mean_abs_diff"] == 0.25
    assert error["max_diff_over_std"] == 0.5 and error["mean_diff_over_std"] == 0.25
    assert reward_error([1.0], [1.5])["max_diff_over_std"] is None  # one reward has no spread


def test_flop_counts_on_the_real_architectures():
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, OPTConfig, OPTForCausalLM

    from hhalign.testing.builders import DEBERTA_V3_LARGE, OPT_350M

    with torch.device("meta"):
        opt = OPTForCausalLM(OPTConfig(**OPT_350M))
        deberta = DebertaV2ForSequenceClassification(DebertaV2Config(**DEBERTA_V3_LARGE))
    # 2 x 303M linear weights per token fed (24 x (4 x 1024^2 + 2 x 1024 x 4096) + project in/out) + attention.
    per_token = generation_flops(opt, [100], [50], 50) - generation_flops(opt, [99], [50], 50)
    assert 0.60e9 < per_token < 0.63e9
    per_pair_token = scoring_flops(deberta, [101]) - scoring_flops(deberta, [100])
    assert 0.66e9 < per_pair_token < 0.68e9  # + the two relative-position terms and content attention


def test_counts_on_the_llama_family_shape():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hhalign.testing.builders import SMOLLM2_360M

    with torch.device("meta"):
        llama = LlamaForCausalLM(LlamaConfig(**SMOLLM2_360M))
    # 32 x (2 x 960^2 + 2 x 960 x 320 + 3 x 960 x 2560) = 314.6M linear weights besides the tied head, x 2 per token
    # fed (629.1M), + attention: one more prompt token lengthens the 149-token context by one (2 x 960 x 32 x 298).
    per_token = generation_flops(llama, [100], [50], 50) - generation_flops(llama, [99], [50], 50)
    assert per_token == pytest.approx(2 * 314_572_800 + 2 * 960 * 32 * 298)
    # Grouped-query attention: a cached position holds 5 key/value heads of 64 per layer, not 960 values.
    per_position = decode_bytes(llama, [101], [2], 2) - decode_bytes(llama, [100], [2], 2)
    assert per_position == 4 * 2 * 32 * 320


# A 2-layer OPT with hidden size 8: 2 x (4 x 8 x 8 + 2 x 8 x 16) + 10 x 8 (the head) = 1104 linear weights,
# 4416 bytes in float32; one cached position costs 4 bytes x (key + value) x 2 layers x 8 = 128 bytes.
@pytest.mark.parametrize("prompts, new, max_new, expected", [
    ([5], [3], 3, 2 * 4416 + 128 * (6 + 7)),  # full answer: positions 5 and 6 fed back, the last token never
    ([5, 3], [1, 3], 3, 2 * 4416 + 128 * (6 + 4 + 5)),  # the first stopped after one token (its EOS not fed)
    ([5], [0], 3, 0),  # stopped at once: nothing decoded
])
def test_decode_bytes_reads_the_weights_per_step_and_the_cache_per_token(prompts, new, max_new, expected):
    from transformers import OPTConfig, OPTForCausalLM

    model = OPTForCausalLM(OPTConfig(hidden_size=8, num_hidden_layers=2, ffn_dim=16, num_attention_heads=2,
                                     vocab_size=10, word_embed_proj_dim=8, max_position_embeddings=32))
    assert decode_bytes(model, prompts, new, max_new) == expected


def test_roofline_takes_the_slower_of_decode_arithmetic_and_reads():
    roof = _roofline(prefill_flops=2e12, decode_flops=1e12, read_bytes=90e9, rate=1e12, bandwidth=45e9, fp32_s=8.0)
    assert roof["prefill_s"] == 2.0 and roof["decode_flop_s"] == 1.0 and roof["decode_read_s"] == 2.0
    assert roof["generation_fp32_s"] == 4.0 and roof["fp32_x_roofline"] == 2.0
    assert _roofline(2e12, 1e12, 90e9, None, 45e9, 8.0) is None  # --tiny measures no rates


def test_memory_bandwidth_is_in_bytes_per_second():
    import time

    import torch

    src = torch.ones(2**25 // 4)  # 32 MiB, timed here independently: bytes read plus bytes written per second
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    ours = memory_bandwidth(gib=2**25 / 2**30, repeat=5)
    assert 0.6 < ours / (2 * 2**25 / best) < 1.7  # a GiB/s, a missed read or write, or bits would be far outside


def test_bench_sample_follows_the_study_sets_length_distribution(hh_path):
    from hhalign.bench.models import bench_prompts
    from hhalign.data import build_prompt_set

    paper = build_prompt_set("paper", str(hh_path))
    category_of = {p.prompt: p.category for p in paper}
    prompts, info = bench_prompts(8, str(hh_path))
    assert len(prompts) == 8 and info["categories"] == {"harmful": 4, "helpful": 4}
    assert info["sample"] == "stratified" and info["seed"] == 0
    assert prompts == bench_prompts(8, str(hh_path))[0], "the draw is seeded"
    other, _ = bench_prompts(8, str(hh_path), seed=1)
    assert set(other) != set(prompts), "another seed, another sample"
    # One prompt from each quarter of each category's length ranking: the sample spans short to long prompts.
    for category in ("harmful", "helpful"):
        ranked = sorted(len(p.prompt) for p in paper if p.category == category)
        drawn = sorted(len(p) for p in prompts if category_of[p] == category)
        for q, length in enumerate(drawn):
            assert ranked[q * len(ranked) // 4] <= length <= ranked[(q + 1) * len(ranked) // 4 - 1]
    first, info_first = bench_prompts(8, str(hh_path), sample="first")
    assert first == [p.prompt for p in paper if p.category == "harmful"][:4] + \
        [p.prompt for p in paper if p.category == "helpful"][:4]
    assert info_first["chars"]["mean"] != info["chars"]["mean"]


def test_bench_sample_refuses_too_many_prompts_and_reads_files(hh_path, tmp_path):
    from hhalign.bench.models import bench_prompts
    from hhalign.errors import HHAlignError

    with pytest.raises(HHAlignError, match="--n 101: --prompts paper has only 100 prompts"):
        bench_prompts(101, str(hh_path))
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"prompt": "x" * k, "category": "helpful"}) + "\n" for k in range(1, 13)))
    prompts, info = bench_prompts(3, None, str(path))
    # One from each third of the 12 lengths: 1-4, 5-8, 9-12 characters.
    assert [(len(p) - 1) // 4 for p in prompts] == [0, 1, 2] and info["categories"]["helpful"] == 3
