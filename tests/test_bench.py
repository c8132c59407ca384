"""batch/bench.py end to end on the miniature architectures (a smoke test of the machinery, not a measurement)."""

import importlib.util
import json

from conftest import ROOT
from hhalign.bench.run import DEBERTA_V3_LARGE, OPT_350M, BenchConfig, generation_flops, scoring_flops
from hhalign.cli import run as cli_run


def _bench_script():
    spec = importlib.util.spec_from_file_location("bench_cli", ROOT / "batch" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--tiny", "--n", "3", "--dataset", "", "--max_new_tokens", "6", "--json", str(out)]
    assert cli_run(_bench_script().main, [BenchConfig], argv) == 0
    printed = capsys.readouterr().out
    for text in ("| generation | study's loop, fp32 |", "| scoring | engine, fp32 |", "token-identical", "FLOP floor"):
        assert text in printed
    result = json.loads(out.read_text())
    assert set(result["generation"]) >= {"n", "loop_s", "fp32_ratio", "fast_ratio", "fp32_identical",
                                         "fast_agreement"}
    assert set(result["scoring"]) >= {"n", "loop_s", "fp32_ratio", "fast_ratio", "fp32_max_abs_diff",
                                      "fast_max_abs_diff"}
    assert set(result["floor_s"]) == {"generation_fp32", "generation_fast", "scoring_fp32", "scoring_fast"}
    assert {"cpu", "threads", "torch", "load_average"} <= set(result["machine"])
    assert result["generation"]["n"] == result["scoring"]["n"] == 3
    assert result["generation"]["fp32_identical"] == 3
    assert result["scoring"]["fp32_max_abs_diff"] < 1e-4
    assert 0.0 <= result["generation"]["fast_agreement"] <= 1.0


def test_bench_refuses_bad_options(capsys):
    assert cli_run(_bench_script().main, [BenchConfig], ["--tiny", "--n", "0", "--dataset", ""]) == 2
    assert "--n must be a positive" in capsys.readouterr().err


def test_real_configs_and_flop_counts():
    from transformers import OPTConfig

    assert (OPT_350M["num_hidden_layers"], OPT_350M["hidden_size"], OPT_350M["ffn_dim"],
            OPT_350M["word_embed_proj_dim"], OPT_350M["vocab_size"]) == (24, 1024, 4096, 512, 50272)
    assert OPT_350M["do_layer_norm_before"] is False
    assert (DEBERTA_V3_LARGE["num_hidden_layers"], DEBERTA_V3_LARGE["hidden_size"],
            DEBERTA_V3_LARGE["position_buckets"], DEBERTA_V3_LARGE["vocab_size"]) == (24, 1024, 256, 128100)
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, OPTForCausalLM

    with torch.device("meta"):
        opt = OPTForCausalLM(OPTConfig(**OPT_350M))
        deberta = DebertaV2ForSequenceClassification(DebertaV2Config(**DEBERTA_V3_LARGE))
    # 2 x 303M linear weights per token fed (24 x (4 x 1024^2 + 2 x 1024 x 4096) + project in/out) + attention.
    per_token = generation_flops(opt, [100], [50], 50) - generation_flops(opt, [99], [50], 50)
    assert 0.60e9 < per_token < 0.63e9
    per_pair_token = scoring_flops(deberta, [101]) - scoring_flops(deberta, [100])
    assert 0.66e9 < per_pair_token < 0.68e9  # + the two relative-position terms and content attention
