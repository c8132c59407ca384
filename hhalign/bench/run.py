"""Benchmark machinery behind ``batch/bench.py``: the study's loop against hhalign's engines (and, with ``--peers``,
the systems a user would pick instead) on the real architectures, offline.

Three modes per task on the same prompts: the study's loop (one prompt or pair per call, float32), the engine in
float32, and the engine in the hardware's fastest number format (:func:`hhalign.engine.precision.fast_format`).
Every system of a task runs once per round, in turn; each keeps its fastest round. The FLOP floor is the workload's
arithmetic at the machine's best measured matrix-multiply rate for the row's number format; for float32 generation a
roofline floor adds what decoding must read from memory at the measured copy bandwidth. The models and prompts
are described in :mod:`.models`, the peers in :mod:`.peers`, the table in :mod:`.table`.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..files import cache_dir, write_json
from .config import BenchConfig
from .measure import (
    agreement,
    decode_bytes,
    generation_flops,
    interleaved,
    load_average,
    machine_info,
    matmul_rate,
    memory_bandwidth,
    reward_error,
    scoring_flops,
    spread,
    timed,
)
from .models import StandIns, bench_prompts, stand_ins
from .peers import Peer, Skipped, generation_peers, scoring_peers
from .table import format_table

logger = logging.getLogger(__name__)

WARMUP = ("excluded: every system ran once on the shortest prompt (pair) before the timed rounds, so kernel choice, "
          "weight prepacking, the packed scorer's build and peers' sessions are not in the times; warmup_s per system "
          "says what that first call took")

__all__ = ["BenchConfig", "format_table", "main", "run"]


def run(cfg: BenchConfig) -> dict:
    """Run the benchmark as configured; returns the table (the ``--json`` layout)."""
    import torch

    from ..engine.precision import fast_format
    from ..loading import resolve_device

    device = resolve_device(cfg.device)
    fmt = fast_format(device) if cfg.fast == "auto" else cfg.fast
    machine = machine_info(device, torch.get_num_threads())
    prompts, sample = bench_prompts(cfg.n, cfg.dataset, cfg.prompts, cfg.sample, cfg.sample_seed)
    prompt_source = sample["description"]
    if device == "cpu":
        machine["kernels"] = _kernels(fmt)
    start = time.perf_counter()
    models = stand_ins(cfg.tiny, cfg.dataset, cfg.seed, cfg.policy_shape)
    logger.info(f"{models.description} ({time.perf_counter() - start:.0f} s) on {device}; {len(prompts)} prompts: "
                f"{prompt_source}; fast mode: {fmt}")
    formats = ["float32", fmt] + (["int8"] if cfg.peers and device == "cpu" and fmt != "int8" else [])
    # The matmul rate before and after the timings; the better one sets the floor (an optimistic bound).
    rates = {} if cfg.tiny else {f: matmul_rate(f, device) for f in dict.fromkeys(formats)}
    cache = cache_dir("bench", cfg.peer_cache)
    generation, responses, peers = _bench_generation(cfg, device, fmt, models, prompts, cache)
    scoring, score_peers = _bench_scoring(cfg, device, fmt, models, prompts, responses, cache)
    gen_flops, score_flops = generation.pop("flops"), scoring.pop("flops")
    prefill_flops, read_bytes = generation.pop("prefill_flops"), generation.pop("decode_bytes")
    if rates:
        rates = {f: max(r, matmul_rate(f, device)) for f, r in rates.items()}
    bandwidth = None if cfg.tiny else memory_bandwidth(device)
    machine["load_average_end"] = load_average()
    gflops = {f: r / 1e9 for f, r in rates.items()}
    result = {
        "generation": generation,
        "scoring": scoring,
        "floor_s": {
            "generation_fp32": gen_flops / rates["float32"] if rates else None,
            "generation_fast": gen_flops / rates[fmt] if rates else None,
            "scoring_fp32": score_flops / rates["float32"] if rates else None,
            "scoring_fast": score_flops / rates[fmt] if rates else None,
        },
        "flops": {"generation_tflop": gen_flops / 1e12, "scoring_tflop": score_flops / 1e12,
                  "matmul_gflops_fp32": gflops.get("float32"), "matmul_gflops_fast": gflops.get(fmt),
                  "matmul_gflops": gflops},
        "roofline": _roofline(prefill_flops, gen_flops - prefill_flops, read_bytes, rates.get("float32"), bandwidth,
                              generation["fp32_s"]),
        "machine": machine,
        "settings": {**{k: v for k, v in asdict(cfg).items() if k != "json"}, "fast_format": fmt,
                     "prompt_source": prompt_source, "prompt_sample": sample, "models": models.description,
                     "warmup": WARMUP},
        "peers": peers + score_peers,
    }
    for row in result["peers"]:
        if row["time_s"] is not None:
            loop = result[row["task"]]["loop_s"]
            row["vs_loop"] = loop / row["time_s"]
            work = gen_flops if row["task"] == "generation" else score_flops
            row["x_floor"] = row["time_s"] / (work / rates[row["format"]]) if row["format"] in rates else None
    return result


def _prepare(peers: list[Peer], task: str) -> tuple[dict[str, Any], list[dict]]:
    """Each peer ready to time (name -> callable), and a row per peer (skipped ones say why)."""
    ready, rows = {}, []
    for peer in peers:
        name = f"{peer.label}, {peer.fmt}"
        row = {"task": task, "system": peer.label, "format": peer.fmt, "time_s": None, "vs_loop": None,
               "x_floor": None, "setup_s": None, "skipped": None}
        start = time.perf_counter()
        try:
            ready[name] = peer.prepare()
        except Skipped as exc:
            row["skipped"] = str(exc)
            logger.info(f"  {name}: skipped ({exc})")
        except Exception as exc:  # noqa: BLE001 - a peer's failed conversion is a row of the table, not a crash
            row["skipped"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            logger.warning(f"  {name}: {row['skipped']}")
        row["setup_s"] = time.perf_counter() - start
        rows.append(row)
    return ready, rows


def _time_all(systems: dict[str, Any], peers: dict[str, Any], rows: list[dict], cfg: BenchConfig, device: str,
              warm: list[int], everything: list[int]) -> tuple[dict[str, Any], dict[str, float], dict[str, dict]]:
    """Warm every system up on a short input (one-time costs such as allocator growth, kernel selection, weight
    prepacking and sessions land outside the timings; their seconds are reported as ``warmup_s``), then time them
    all in interleaved rounds. A peer that fails its warm-up is listed as failed, not timed. Returns the outputs,
    the best times and each system's rounds (:func:`.measure.spread`)."""
    warmup: dict[str, float] = {}
    for name, fn in systems.items():
        warmup[name] = timed(lambda fn=fn: fn(warm))[1]
    for name, fn in list(peers.items()):
        try:
            warmup[name] = timed(lambda fn=fn: fn(warm))[1]
        except Exception as exc:  # noqa: BLE001 - another project's failure is a row of the table, not a crash
            del peers[name]
            row = next(r for r in rows if f"{r['system']}, {r['format']}" == name)
            row["skipped"] = f"failed: {str(exc).splitlines()[0][:120]}"
            logger.warning(f"  {name}: {row['skipped']}")
    times: dict[str, list[float]] = {}
    out, secs = interleaved({name: (lambda fn=fn: fn(everything)) for name, fn in {**systems, **peers}.items()},
                            cfg.repeat, device, times)
    rounds = {name: {**spread(t), "warmup_s": warmup[name]} for name, t in times.items()}
    for name, r in rounds.items():
        # Against the loop of the same round: a load burst slows one round, not one system.
        r["vs_loop_rounds"] = [a / b for a, b in zip(times["loop"], times[name])]
    for row in rows:
        name = f"{row['system']}, {row['format']}"
        if name in secs:
            row["time_s"] = secs[name]
            row["rounds"] = rounds[name]
    return out, secs, rounds


