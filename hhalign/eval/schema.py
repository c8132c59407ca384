"""The evaluator's result files, described once as types: the names of the files in a run folder, ``metrics.json``
(:class:`Metrics`: per-model rates with intervals, comparisons, the settings that produced them) and the records of
``responses.jsonl`` (:class:`ResponseRecord`). Readers go through :func:`load_metrics`; writers through
:meth:`Metrics.to_dict`, so a field is named in one place.

``schema_version`` 2 added the version itself, ``hhalign_version`` and ``git_commit``; files without a version are
read as version 1 (the same fields otherwise).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HHAlignError

SCHEMA_VERSION = 2
FILES = {
    "prompts": "prompts.jsonl",
    "generations": "generations.jsonl",
    "responses": "responses.jsonl",
    "metrics": "metrics.json",
    "report": "report.md",
    "run": "run.json",
    "lock": ".hhalign.lock",
}
METRIC_KEYS = ("HmR", "HpR", "CAS")
METRIC_NAMES = {"HmR": "Harmlessness rate", "HpR": "Helpfulness rate", "CAS": "Combined alignment score"}
# The category each rate is measured on (CAS: both).
METRIC_CATEGORY = {"HmR": "harmful", "HpR": "helpful", "CAS": None}


@dataclass
class ModelMetrics:
    """One model's rates (percent), mean rewards and their 95% intervals; None where a category has no prompts."""

    HmR: float | None
    HpR: float | None
    CAS: float | None
    n: dict[str, int]
    mean_reward: dict[str, float | None] = field(default_factory=dict)
    ci95: dict[str, list[float]] = field(default_factory=dict)

    def interval(self, key: str) -> list[float] | None:
        return self.ci95.get(key)


@dataclass
class Settings:
    """What produced the numbers. ``source`` is ``generated`` (models run here) or ``from_responses`` (records read
    from files); fields that do not apply to a source stay empty."""

    source: str = "generated"
    demo: bool = False
    models: dict[str, dict] = field(default_factory=dict)
    reward_model: dict = field(default_factory=dict)
    prompt_set: dict = field(default_factory=dict)
    protocol: str | None = None
    decoding: dict = field(default_factory=dict)
    truncation: dict = field(default_factory=dict)
    dtype: str | None = None
    mode: dict = field(default_factory=dict)
    device: str | None = None
    batch_size: int | None = None
    reward_batch_size: int | None = None
    files: list[str] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)
    bootstrap: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    hhalign_version: str | None = None
    git_commit: str | None = None
    packages: dict = field(default_factory=dict)
    created: str | None = None
    # Keys written by a newer hhalign, kept so a rewrite loses nothing.
    extra: dict = field(default_factory=dict)

    @property
    def reward_model_ref(self) -> str:
        """The reward model as ``ref@revision`` (revision left out when it is the default branch)."""
        ref = self.reward_model.get("ref", "unknown")
        rev = self.reward_model.get("revision")
        return f"{ref}@{rev}" if rev and rev != "main" else ref

    def model_ref(self, name: str) -> str | None:
        """The reference the evaluator loaded for model ``name`` (None for metrics made from records)."""
        return (self.models.get(name) or {}).get("ref")


