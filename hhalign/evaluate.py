"""The evaluation run behind ``batch/eval.py``: prompts -> generations -> rewards -> metrics, plots, report.

Every stage appends its records as it goes, so a killed run resumes where it stopped when started again with the
same ``--out``; a run with different settings is refused rather than mixed into the same folder.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from . import data as hdata
from .errors import HHAlignError
from .generation import MODE_GUARANTEES, apply_mode, engine_for
from .metrics import DEFAULT_BOOTSTRAP, HARMLESS_THRESHOLD, HELPFUL_THRESHOLD, Thresholds, label, summarize
from .models import DEFAULT_REWARD_MODEL, ModelRef, parse_model_refs
from .records import JsonlWriter, load_records, read_jsonl, write_json, write_jsonl
from .registry import published_models

PACKAGES = ("hhalign", "torch", "transformers", "tokenizers", "peft", "trl", "datasets", "huggingface_hub",
            "accelerate", "numpy", "matplotlib")
FILES = {
    "prompts": "prompts.jsonl",
    "generations": "generations.jsonl",
    "responses": "responses.jsonl",
    "metrics": "metrics.json",
    "report": "report.md",
    "run": "run.json",
}


@dataclass
class EvalConfig:
    """Options of ``batch/eval.py``; every field is a CLI flag (``--field_name`` or ``--field-name``)."""

    models: list[str] = field(default_factory=published_models, metadata={
        "help": "Models to evaluate: Hub ids (id@revision), local folders or PEFT adapters, optionally named "
                "name=ref, e.g. base=facebook/opt-350m sft=org/opt-350m-hh-sft. Default: the published models of "
                "the registry (models.md)."})
    reward_model: str = field(default=DEFAULT_REWARD_MODEL, metadata={
        "help": "Reward model (one-logit sequence classifier) scoring (prompt, response) pairs."})
    dataset: str = field(default=hdata.DEFAULT_DATASET, metadata={
        "help": "HH-RLHF Hub id or a local folder with the same layout (e.g. ../shared/data/hh-rlhf)."})
    split: str = field(default="test", metadata={"help": "Dataset split the prompts come from."})
    prompt_set: str = field(default="paper", metadata={
        "help": "paper (the study's 100 prompts), harmful-all, sample (N seeded per category), demo, or a JSONL "
                "file with category and prompt."})
    n_per_category: int = field(default=50, metadata={"help": "Prompts per category for --prompt_set sample."})
    seed: int = field(default=hdata.PAPER_SEED, metadata={"help": "Seed of the prompt sampling (the study: 100)."})
    limit: int | None = field(default=None, metadata={"help": "Keep only the first N prompts of each category."})
    protocol: str = field(default="paper", metadata={
        "help": "paper: the prompt as is (the study); chat: prompt + assistant cue, reply cut at the next "
                "Human turn."})
    max_new_tokens: int = field(default=50, metadata={"help": "Greedy decoding length limit (the study: 50)."})
    batch_size: int = field(default=32, metadata={
        "help": "Most prompts decoded together (one decode batch reads the weights once per token for all of them)."})
    reward_batch_size: int | None = field(default=None, metadata={
        "help": "Pairs per reward-model batch (default: --batch_size)."})
    reward_max_length: int | None = field(default=None, metadata={
        "help": "Truncate (prompt, response) pairs to this many reward-model tokens. Default: none, as in the "
                "study; pairs over 512 tokens are counted in metrics.json."})
    dtype: str = field(default="float32", metadata={"help": "auto, float32, bfloat16 or float16."})
    mode: str = field(default="fp32", metadata={
        "help": "fp32: hhalign's batched engine in float32, the same answers as one prompt at a time and rewards "
                "within 1e-4; exact: the study's loop, one prompt and one pair per call (several times slower); fast: "
                "the hardware's fastest number format (bfloat16 on GPUs and CPUs with AVX512-BF16/AMX, else int8 on "
                "x86 CPUs), faster but answers and rewards may differ (batch/bench.py measures by how much)."})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu, cuda or cuda:N."})
    harmless_threshold: float = field(default=HARMLESS_THRESHOLD, metadata={
        "help": "A response to a harmful prompt is harmless when reward >= this."})
    helpful_threshold: float = field(default=HELPFUL_THRESHOLD, metadata={
        "help": "A response to a helpful prompt is helpful when reward > this."})
    n_bootstrap: int = field(default=DEFAULT_BOOTSTRAP, metadata={"help": "Bootstrap resamples for the 95% CIs."})
    out: str = field(default="results/eval", metadata={"help": "Output folder (created; reused to resume)."})
    prompts_only: bool = field(default=False, metadata={"help": "Write prompts.jsonl and stop."})
    from_responses: list[str] = field(default_factory=list, metadata={
        "help": "Compute metrics, plots and report from existing records (JSONL/JSON with model, category, prompt, "
                "response, reward) or the study's published folder; loads no model."})
    demo: bool = field(default=False, metadata={
        "help": "Offline demo: tiny untrained models built on the spot and the project's own prompts."})
    plots: bool = field(default=True, metadata={"help": "Write PNG plots."})
    untrained_models: bool = field(default=False, metadata={
        "help": "Label the outputs as a demo of tiny untrained models (set by --demo and the training demo)."})

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.harmless_threshold, self.helpful_threshold)


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def prepare_out(out: str | Path) -> Path:
    """Create the output folder and prove it is writable before any work is done."""
    path = Path(out).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise HHAlignError(f"--out {str(out)!r} is not writable ({exc.strerror}): choose another folder") from None
    return path


def prompts_digest(prompts: list[hdata.EvalPrompt]) -> str:
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(json.dumps(p.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()


def run_fingerprint(cfg: EvalConfig, prompts: list[hdata.EvalPrompt], device: str) -> dict:
    """The settings that change records; a folder's records may only be extended under the same fingerprint."""
    return {
        "prompts_sha256": prompts_digest(prompts),
        "protocol": cfg.protocol,
        "max_new_tokens": cfg.max_new_tokens,
        "reward_model": cfg.reward_model,
        "reward_max_length": cfg.reward_max_length,
        "dtype": cfg.dtype,
        # fp32 is how every run before --mode existed was made: left out so such folders still resume.
        **({"mode": cfg.mode} if cfg.mode != "fp32" else {}),
        "device_type": device.split(":")[0],
        "batch_size": cfg.batch_size,
        "reward_batch_size": cfg.reward_batch_size or cfg.batch_size,
    }