def _bench_generation(cfg: BenchConfig, device: str, fmt: str, models: StandIns, prompts: list[str],
                      cache: Path) -> tuple[dict, list[str], list[dict]]:
    from ..engine import encode_prompts, postprocess
    from ..engine.batched import greedy_ids
    from ..engine.hf import loop_ids
    from ..engine.precision import to_fast

    policy, tokenizer = models.policy.to(device), models.policy_tokenizer
    ids = [e[0] for e in encode_prompts(tokenizer, prompts,
                                        policy.config.max_position_embeddings - cfg.max_new_tokens)]
    eos, pad, new = tokenizer.eos_token_id, tokenizer.pad_token_id, cfg.max_new_tokens

    def engine(model: Any) -> Any:
        return lambda rows: greedy_ids(model, [ids[i] for i in rows], new, eos, pad, cfg.batch_size, cfg.token_budget)

    systems: dict[str, Any] = {"loop": lambda rows: loop_ids(policy, tokenizer, [ids[i] for i in rows], new)}
    if cfg.backend == "vllm":
        vllm = {p.fmt: p for p in generation_peers(policy, tokenizer, ids, new, cfg.batch_size, device, cache)
                if p.label == "vLLM"}
        try:
            systems.update(fp32=vllm["float32"].prepare(), fast=vllm["bfloat16" if fmt == "bfloat16" else
                                                                    "float32"].prepare())
        except (Skipped, KeyError) as exc:
            from ..errors import HHAlignError

            raise HHAlignError(f"--backend vllm: {exc}; use --backend engine") from None
    else:
        fast_policy = to_fast(copy.deepcopy(policy), device, fmt)[0]
        systems.update(fp32=engine(policy), fast=engine(fast_policy))
    peers = generation_peers(policy, tokenizer, ids, new, cfg.batch_size, device, cache) if cfg.peers else []
    ready, rows = _prepare([p for p in peers if cfg.backend != "vllm" or p.label != "vLLM"], "generation")
    shortest = min(range(len(ids)), key=lambda i: len(ids[i]))
    logger.info(f"generation: the study's loop, the engine in float32 and {fmt}"
                + (f", {len(ready)} peers" if cfg.peers else "") + " ...")
    out, secs, rounds = _time_all(systems, ready, rows, cfg, device, [shortest], list(range(len(ids))))
    loop_new = out["loop"]
    for row in rows:
        if row["time_s"] is not None:
            row["identical"], row["agreement"] = agreement(loop_new, out[f"{row['system']}, {row['format']}"])
    fp32_same, fp32_share = agreement(loop_new, out["fp32"])
    fast_same, fast_share = agreement(loop_new, out["fast"])
    result = {
        "n": len(ids), "max_new_tokens": new, "prompt_tokens": sum(len(i) for i in ids),
        "new_tokens": sum(len(x) for x in loop_new), "loop_s": secs["loop"], "fp32_s": secs["fp32"],
        "fast_s": secs["fast"], "fp32_ratio": secs["loop"] / secs["fp32"], "fast_ratio": secs["loop"] / secs["fast"],
        "fp32_identical": fp32_same, "fp32_token_agreement": fp32_share,
        "fast_identical": fast_same, "fast_agreement": fast_share,
        "flops": generation_flops(policy, [len(i) for i in ids], [len(x) for x in loop_new], new),
        "prefill_flops": generation_flops(policy, [len(i) for i in ids], [1] * len(ids), 1),
        "decode_bytes": decode_bytes(policy, [len(i) for i in ids], [len(x) for x in loop_new], new),
        "rounds": {k: rounds[k] for k in ("loop", "fp32", "fast")},
    }
    responses = [postprocess(tokenizer.decode(x, skip_special_tokens=True)) for x in out["fp32"]]
    models.policy = policy.to("cpu")
    return result, responses, rows


