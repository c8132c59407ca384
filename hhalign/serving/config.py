"""The Space's options and the backend built from them (catalog, pool, chat service, results folder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import check_device, check_positive
from ..errors import HHAlignError
from ..refs import DEFAULT_REWARD_MODEL, parse_model_ref
from .arena import VoteStore, hub_store
from .chat import ChatService, Limits
from .pool import CatalogEntry, ModelPool, add_models, registry_catalog, validate_ref
from .zerogpu import on_zerogpu

# --- the Space's configuration ---------------------------------------------------------------------------------------


def _default_cache() -> str:
    import os

    return str(Path(os.environ.get("HHALIGN_CACHE", Path.home() / ".cache" / "hhalign")) / "space-demo")


def _env(name: str, default: str) -> str:
    import os

    return os.environ.get(name, default)


@dataclass
class SpaceConfig:
    """Options of ``space/app.py``; every field is a flag (``--memory_budget_gb`` or ``--memory-budget-gb``)."""

    demo: bool = field(default=False, metadata={
        "help": "Offline demo: tiny models (a policy and a LoRA adapter on it) and demo results, built once into "
                "--cache_dir."})
    models: list[str] = field(default_factory=list, metadata={
        "help": "Extra models as name=ref (Hub id, local folder or PEFT adapter), validated like the evaluator's "
                "--models; added to the registry's published models (or to the demo models)."})
    reward_model: str = field(default=DEFAULT_REWARD_MODEL, metadata={
        "help": "Reward model scoring each reply (in --demo: the tiny reward model)."})
    results: str | None = field(default=None, metadata={
        "help": "Results for the Results tab: an evaluator results folder (metrics.json + responses.jsonl), a results "
                "dataset (hf://datasets/ORG/NAME[@REV], or its folder, e.g. one staged by --push_results_to_hub "
                "--dry_run). Default: results/ next to app.py when present (the deployed Space), the demo results "
                "with --demo."})
    cache_dir: str = field(default_factory=_default_cache, metadata={
        "help": "Where --demo builds its tiny models and results (reused on later launches)."})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu, cuda or cuda:N."})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(default="auto", metadata={
        "help": "auto (bfloat16 on capable GPUs, else float32), float32, bfloat16 or float16."})
    memory_budget_gb: float = field(default=8.0, metadata={
        "help": "Weights kept loaded at once (GB); least recently used models are dropped beyond it."})
    max_new_tokens: int = field(default=256, metadata={"help": "Most new tokens a visitor may ask for."})
    default_new_tokens: int = field(default=64, metadata={
        "help": "New tokens per reply unless the visitor changes it."})
    max_input_chars: int = field(default=2000, metadata={"help": "Longest message accepted, in characters."})
    max_sessions: int = field(default=200, metadata={
        "help": "Sessions (browser tabs, API clients) whose state Gradio keeps in memory, least recently used "
                "forgotten first. Each holds its conversations and a copy of the page's component values, about a "
                "third of a MB here; Gradio's own default of 10,000 lets memory grow by gigabytes."})
    judge_max_tokens: int = field(default=0, metadata={
        "help": "Most tokens the reward model reads per reply (the conversation's latest part and the reply; the "
                "badge says when it was cut). 0: the reward model's trained length, read from its tokenizer's "
                "model_max_length, else its config's max_position_embeddings, else 512 (the OpenAssistant "
                "DeBERTa-v3: 512)."})
    queue_size: int = field(default=32, metadata={"help": "Requests waiting at most; more are turned away."})
    concurrency: int = field(default=1, metadata={
        "help": "Generations running at once (chat and compare together); 1 suits a CPU Space."})
    gpu_duration: int = field(default=60, metadata={
        "help": "Most seconds of ZeroGPU time asked for per reply (fewer for short replies: 10 s + 0.1 s per token)."})
    preload: bool = field(default=False, metadata={
        "help": "Load every model at start-up instead of on first use (always done on ZeroGPU hardware)."})
    votes_repo: str | None = field(default=None, metadata={
        "help": "Hub dataset (org/name) the arena's votes are pushed to every few minutes; needs HF_TOKEN. Default "
                "on a Space with HF_TOKEN set: <space id>-votes. Votes are always kept in votes.jsonl beside the "
                "results."})
    code_url: str | None = field(default=None, metadata={
        "help": "Link to the code shown in About (default on a Space: its files)."})
    host: str = field(default_factory=lambda: _env("GRADIO_SERVER_NAME", "127.0.0.1"), metadata={
        "help": "Address to bind (default 127.0.0.1; Hugging Face Spaces set GRADIO_SERVER_NAME)."})
    port: int = field(default_factory=lambda: int(_env("GRADIO_SERVER_PORT", "7860")), metadata={
        "help": "Port to serve on."})

    def __post_init__(self) -> None:
        check_device(self.device)
        check_positive(self, {"max_new_tokens": "tokens", "default_new_tokens": "tokens",
                              "max_input_chars": "characters", "queue_size": "requests", "concurrency": "generations",
                              "max_sessions": "sessions", "gpu_duration": "seconds"})
        if self.default_new_tokens > self.max_new_tokens:
            raise HHAlignError(f"--default_new_tokens {self.default_new_tokens} must be between 1 and "
                               f"--max_new_tokens {self.max_new_tokens}")
        if self.judge_max_tokens < 0 or 0 < self.judge_max_tokens <= 2:
            raise HHAlignError(f"--judge_max_tokens must be 0 (the reward model's trained length) or more than 2 "
                               f"tokens, got {self.judge_max_tokens}")
        if not self.memory_budget_gb > 0:
            raise HHAlignError(f"--memory_budget_gb must be positive, got {self.memory_budget_gb}")
        if not 0 <= self.port <= 65535:
            raise HHAlignError(f"--port must be between 0 and 65535, got {self.port}")

    def hub_votes(self) -> tuple[str, str] | None:
        """(dataset, token) when votes go to the Hub: a token and a dataset (given or derived from the Space)."""
        import os

        token = os.environ.get("HF_TOKEN")
        repo = self.votes_repo or (f"{os.environ['SPACE_ID']}-votes" if os.environ.get("SPACE_ID") else None)
        if self.demo and not self.votes_repo:
            return None  # the demo is offline unless told otherwise
        return (repo, token) if repo and token else None

    def code_link(self) -> str | None:
        import os

        space = os.environ.get("SPACE_ID")
        return self.code_url or (f"https://huggingface.co/spaces/{space}/tree/main" if space else None)

    @property
    def limits(self) -> Limits:
        return Limits(max_input_chars=self.max_input_chars, max_new_tokens=self.max_new_tokens,
                      default_new_tokens=self.default_new_tokens, judge_max_tokens=self.judge_max_tokens)


@dataclass
class Backend:
    """What the UI needs: the chat service over the catalog, and the results folder (None when there is none)."""

    config: SpaceConfig
    service: ChatService
    catalog: list[CatalogEntry]
    results: Path | None
    demo: bool
    votes: VoteStore

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.catalog]


def demo_catalog(models_dir: str | Path) -> list[CatalogEntry]:
    """The tiny policy and a LoRA adapter on it, under the names the evaluator's demo results use."""
    models = Path(models_dir)
    return [
        CatalogEntry("tiny", validate_ref(parse_model_ref(f"tiny={models / 'policy'}")), "base (demo)",
                     "A tiny OPT-shaped model with random weights, built offline: it babbles, by design."),
        CatalogEntry("tiny_lora", validate_ref(parse_model_ref(f"tiny_lora={models / 'policy-lora'}")),
                     "adapter (demo)", "A LoRA adapter on the tiny model; it shares the tiny model's weights in "
                     "memory, as the DPO adapters share OPT-350M's."),
    ]