def check_resume(out: Path, fingerprint: dict, refs: list[ModelRef]) -> dict:
    """Refuse to mix settings or to reuse a model name for another reference; return the saved run state."""
    path = out / FILES["run"]
    state = json.loads(path.read_text()) if path.exists() else {"fingerprint": fingerprint, "models": {}}
    old = state["fingerprint"]
    changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed)
        raise HHAlignError(f"--out {str(out)!r} holds a run with other settings ({detail}); use a new --out folder "
                           "or the same settings to resume")
    for ref in refs:
        saved = state["models"].get(ref.name)
        if saved is not None and saved != str(ref):
            raise HHAlignError(f"--out {str(out)!r} already has model {ref.name!r} = {saved!r}, not {str(ref)!r}; "
                               "give this model another name or use a new --out folder")
        state["models"][ref.name] = str(ref)
    write_json(path, state)
    return state


def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="prompt", dynamic_ncols=True, leave=True)


def demo_setup(cfg: EvalConfig, out: Path) -> EvalConfig:
    """Point the config at tiny models built under ``out/models`` and the project's demo prompts."""
    from .tiny import build_tiny, build_tiny_adapter

    tiny = build_tiny(out / "models")
    adapter = build_tiny_adapter(tiny.policy, out / "models" / "policy-lora")
    return EvalConfig(**{**asdict(cfg), "models": [f"tiny={tiny.policy}", f"tiny_lora={adapter}"],
                         "reward_model": str(tiny.reward), "prompt_set": "demo", "dataset": "",
                         "n_bootstrap": min(cfg.n_bootstrap, 2000)})


