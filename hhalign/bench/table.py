"""The benchmark's result as a Markdown table: every system of a task against the study's loop, with the FLOP floor
and how far each system's answers are from one prompt (pair) at a time in float32."""

from __future__ import annotations

# What fast mode runs as, per format (hhalign.engine.precision.fast_format picks it per machine).
FAST_MODES = {
    "bfloat16": "the CPU or GPU multiplies bfloat16 natively; matrix products in bfloat16, layer norms, softmax and "
                "DeBERTa's attention in float32",
    "int8": "no bfloat16 arithmetic on this CPU (no AVX512-BF16 or AMX), so the linear layers run as PyTorch's "
            "dynamically quantized int8 (per-channel weights, activations quantized per call); attention, layer "
            "norms and softmax stay float32",
    "float32": "no faster number format on this hardware: fast mode is float32",
}


def rows(result: dict) -> list[dict]:
    """Every timed (or skipped) system as one row: hhalign's modes first, then the peers, generation then scoring."""
    g, s, fmt = result["generation"], result["scoring"], result["settings"]["fast_format"]
    engine = "vLLM" if result["settings"]["backend"] == "vllm" else "hhalign engine"
    out = [
        {"task": "generation", "system": "the study's loop", "format": "float32", "time_s": g["loop_s"],
         "identical": g["n"], "agreement": 1.0},
        {"task": "generation", "system": engine, "format": "float32", "time_s": g["fp32_s"],
         "identical": g["fp32_identical"], "agreement": g["fp32_token_agreement"]},
        {"task": "generation", "system": engine, "format": fmt, "time_s": g["fast_s"],
         "identical": g["fast_identical"], "agreement": g["fast_agreement"]},
        *[p for p in result.get("peers", []) if p["task"] == "generation"],
        {"task": "scoring", "system": "the study's loop", "format": "float32", "time_s": s["loop_s"],
         "max_abs_diff": 0.0, "max_diff_over_std": 0.0},
        {"task": "scoring", "system": "hhalign engine", "format": "float32", "time_s": s["fp32_s"],
         "max_abs_diff": s["fp32_max_abs_diff"], "max_diff_over_std": s["fp32_error"]["max_diff_over_std"]},
        {"task": "scoring", "system": "hhalign engine", "format": fmt, "time_s": s["fast_s"],
         "max_abs_diff": s["fast_max_abs_diff"], "max_diff_over_std": s["fast_error"]["max_diff_over_std"]},
        *[p for p in result.get("peers", []) if p["task"] == "scoring"],
    ]
    own = [r for r in out if "skipped" not in r]  # hhalign's six rows: the peers' rows all have the key
    for row, key in zip(own, ("loop", "fp32", "fast") * 2):
        row["rounds"] = result[row["task"]].get("rounds", {}).get(key)
    return out


def _equality(row: dict, n: int) -> str:
    if row["task"] == "generation":
        if row["identical"] == n and row["agreement"] == 1.0:
            return f"{n}/{n} token-identical"
        return f"{row['identical']}/{n} identical, {100 * row['agreement']:.1f}% of tokens agree"
    ratio = row.get("max_diff_over_std")
    spread = "" if ratio is None else f" ({ratio:.2g} x the rewards' std)"
    return f"max abs diff {row['max_abs_diff']:.1e}{spread}"


def _fmt_short(fmt: str) -> str:
    return {"float32": "fp32", "bfloat16": "bf16"}.get(fmt, fmt)


