"""A soak of the Space: ``space/app.py --demo`` on loopback, driven by a few hundred bounded API requests from many
sessions (chat turns, clears, compare, arena rounds and votes, results), with the server's resident memory sampled
as it goes and after an idle pause. The verdict is the growth after warm-up, per 100 requests."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import HHAlignError

logger = logging.getLogger(__name__)
MB = 1024**2


@dataclass
class SoakConfig:
    """Options of ``batch/soak_space.py``."""

    requests: int = field(default=300, metadata={"help": "Requests after warm-up (each one API call)."})
    warmup: int = field(default=60, metadata={"help": "Requests before the baseline is taken."})
    per_session: int = field(default=4, metadata={"help": "Requests per session (a new API client after them)."})
    sample_every: int = field(default=20, metadata={"help": "Take the server's RSS every this many requests."})
    max_new_tokens: int = field(default=32, metadata={"help": "New tokens per reply (the bound on each request)."})
    idle_seconds: float = field(default=10.0, metadata={"help": "Pause after the last request, then sample again."})
    cache_dir: str | None = field(default=None, metadata={
        "help": "Demo cache to serve (default: a temporary copy is built)."})
    out: str | None = field(default=None, metadata={"help": "Write the samples and verdict here as JSON."})
    server_env: list[str] = field(default_factory=list, metadata={
        "help": "Extra NAME=VALUE environment for the server, e.g. MALLOC_ARENA_MAX=2 to compare allocators."})
    server_args: list[str] = field(default_factory=list, metadata={
        "help": "Extra options for space/app.py, e.g. --max_sessions 10000 (Gradio's default) to compare."})
    visitor: Literal["mixed", "long"] = field(default="mixed", metadata={
        "help": "mixed: many sessions' chats, compares, arena rounds, votes and results (--requests, --warmup); "
                "long: one session's conversation of --turns messages of --message_chars characters each with one "
                "model, RSS and latency taken after every turn."})
    turns: int = field(default=50, metadata={"help": "long: messages in the conversation."})
    message_chars: int = field(default=2000, metadata={"help": "long: characters per message (the Space's limit is "
                                                                "--max_input_chars, 2000 by default)."})
    long_warmup: int = field(default=5, metadata={"help": "long: turns before the RSS baseline is taken."})


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` and its children (Linux /proc), bytes."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = [int(k) for k in kids]
    for k in list(out):
        out += _children(k)
    return out


def growth_per_100(samples: list[tuple[int, int]]) -> float:
    """Least-squares slope of RSS (bytes) over request count, per 100 requests."""
    if len(samples) < 2:
        return 0.0
    xs, ys = [s[0] for s in samples], [s[1] for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else 100 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STEPS = ("chat", "chat", "clear", "compare", "arena", "vote", "results", "browse")


def _request(client, step: str, i: int, max_new: int) -> None:
    if step == "chat":
        client.predict(f"Question {i}: how do I keep basil alive?", "tiny" if i % 2 else "tiny_lora", "helpful", True,
                       max_new, 0.7, 0.9, api_name="/chat")
    elif step == "clear":
        client.predict("tiny", api_name="/clear")
    elif step == "compare":
        client.predict(f"Prompt {i}", "harmful", max_new, api_name="/compare")
    elif step == "arena":
        client.predict(f"Arena prompt {i}", "helpful", api_name="/arena")
    elif step == "vote":
        client.predict("A" if i % 4 else "tie", api_name="/vote")
    elif step == "results":
        client.predict(api_name="/results")
    else:
        client.predict("all", "helpful", "all", api_name="/browse")


def _traffic(url: str, n: int, max_new: int, per_session: int, start: int = 0):
    """``n`` requests as visitors make them, cycling through STEPS; a new session every ``per_session`` requests."""
    from gradio_client import Client

    client = None
    for i in range(start, start + n):
        if client is None or i % per_session == 0:
            client = Client(url, verbose=False)
        _request(client, STEPS[i % len(STEPS)], i, max_new)
        yield i


@contextmanager
def served_demo(cache: str | Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                log: str | Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python space/app.py --demo`` on a free loopback port, as a visitor's server: (url, process) until the block
    ends, then stopped. Its output goes to ``log`` (default: a temporary file)."""
    port = _free_port()
    log = Path(log) if log else Path(tempfile.mkdtemp(prefix="hhalign-space-")) / "server.log"
    app = Path(__file__).resolve().parents[2] / "space" / "app.py"
    argv = [sys.executable, str(app), "--demo", "--cache_dir", str(cache), "--port", str(port), *args]
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ if env is None else env))
        try:
            deadline = time.time() + 120
            while "Running on" not in log.read_text():
                if proc.poll() is not None or time.time() > deadline:
                    raise HHAlignError(f"space/app.py --demo did not start: {log.read_text()[-1500:]}")
                time.sleep(0.5)
            yield f"http://127.0.0.1:{port}", proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def long_message(i: int, n_chars: int) -> str:
    """The ``i``-th message of the long visitor: ``n_chars`` characters of ordinary words, different every turn."""
    import random

    words = ("how should I water basil when the kitchen window gets the afternoon sun and the soil stays damp for "
             "days after I water it so the lower leaves turn yellow while new shoots look fine").split()
    rng = random.Random(i)
    text = f"Turn {i}:"
    while len(text) < n_chars:
        text += " " + rng.choice(words)
    return text[:n_chars]