def load_prompts(cfg: EvalConfig) -> list[hdata.EvalPrompt]:
    prompts = hdata.build_prompt_set(cfg.prompt_set, cfg.dataset, cfg.split, cfg.n_per_category, cfg.seed)
    prompts = hdata.limit_prompts(prompts, cfg.limit)
    if not prompts:
        raise HHAlignError(f"prompt set {cfg.prompt_set!r} is empty after filtering; check --prompt_set and --limit")
    return prompts


def write_prompts(out: Path, prompts: list[hdata.EvalPrompt]) -> Path:
    path = out / FILES["prompts"]
    write_jsonl(path, (p.to_dict() for p in prompts))
    return path


def run(cfg: EvalConfig, log: Callable[[str], None] = print) -> dict:
    """Run an evaluation as configured; returns the metrics mapping written to ``metrics.json``."""
    if cfg.limit is not None and cfg.limit <= 0:
        raise HHAlignError(f"--limit must be a positive number of prompts per category, got {cfg.limit}")
    engine_for(cfg.mode)  # refuses an unknown --mode before any work
    if cfg.mode == "fast" and cfg.dtype != "float32":
        raise HHAlignError(f"--mode fast picks the number format itself; drop --dtype {cfg.dtype} or use --mode fp32")
    out = prepare_out(cfg.out)
    if cfg.from_responses:
        records = [r for path in cfg.from_responses for r in load_records(path)]
        if cfg.limit is not None:
            seen: dict[tuple[str, str], int] = {}
            for r in records:
                seen[(r["model"], r["category"])] = seen.get((r["model"], r["category"]), 0) + 1
                r["_keep"] = seen[(r["model"], r["category"])] <= cfg.limit
            records = [{k: v for k, v in r.items() if k != "_keep"} for r in records if r["_keep"]]
        settings = {"source": "from_responses", "files": [str(Path(p).resolve()) for p in cfg.from_responses]}
        return finish(cfg, out, records, settings, log)
    if cfg.demo:
        log("demo: tiny untrained models built offline; their scores are meaningless (this shows the pipeline only)")
        cfg = demo_setup(cfg, out)
    prompts = load_prompts(cfg)
    write_prompts(out, prompts)
    log(f"wrote {len(prompts)} prompts to {out / FILES['prompts']}")
    if cfg.prompts_only:
        return {}
    from .models import resolve_device

    refs = parse_model_refs(cfg.models)
    device = resolve_device(cfg.device)
    fingerprint = run_fingerprint(cfg, prompts, device)
    check_resume(out, fingerprint, refs)
    model_info = generate_all(cfg, out, prompts, refs, device, log)
    reward_info = score_all(cfg, out, prompts, refs, device, log)
    wanted = {r.name for r in refs}
    ids = {p.prompt_id for p in prompts}
    records = [r for r in read_jsonl(out / FILES["responses"]) if r["model"] in wanted and r["prompt_id"] in ids]
    order = {r.name: i for i, r in enumerate(refs)}
    records.sort(key=lambda r: order[r["model"]])
    settings = {
        "source": "generated",
        "demo": cfg.demo or cfg.untrained_models,
        "models": model_info,
        "reward_model": reward_info,
        "prompt_set": {"name": cfg.prompt_set, "dataset": cfg.dataset, "split": cfg.split, "seed": cfg.seed,
                       "limit": cfg.limit, "n": len(prompts), "sha256": fingerprint["prompts_sha256"]},
        "protocol": cfg.protocol,
        "decoding": {"strategy": "greedy", "do_sample": False, "num_beams": 1, "max_new_tokens": cfg.max_new_tokens},
        "truncation": truncation_stats(records, cfg),
        "dtype": cfg.dtype,
        "mode": {"name": cfg.mode, "guarantee": MODE_GUARANTEES[cfg.mode]},
        "device": device,
        "batch_size": cfg.batch_size,
        "reward_batch_size": cfg.reward_batch_size or cfg.batch_size,
    }
    return finish(cfg, out, records, settings, log)


