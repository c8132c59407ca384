"""hhalign.serving.soak: the memory soak of the Space (the measurement runs with -m slow or batch/soak_space.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hhalign.errors import HHAlignError
from hhalign.serving.soak import MB, SoakConfig, growth_per_100, long_message, long_verdict, rss_bytes, run_soak


@pytest.mark.parametrize("samples, per_100", [
    ([(0, 500 * MB), (100, 500 * MB), (200, 500 * MB)], 0.0),
    ([(0, 0), (10, 1 * MB), (20, 2 * MB)], 10 * MB),
    ([(0, 10 * MB), (50, 9 * MB), (100, 11 * MB), (150, 10 * MB)], 0.4 * MB),
    ([(0, 7 * MB)], 0.0),
])
def test_growth_is_the_least_squares_slope_per_100_requests(samples, per_100):
    assert growth_per_100(samples) == pytest.approx(per_100)


def test_rss_counts_a_process_and_its_children():
    alone = rss_bytes(os.getpid())
    assert alone > 10 * MB
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(64 * 1024 * 1024); time.sleep(30)"])
    try:
        for _ in range(100):
            if rss_bytes(os.getpid()) > alone + 50 * MB:
                break
            subprocess.run(["sleep", "0.1"])
        assert rss_bytes(os.getpid()) > alone + 50 * MB
    finally:
        child.kill()
        child.wait()
    assert rss_bytes(2**22 + 12345) == 0  # no such process


def test_bad_soak_options_are_one_line_errors():
    with pytest.raises(HHAlignError, match="--per_session"):
        run_soak(SoakConfig(per_session=0))


@pytest.mark.slow
def test_memory_stays_flat_after_warm_up_with_bounded_sessions(space_demo_cache, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(space_demo_cache, cache)
    result = run_soak(SoakConfig(requests=160, warmup=60, per_session=2, sample_every=20, idle_seconds=2,
                                 cache_dir=str(cache), server_args=["--max_sessions=10"]))
    assert result["growth_mb_per_100"] < 3.0, result["samples"]
    assert result["idle_mb"] <= result["max_mb"] + 1


def test_long_visitor_verdict_and_messages():
    latencies = [1.0, 0.5, 0.6, 0.7, 0.8, 0.9]
    rss = [100 * MB, 110 * MB, 120 * MB, 118 * MB, 125 * MB, 121 * MB]
    v = long_verdict(latencies, rss, warmup=2)
    assert v["rss_after_warmup_mb"] == 110 and v["rss_max_mb"] == 125 and v["growth_after_warmup_mb"] == 15
    assert v["first_turn_s"] == 1.0 and v["max_after_warmup_s"] == 0.9 and v["slowest_vs_first"] == 0.9
    assert v["median_turn_s"] == 0.8 and v["median_last_10_s"] == 0.8
    with pytest.raises(HHAlignError, match="one latency and one RSS sample per turn"):
        long_verdict([1.0], [1, 2], 0)
    messages = [long_message(i, 2000) for i in range(3)]
    assert all(len(m) == 2000 for m in messages) and len(set(messages)) == 3
    with pytest.raises(HHAlignError, match="--turns"):
        run_soak(SoakConfig(visitor="long", turns=1))


@pytest.mark.slow
def test_a_long_conversation_keeps_memory_and_latency_flat(space_demo_cache, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(space_demo_cache, cache)
    r = run_soak(SoakConfig(visitor="long", turns=16, long_warmup=4, max_new_tokens=16, cache_dir=str(cache)))
    assert r["growth_after_warmup_mb"] < 100 and max(r["reward_tokens"]) <= 512
    assert r["median_last_10_s"] < 2 * r["first_turn_s"], r["latencies_s"]