def long_verdict(latencies: Sequence[float], rss: Sequence[int], warmup: int) -> dict:
    """Per-turn latencies (s) and RSS after each turn (bytes) summarised: growth after the first ``warmup`` turns
    (the largest RSS later minus the RSS then, MB) and the slowest turn after warm-up against the first turn."""
    if not latencies or len(latencies) != len(rss) or not 0 <= warmup < len(rss):
        raise HHAlignError("need one latency and one RSS sample per turn, and fewer warm-up turns than turns")
    base = rss[warmup - 1] if warmup else rss[0]
    later = rss[warmup:]
    ordered = sorted(latencies)
    tail = sorted(latencies[-10:])
    return {"first_turn_s": latencies[0], "median_turn_s": ordered[len(ordered) // 2], "max_turn_s": max(latencies),
            "median_last_10_s": tail[len(tail) // 2],
            "max_after_warmup_s": max(latencies[warmup:]),
            "slowest_vs_first": max(latencies[warmup:]) / latencies[0] if latencies[0] > 0 else float("inf"),
            "rss_after_warmup_mb": base / MB, "rss_max_mb": max(later) / MB, "rss_end_mb": rss[-1] / MB,
            "growth_after_warmup_mb": (max(later) - base) / MB}


def run_long_conversation(cfg: SoakConfig) -> dict:
    """One visitor's long conversation with one model: ``cfg.turns`` messages of ``cfg.message_chars`` characters
    in one session, the server's RSS and the request's latency taken after every turn. A short chat from another
    session loads the models first, so the first turn's latency is the conversation's, not the loading's."""
    if cfg.turns < 2 or cfg.message_chars < 1 or not 0 <= cfg.long_warmup < cfg.turns:
        raise HHAlignError("--turns must be at least 2, --message_chars positive and --long_warmup below --turns")
    from gradio_client import Client

    from ..stats.results import ensure_demo_results

    cache = Path(cfg.cache_dir) if cfg.cache_dir else ensure_demo_results(Path(tempfile.mkdtemp()) / "cache")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **dict(kv.split("=", 1) for kv in cfg.server_env)}
    tokens = str(max(cfg.max_new_tokens, 1))
    args = ["--max_new_tokens", tokens, "--default_new_tokens", tokens,
            "--max_input_chars", str(max(cfg.message_chars, 2000)), *cfg.server_args]
    latencies, rss, tokens_judged = [], [], []
    with served_demo(cache, args, env) as (url, proc):
        started = rss_bytes(proc.pid)
        Client(url, verbose=False).predict("Hello", "tiny", "helpful", True, cfg.max_new_tokens, 0.7, 0.9,
                                           api_name="/chat")
        loaded = rss_bytes(proc.pid)
        client = Client(url, verbose=False)
        for i in range(cfg.turns):
            t0 = time.perf_counter()
            _, details = client.predict(long_message(i, cfg.message_chars), "tiny", "helpful", True,
                                        cfg.max_new_tokens, 0.7, 0.9, api_name="/chat")
            latencies.append(time.perf_counter() - t0)
            rss.append(rss_bytes(proc.pid))
            tokens_judged.append(details.get("reward_tokens"))
    result = {"config": asdict(cfg), "started_mb": started / MB, "models_loaded_mb": loaded / MB,
              **long_verdict(latencies, rss, cfg.long_warmup), "latencies_s": latencies,
              "rss_mb": [b / MB for b in rss], "reward_tokens": tokens_judged, "load_average": os.getloadavg()}
    if cfg.out:
        from ..files import write_json

        write_json(cfg.out, result)
    return result


def run_soak(cfg: SoakConfig) -> dict:
    """Serve the demo, drive it, sample its RSS; the result holds the samples and the growth after warm-up."""
    if cfg.visitor == "long":
        return run_long_conversation(cfg)
    if cfg.requests < 1 or cfg.warmup < 0 or cfg.sample_every < 1 or cfg.per_session < 1:
        raise HHAlignError("--requests, --sample_every and --per_session must be positive, --warmup not negative")
    from ..stats.results import ensure_demo_results

    cache = Path(cfg.cache_dir) if cfg.cache_dir else ensure_demo_results(Path(tempfile.mkdtemp()) / "cache")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **dict(kv.split("=", 1) for kv in cfg.server_env)}
    tokens = str(max(cfg.max_new_tokens, 1))
    with served_demo(cache, ["--max_new_tokens", tokens, "--default_new_tokens", tokens, *cfg.server_args],
                     env) as (url, proc):
        started = rss_bytes(proc.pid)
        for _ in _traffic(url, cfg.warmup, cfg.max_new_tokens, cfg.per_session):
            pass
        samples = [(0, rss_bytes(proc.pid))]
        t0 = time.time()
        for i in _traffic(url, cfg.requests, cfg.max_new_tokens, cfg.per_session, start=cfg.warmup):
            done = i - cfg.warmup + 1
            if done % cfg.sample_every == 0:
                samples.append((done, rss_bytes(proc.pid)))
        seconds = time.time() - t0
        time.sleep(cfg.idle_seconds)
        idle = rss_bytes(proc.pid)
    ys = [s[1] for s in samples]
    result = {"config": asdict(cfg), "started_mb": started / MB, "after_warmup_mb": ys[0] / MB, "end_mb": ys[-1] / MB,
              "max_mb": max(ys) / MB, "idle_mb": idle / MB, "growth_mb_per_100": growth_per_100(samples) / MB,
              "second_half_growth_mb_per_100": growth_per_100(samples[len(samples) // 2:]) / MB,
              "requests_per_s": cfg.requests / seconds, "samples": [[n, b / MB] for n, b in samples],
              "load_average": os.getloadavg()}
    if cfg.out:
        from ..files import write_json

        write_json(cfg.out, result)
    return result


def main(cfg: SoakConfig) -> dict:
    """Soak the Space on loopback and report its memory: RSS after warm-up, at the end, after idling, and the growth
    per 100 requests.

    Usage:
        python batch/soak_space.py --requests 300 --warmup 60
        python batch/soak_space.py --requests 300 --server_env MALLOC_ARENA_MAX=2 --out soak.json
        python batch/soak_space.py --visitor long --turns 50 --message_chars 2000 --out long.json
    """
    r = run_soak(cfg)
    if cfg.visitor == "long":
        print(f"{cfg.turns} turns of {cfg.message_chars}-character messages: RSS {r['started_mb']:.0f} MB at start, "
              f"{r['models_loaded_mb']:.0f} MB with the models loaded, {r['rss_after_warmup_mb']:.0f} MB after "
              f"{cfg.long_warmup} turns, max {r['rss_max_mb']:.0f} MB, end {r['rss_end_mb']:.0f} MB (growth after "
              f"warm-up {r['growth_after_warmup_mb']:+.1f} MB); latency first turn {r['first_turn_s']:.2f} s, median "
              f"{r['median_turn_s']:.2f} s, median of the last 10 {r['median_last_10_s']:.2f} s, slowest after "
              f"warm-up {r['max_after_warmup_s']:.2f} s "
              f"({r['slowest_vs_first']:.2f}x the first); reward model read at most {max(r['reward_tokens'])} tokens")
        print(json.dumps({"latencies_s": [round(x, 3) for x in r["latencies_s"]],
                          "rss_mb": [round(x, 1) for x in r["rss_mb"]]}))
        return r
    print(f"RSS: start {r['started_mb']:.0f} MB, after {cfg.warmup} warm-up requests {r['after_warmup_mb']:.0f} MB, "
          f"after {cfg.requests} more {r['end_mb']:.0f} MB (max {r['max_mb']:.0f}), idle {r['idle_mb']:.0f} MB; "
          f"growth {r['growth_mb_per_100']:+.1f} MB per 100 requests ({r['second_half_growth_mb_per_100']:+.1f} over "
          f"the second half); {r['requests_per_s']:.1f} requests/s")
    print(json.dumps(r["samples"]))
    return r