def generate_all(cfg: EvalConfig, out: Path, prompts: list[hdata.EvalPrompt], refs: list[ModelRef], device: str,
                 log: Callable[[str], None]) -> dict:
    """Generate the missing responses of every model, appending each batch to generations.jsonl."""
    from .models import load_policy

    gen_path = out / FILES["generations"]
    done = {(r["model"], r["prompt_id"]): r for r in read_jsonl(gen_path)}
    info: dict = {}
    with JsonlWriter(gen_path) as writer:
        for ref in refs:
            todo = [p for p in prompts if (ref.name, p.prompt_id) not in done]
            previous = next((r for (m, _), r in done.items() if m == ref.name), None)
            if not todo:
                info[ref.name] = previous["model_info"] if previous else {"name": ref.name, "ref": ref.ref}
                log(f"{ref.name}: all {len(prompts)} responses already generated")
                continue
            loaded = load_policy(ref, device=device, dtype=cfg.dtype)
            loaded.model, engine = apply_mode(loaded.model, cfg.mode, device)
            loaded.info["engine"] = engine
            info[ref.name] = loaded.info
            with _bar(len(todo), f"generate {ref.name}") as bar:
                generate_in_chunks(loaded, todo, cfg, _saver(writer, done, ref, loaded.info), bar)
            del loaded
    return info


def _saver(writer: JsonlWriter, done: dict, ref: ModelRef, model_info: dict) -> Callable:
    """A callback that appends one chunk of generations and marks them done."""

    def save(batch_prompts: list[hdata.EvalPrompt], gens: list) -> None:
        rows = [{"model": ref.name, "model_ref": str(ref), "revision": model_info["revision"], **p.to_dict(),
                 "response": g.response, "n_prompt_tokens": g.n_prompt_tokens, "n_new_tokens": g.n_new_tokens,
                 "prompt_truncated": g.prompt_truncated, "model_info": model_info}
                for p, g in zip(batch_prompts, gens)]
        writer.write_many(rows)
        done.update({(r["model"], r["prompt_id"]): r for r in rows})

    return save


def generate_in_chunks(loaded, todo: list[hdata.EvalPrompt], cfg: EvalConfig, save, bar) -> None:
    """Generate in length-sorted chunks of a few batches, saving each chunk before starting the next."""
    from .generation import generate, model_input

    lengths = [len(model_input(p.prompt, cfg.protocol)) for p in todo]
    order = sorted(range(len(todo)), key=lambda i: -lengths[i])
    chunk = cfg.batch_size * 4
    for start in range(0, len(order), chunk):
        part = [todo[i] for i in order[start : start + chunk]]
        gens = generate(loaded.model, loaded.tokenizer, [p.prompt for p in part], cfg.protocol, cfg.max_new_tokens,
                        cfg.batch_size, progress=bar, engine=engine_for(cfg.mode))
        save(part, gens)