def _bench_scoring(cfg: BenchConfig, device: str, fmt: str, models: StandIns, prompts: list[str],
                   responses: list[str], cache: Path) -> tuple[dict, list[dict]]:
    """Each prompt with its float32 answer, scored by the study's loop, the engine in both formats, and the peers."""
    from ..engine.precision import to_fast
    from ..engine.reward import score

    reward, tokenizer = models.reward.to(device), models.reward_tokenizer
    lengths = [len(x) for x in tokenizer(prompts, responses)["input_ids"]]

    def scorer(model: Any, engine: str = "engine") -> Any:
        return lambda rows: [s.reward for s in score(model, tokenizer, [prompts[i] for i in rows],
                                                     [responses[i] for i in rows], cfg.reward_batch_size,
                                                     engine=engine, token_budget=cfg.reward_token_budget)]

    fast_reward = to_fast(copy.deepcopy(reward), device, fmt)[0]
    systems = {"loop": scorer(reward, "loop"), "fp32": scorer(reward), "fast": scorer(fast_reward)}
    peers = scoring_peers(reward, tokenizer, prompts, responses, cfg.reward_batch_size, device, cache) \
        if cfg.peers else []
    ready, rows = _prepare(peers, "scoring")
    logger.info(f"scoring: the study's loop, the engine in float32 and {fmt}"
                + (f", {len(ready)} peers" if cfg.peers else "") + " ...")
    shortest = min(range(len(prompts)), key=lambda i: lengths[i])
    out, secs, rounds = _time_all(systems, ready, rows, cfg, device, [shortest], list(range(len(prompts))))
    loop = out["loop"]
    for row in rows:
        if row["time_s"] is not None:
            row.update(reward_error(loop, out[f"{row['system']}, {row['format']}"]))
    fp32_error, fast_error = reward_error(loop, out["fp32"]), reward_error(loop, out["fast"])
    return {
        "n": len(prompts), "tokens": sum(lengths), "loop_s": secs["loop"], "fp32_s": secs["fp32"],
        "fast_s": secs["fast"], "fp32_ratio": secs["loop"] / secs["fp32"], "fast_ratio": secs["loop"] / secs["fast"],
        "fp32_max_abs_diff": fp32_error["max_abs_diff"], "fast_max_abs_diff": fast_error["max_abs_diff"],
        "reward_std": fp32_error["reward_std"], "fp32_error": fp32_error, "fast_error": fast_error,
        "flops": scoring_flops(reward, lengths), "rounds": {k: rounds[k] for k in ("loop", "fp32", "fast")},
    }, rows