def build_backend(cfg: SpaceConfig, app_dir: str | Path | None = None) -> Backend:
    """Catalog, pool and results folder for ``cfg``; nothing but the demo build is loaded here."""
    from ..stats.results import ensure_demo_results, resolve_results_source

    limits = cfg.limits
    results = resolve_results_source(cfg.results) if cfg.results else None
    if results is not None and not (results / "metrics.json").is_file():
        raise HHAlignError(f"--results {cfg.results!r} has no metrics.json: run python batch/eval.py --out "
                           f"{cfg.results} first, or pass the folder it wrote")
    if cfg.demo:
        demo_dir = ensure_demo_results(cfg.cache_dir)
        catalog = add_models(demo_catalog(demo_dir / "models"), cfg.models)
        reward = cfg.reward_model if cfg.reward_model != DEFAULT_REWARD_MODEL else str(demo_dir / "models" / "reward")
        results = results or demo_dir
    else:
        catalog = registry_catalog(cfg.models)
        reward = cfg.reward_model
        shipped = Path(app_dir) / "results" if app_dir else None
        if results is None and shipped is not None and (shipped / "metrics.json").is_file():
            results = shipped
    zero = on_zerogpu()
    # ZeroGPU lends a GPU only inside @spaces.GPU calls: the models must sit "on cuda" from start-up, all of them.
    device = "cuda" if zero and cfg.device == "auto" else cfg.device
    pool = ModelPool(catalog, reward, device, cfg.dtype, cfg.memory_budget_gb)
    service = ChatService(pool, limits)
    if cfg.preload or zero:
        service.prepare([e.name for e in catalog])
    return Backend(cfg, service, catalog, results, cfg.demo, vote_store(cfg, results))


def vote_store(cfg: SpaceConfig, results: Path | None) -> VoteStore:
    """votes.jsonl beside the results shown (the cache folder when there are none), pushed to the Hub when set up."""
    folder = results if results is not None else Path(cfg.cache_dir).expanduser()
    hub = cfg.hub_votes()
    return hub_store(folder, *hub) if hub else VoteStore(folder)