def score_all(cfg: EvalConfig, out: Path, prompts: list[hdata.EvalPrompt], refs: list[ModelRef], device: str,
              log: Callable[[str], None]) -> dict:
    """Score every generated response that has no reward yet, appending each chunk to responses.jsonl."""
    from .models import load_reward_model
    from .reward import TRAINED_LENGTH, score

    resp_path = out / FILES["responses"]
    scored = {(r["model"], r["prompt_id"]) for r in read_jsonl(resp_path)}
    wanted = {r.name for r in refs}
    ids = {p.prompt_id for p in prompts}
    todo = [g for g in read_jsonl(out / FILES["generations"])
            if g["model"] in wanted and g["prompt_id"] in ids and (g["model"], g["prompt_id"]) not in scored]
    state_path = out / FILES["run"]
    state = json.loads(state_path.read_text())
    if not todo:
        log("all responses already scored")
        return state.get("reward_info", {"ref": cfg.reward_model})
    loaded = load_reward_model(cfg.reward_model, device=device, dtype=cfg.dtype)
    loaded.model, loaded.info["engine"] = apply_mode(loaded.model, cfg.mode, device)
    state["reward_info"] = loaded.info
    write_json(state_path, state)
    batch_size = cfg.reward_batch_size or cfg.batch_size
    thresholds = cfg.thresholds
    chunk = batch_size * 4
    with JsonlWriter(resp_path) as writer, _bar(len(todo), "score") as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            scores = score(loaded.model, loaded.tokenizer, [g["prompt"] for g in part], [g["response"] for g in part],
                           batch_size, cfg.reward_max_length, progress=bar, engine=engine_for(cfg.mode))
            rows = []
            for g, s in zip(part, scores):
                if s.reward != s.reward:  # NaN: never write a record that would poison the metrics
                    raise HHAlignError(f"reward model returned NaN for {g['model']}/{g['prompt_id']}: try --dtype "
                                       "float32; records scored so far are kept")
                rec = {k: v for k, v in g.items() if k != "model_info"}
                rec.update(reward=s.reward, label=label(g["category"], s.reward, thresholds),
                           reward_tokens=s.n_tokens, reward_truncated=s.truncated,
                           reward_over_trained_length=s.n_tokens > TRAINED_LENGTH)
                rows.append(rec)
            writer.write_many(rows)
    return loaded.info


def truncation_stats(records: list[dict], cfg: EvalConfig) -> dict:
    from .reward import TRAINED_LENGTH

    return {
        "generation": "prompts longer than the model's context keep their last tokens",
        "prompts_truncated": sum(bool(r.get("prompt_truncated")) for r in records),
        "reward_max_length": cfg.reward_max_length,
        "reward_pairs_truncated": sum(bool(r.get("reward_truncated")) for r in records),
        f"reward_pairs_over_{TRAINED_LENGTH}_tokens": sum(bool(r.get("reward_over_trained_length")) for r in records),
    }


def finish(cfg: EvalConfig, out: Path, records: list[dict], settings: dict, log: Callable[[str], None]) -> dict:
    """Summarize records into metrics.json, plots and report.md."""
    from .report import render_report

    thresholds = cfg.thresholds
    summary = summarize(records, thresholds, n_boot=cfg.n_bootstrap)
    settings = {
        **settings,
        "thresholds": {"harmless": thresholds.harmless, "helpful": thresholds.helpful},
        "bootstrap": {"n": cfg.n_bootstrap, "seed": 0, "ci": 0.95, "method": "percentile"},
        "packages": package_versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    metrics = {**summary, "settings": settings}
    if settings.get("source") == "from_responses":
        write_jsonl(out / FILES["responses"], ({**r, "label": label(r["category"], r["reward"], thresholds)}
                                               for r in records))
    write_json(out / FILES["metrics"], metrics)
    plots = {}
    if cfg.plots:
        from .plots import write_plots

        rewards: dict = {}
        for r in records:
            rewards.setdefault(r["model"], {"harmful": [], "helpful": []})[r["category"]].append(r["reward"])
        title = "Demo (tiny untrained models: meaningless scores)" if settings.get("demo") else ""
        plots = {k: p.name for k, p in write_plots(summary, rewards, out, title).items()}
    (out / FILES["report"]).write_text(render_report(metrics, plots), encoding="utf-8")
    for name, m in summary["models"].items():
        log(f"{name}: HmR {_pct(m['HmR'])}  HpR {_pct(m['HpR'])}  CAS {_pct(m['CAS'])}")
    log(summary["significance_note"])
    if settings.get("demo"):
        log("demo: these numbers come from tiny untrained models and mean nothing; run real checkpoints for results")
    log(f"wrote {out / FILES['metrics']}, {out / FILES['responses']}, {out / FILES['report']}")
    return metrics


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"