@dataclass
class Metrics:
    """``metrics.json``.

    ``models`` and ``comparisons`` are the primary judge's (the first ``--reward_model``). The judge blocks:

    * ``judge``: ``{name: {model, revision, format, n_per_subset, subsets: {subset: {accuracy, ci95, n, ties,
      accuracy_ties_as_half}}, overall: {...}, ...}}``, each judge's accuracy on held-out HH-RLHF pairs (percent);
    * ``judges``: ``{name: {model, revision, format, primary, thresholds, models, comparisons, significance_note}}``,
      every metric per judge;
    * ``agreement``: one entry per pair of judges, ``{judge_a, judge_b, n, kappa: {value, ci95, agreement},
      spearman: {value, ci95}, categories: {harmful: {...}, helpful: {...}}}``;
    * ``human_votes``: the primary judge's agreement with the Space's blind votes, when there are any.
    """

    models: dict[str, ModelMetrics]
    settings: Settings
    comparisons: list[dict] = field(default_factory=list)
    threshold_sweep: dict = field(default_factory=dict)
    significance_note: str = ""
    judge: dict[str, dict] = field(default_factory=dict)
    judges: dict[str, dict] = field(default_factory=dict)
    agreement: list[dict] = field(default_factory=list)
    human_votes: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)

    @property
    def demo(self) -> bool:
        return self.settings.demo

    def model(self, name: str | None, source: str = "metrics.json") -> tuple[str, ModelMetrics]:
        """(name, metrics) of one model; the only model when ``name`` is None."""
        names = list(self.models)
        if name is None:
            if len(names) != 1:
                raise HHAlignError(f"{source} has models {', '.join(names)}: pick one with --metrics_model")
            name = names[0]
        if name not in self.models:
            raise HHAlignError(f"{source} has no model {name!r} (it has {', '.join(names)}); fix --metrics_model")
        return name, self.models[name]

    def to_dict(self) -> dict:
        out = {"schema_version": self.schema_version,
               "models": {k: dataclasses.asdict(v) for k, v in self.models.items()},
               "comparisons": self.comparisons, "threshold_sweep": self.threshold_sweep,
               "significance_note": self.significance_note,
               # Files without judges (no check, a single judge from older runs) stay unchanged.
               **{k: v for k, v in (("judge", self.judge), ("judges", self.judges), ("agreement", self.agreement),
                                    ("human_votes", self.human_votes)) if v},
               **self.extra}
        settings = dataclasses.asdict(self.settings)
        settings.update(settings.pop("extra"))
        out["settings"] = settings
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "metrics.json") -> Metrics:
        """Checked construction; a file that is not an evaluator metrics.json is one clear error."""
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise HHAlignError(f"{source} is not an evaluator metrics.json (no 'models' table): run hhalign eval")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise HHAlignError(f"{source} has schema_version {version!r}, newer than this hhalign reads "
                               f"({SCHEMA_VERSION}): upgrade hhalign")
        models = {}
        for name, m in data["models"].items():
            try:
                models[name] = _build(ModelMetrics, m)
            except (TypeError, KeyError) as exc:
                raise HHAlignError(f"{source}: model {name!r} is malformed ({exc}); re-run the evaluator") from None
        settings = _build(Settings, data.get("settings") or {}, keep_extra=True)
        judge = data.get("judge") or {}
        if not isinstance(judge, dict):
            raise HHAlignError(f"{source}: 'judge' must map judge names to their accuracies; re-run the judge check")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(models=models, settings=settings, comparisons=list(data.get("comparisons") or []),
                   threshold_sweep=dict(data.get("threshold_sweep") or {}),
                   significance_note=str(data.get("significance_note") or ""), judge=judge,
                   judges=dict(data.get("judges") or {}), agreement=list(data.get("agreement") or []),
                   human_votes=dict(data.get("human_votes") or {}), schema_version=version,
                   extra={k: v for k, v in data.items() if k not in known})


def _build(cls: type, data: Any, keep_extra: bool = False) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k in names and k != "extra"}
    if keep_extra:
        values["extra"] = {k: v for k, v in data.items() if k not in names}
    return cls(**values)


def load_metrics(path: str | Path) -> Metrics:
    """Read and check a ``metrics.json``."""
    from ..files import read_json

    data = read_json(path, "metrics file", "pass the metrics.json the evaluator wrote (hhalign eval --out DIR)")
    return Metrics.from_dict(data, str(path))


@dataclass
class ResponseRecord:
    """One line of ``responses.jsonl``: a model's scored reply to one prompt."""

    model: str
    category: str
    prompt_id: str
    prompt: str
    response: str
    reward: float
    label: str | None = None
    # One reward and label per judge (the primary's are ``reward`` and ``label``).
    rewards: dict[str, float] | None = None
    labels: dict[str, str] | None = None
    model_ref: str | None = None
    revision: str | None = None
    n_prompt_tokens: int | None = None
    n_new_tokens: int | None = None
    prompt_truncated: bool | None = None
    reward_tokens: int | None = None
    reward_truncated: bool | None = None
    reward_over_trained_length: bool | None = None