def _kernels(fmt: str) -> dict:
    """The linear kernels the engines picked at start-up on this CPU (float32 and the fast format where it is a
    float format) and the one-thread GFLOP/s each candidate reached when they were timed."""
    from ..engine.kernels import KERNEL_RATES, measured_kernels

    out = {}
    for name in dict.fromkeys(["float32"] + ([fmt] if fmt == "bfloat16" else [])):
        chosen = measured_kernels(name)
        out[name] = {"chosen": chosen, "gflops_one_thread": KERNEL_RATES.get(name)}
    return out


def _roofline(prefill_flops: float, decode_flops: float, read_bytes: float, rate: float | None,
              bandwidth: float | None, fp32_s: float) -> dict | None:
    """float32 generation's roofline floor: the prompt pass at the matmul rate, then decoding at the slower of its
    arithmetic and its memory reads. None without measured rates (--tiny)."""
    if not rate or not bandwidth:
        return None
    prefill_s, decode_flop_s, decode_read_s = prefill_flops / rate, decode_flops / rate, read_bytes / bandwidth
    floor = prefill_s + max(decode_flop_s, decode_read_s)
    return {"prefill_s": prefill_s, "decode_flop_s": decode_flop_s, "decode_read_s": decode_read_s,
            "decode_gb": read_bytes / 1e9, "bandwidth_gbps": bandwidth / 1e9, "generation_fp32_s": floor,
            "fp32_x_roofline": fp32_s / floor}


def main(cfg: BenchConfig) -> dict:
    """Time the study's loop against hhalign's engines (and peers) on OPT-350M and DeBERTa-v3-large built offline
    (random weights).

    Usage:
        hhalign bench                                   # the default table (8 prompts, one round)
        hhalign bench --peers --repeat 2 --json results/bench.json
        hhalign bench --tiny --n 4                      # a smoke test in seconds (not a measurement)
    """
    start = time.perf_counter()
    result = run(cfg)
    result["settings"]["wall_s"] = time.perf_counter() - start
    print(format_table(result))
    if cfg.json:
        path = Path(cfg.json).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, result)
        logger.info(f"wrote {path}")
    return result