def format_table(result: dict) -> str:
    """The benchmark as Markdown: the machine and load, the workload, one row per system, the floor."""
    g, s, m, settings = result["generation"], result["scoring"], result["machine"], result["settings"]
    floor = result["floor_s"] if result["floor_s"].get("generation_fp32") is not None else None
    family = f" (vendor {m['vendor']}, family {m['family']}, model {m['model']})" if m.get("family") else ""
    where = m["gpu"] or f"{m['cpu']}{family}, {m['cpus']} CPUs ({', '.join(m['simd']) or 'no AVX'})"
    kernels = "; ".join(f"{_fmt_short(k)} linear kernels chosen at start-up: {v['chosen']['many']} (many rows), "
                        f"{v['chosen']['few']} (few rows)" for k, v in (m.get("kernels") or {}).items())
    loads = f"{m['load_average'][0]} before, {m['load_average_end'][0]} after"
    lines = [
        f"Machine: {where}; {m['threads']} torch threads; torch {m['torch']}; 1-minute load average {loads} (the "
        f"benchmark itself adds about its {m['threads']} threads)" + (f". {kernels}." if kernels else "."),
        f"Generation: {g['n']} prompts ({g['prompt_tokens']} tokens) x {g['max_new_tokens']} new tokens, greedy; "
        f"scoring: {s['n']} (prompt, answer) pairs ({s['tokens']} tokens); {settings['models']}. Prompts: "
        f"{settings['prompt_source']}. Best of {settings['repeat']} interleaved round(s); each system's first call "
        f"(warm-up) is not timed.",
        "",
    ]
    many = settings["repeat"] > 1
    why = FAST_MODES.get(settings["fast_format"], "")
    lines += [f"Fast mode here: {settings['fast_format']}" + (f" ({why})" if why else "") + ".", ""]
    header = ["task", "system", "format", "time (s)", *(["mean ± sd (s)", "vs loop per round"] if many else []),
              "vs loop", *(["x floor"] if floor else []), "equality"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" if h in ("task", "system", "format", "equality")
                                                          else "---:" for h in header) + "|"]
    for row in rows(result):
        loop = g["loop_s"] if row["task"] == "generation" else s["loop_s"]
        n = g["n"] if row["task"] == "generation" else s["n"]
        label = [row["task"], row["system"], _fmt_short(row["format"])]
        if row.get("skipped"):
            lines.append("| " + " | ".join(label + ["-", "-", *(["-", "-"] if many else []), *(["-"] if floor else []),
                                                    "skipped: " + row["skipped"]]) + " |")
            continue
        secs = row["time_s"]
        cells = [f"{secs:.3g}"]
        if many:
            r = row["rounds"]
            ratios = r["vs_loop_rounds"]
            cells += [f"{r['mean_s']:.3g} ± {r['sd_s']:.2g}", f"{min(ratios):.2f}-{max(ratios):.2f}x"]
        cells.append(f"{loop / secs:.2f}x")
        if floor:
            cells.append(f"{secs / _floor(result, row):.1f}x")
        lines.append("| " + " | ".join(label + cells + [_equality(row, n)]) + " |")
    if settings.get("wall_s"):
        shape = settings.get("policy_shape", "opt-350m")
        lines += ["", f"This run took {settings['wall_s']:.0f} s. Rerun: python batch/bench.py "
                  + (f"--policy_shape {shape} " if shape != "opt-350m" else "") + "[--peers] [--repeat 2] "
                  "[--n 16] [--json FILE] (the peers: pip install \"hhalign[bench]\"; vLLM on a CUDA machine)."]
    if floor:
        f = {**result["floor_s"], **result["flops"]}
        rates = ", ".join(f"{_fmt_short(k)} {v:.0f}" for k, v in result["flops"]["matmul_gflops"].items())
        lines += ["", f"FLOP floor: generation {f['generation_tflop']:.2f} TFLOP, scoring {f['scoring_tflop']:.2f} "
                  f"TFLOP at the best measured matmul rate per format (GFLOP/s: {rates}); 'x floor' = time / floor."]
    roof = result.get("roofline")
    if roof:
        lines += [f"Roofline floor of float32 generation: the prompt pass at the matmul rate "
                  f"({roof['prefill_s']:.2f} s) "
                  f"+ decoding at the slower of its arithmetic ({roof['decode_flop_s']:.2f} s) and its memory reads "
                  f"(every weight once per step and each answer's float32 key/value cache once per token: "
                  f"{roof['decode_gb']:.1f} GB at {roof['bandwidth_gbps']:.0f} GB/s, a 1 GiB copy's rate: "
                  f"{roof['decode_read_s']:.2f} s) = {roof['generation_fp32_s']:.2f} s; the engine's float32 "
                  f"generation takes {roof['fp32_x_roofline']:.1f}x that."]
    return "\n".join(lines)


def _floor(result: dict, row: dict) -> float:
    flops = result["flops"]
    work = flops["generation_tflop"] if row["task"] == "generation" else flops["scoring_tflop"]
    return work * 1e12 / (flops["matmul_gflops"][row["format"]] * 1e9)
