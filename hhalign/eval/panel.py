"""The judges of a generated run at work: loaded once, checked on held-out pairs, given their thresholds, and
scoring every reply so that each record holds one reward per judge.

What a run learned about its judges (what was loaded, each check, each judge's thresholds) is kept in the run
folder's ``run.json``, so a resumed run whose replies are all scored needs no model loaded to write its metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import HHAlignError
from ..files import write_json
from ..stats.judges import Judge, JudgeResult, judges_from_state, parse_judges, resolve_thresholds
from ..stats.metrics import label
from .config import EvalConfig
from .judge_check import cache_folder, cache_key, check_block, check_pairs, run_check
from .timing import stage

logger = logging.getLogger(__name__)


class Panel:
    """The judges of ``cfg``; the judge-check pairs are read at once, so a missing dataset fails before any work."""

    def __init__(self, cfg: EvalConfig, device: str):
        self.cfg, self.device = cfg, device
        self.judges: list[Judge] = parse_judges(cfg.reward_model, cfg.judge_formats, cfg.judge_thresholds)
        self.n_check = cfg.judge_pairs
        self.dataset = cfg.judge_dataset or cfg.dataset
        try:
            self.pairs = check_pairs(self.dataset, cfg.split, self.n_check) if self.n_check else {}
        except HHAlignError as exc:
            raise HHAlignError(f"judge check: {exc}; or give it a local HH-RLHF copy with --judge_dataset PATH, or "
                               "turn it off with --judge_check 0") from None
        self.loaded: dict[str, Any] = {}
        self.results: list[JudgeResult] = []

    def prepare(self, state: dict, state_path: Any, need_models: bool) -> list[JudgeResult]:
        """Each judge's result: from the run state when it has them all and no reply needs scoring, else loaded,
        checked and saved into the state."""
        saved = judges_from_state(state)
        stamp = {"judges": [j.describe() for j in self.judges], "judge_check": self.n_check,
                 "judge_dataset": self.dataset if self.n_check else None,
                 "judge_thresholds": self.cfg.judge_thresholds,
                 "thresholds": [self.cfg.harmless_threshold, self.cfg.helpful_threshold]}
        if saved and state.get("judges_settings") == stamp and not need_models:
            self.results = saved
            return saved
        from ..engine.precision import apply_mode
        from ..engine.reward import scorer_name
        from ..engine.reward_formats import get_format
        from ..loading import load_reward_model

        self.results = []
        for judge in self.judges:
            with stage("model_load"):
                loaded = load_reward_model(judge.ref, device=self.device, dtype=self.cfg.dtype)
                get_format(judge.input_format).check(loaded.tokenizer, judge.ref.ref)
                loaded.model, loaded.info["engine"] = apply_mode(loaded.model, self.cfg.mode, self.device)
                loaded.info["engine"]["scorer"] = scorer_name(loaded.model, loaded.info["engine"]["engine"])
            self.loaded[judge.name] = loaded
            check, rewards = self._check(judge, loaded)
            thresholds, info = resolve_thresholds(judge, self.cfg.thresholds, rewards)
            self.results.append(JudgeResult(judge.name, loaded.info, thresholds, info, judge.input_format, check))
        state["judges"], state["judges_settings"] = [r.to_state() for r in self.results], stamp
        state["reward_info"] = self.results[0].info
        write_json(state_path, state)
        return self.results

    def _check(self, judge: Judge, loaded: Any) -> tuple[dict, Mapping | None]:
        if not self.n_check:
            return {}, None
        from ..engine.reward import TRAINED_LENGTH

        scoring = {"reward_max_length": self.cfg.reward_max_length, "dtype": self.cfg.dtype, "mode": self.cfg.mode}
        key = cache_key(loaded.info, judge.input_format, self.dataset, self.cfg.split, self.n_check, scoring)
        with stage("judge_check"):
            rewards, cached = run_check(loaded, judge.input_format, self.pairs, key,
                                        cache_folder(self.cfg.judge_cache), lambda p, r: self._score(judge, p, r))
        block = check_block(loaded.info, key, rewards, cached)
        block["trained_length"] = TRAINED_LENGTH
        acc = block["overall"]["accuracy"]
        logger.info(f"judge {judge.name}: chosen above rejected on "
                    f"{'n/a' if acc is None else f'{acc:.1f}%'} of {block['overall']['n']} held-out pairs")
        return block, rewards

    def _score(self, judge: Judge, prompts: Sequence[str], responses: Sequence[str], progress: Any = None) -> list:
        from ..engine.precision import engine_for
        from ..engine.reward import score

        loaded = self.loaded[judge.name]
        return score(loaded.model, loaded.tokenizer, prompts, responses,
                     self.cfg.reward_batch_size or self.cfg.batch_size, self.cfg.reward_max_length, progress=progress,
                     engine=engine_for(self.cfg.mode), input_format=judge.input_format)

    def score_records(self, generations: Sequence[Mapping], progress: Any = None) -> list[dict]:
        """Response records for ``generations``: one reward and label per judge, the primary's as ``reward``."""
        from ..engine.reward import TRAINED_LENGTH

        prompts = [g["prompt"] for g in generations]
        responses = [g["response"] for g in generations]
        scores = {}
        for i, judge in enumerate(self.judges):
            scores[judge.name] = self._score(judge, prompts, responses, progress if i == 0 else None)
        rows = []
        for k, g in enumerate(generations):
            rewards = {name: s[k].reward for name, s in scores.items()}
            bad = [name for name, v in rewards.items() if v != v]
            if bad:  # NaN: never write a record that would poison the metrics
                raise HHAlignError(f"reward model {bad[0]} returned NaN for {g['model']}/{g['prompt_id']}: try "
                                   "--dtype float32; records scored so far are kept")
            labels = {r.name: label(g["category"], rewards[r.name], r.thresholds) for r in self.results}
            first = scores[self.judges[0].name][k]
            rec = {key: v for key, v in g.items() if key != "model_info"}
            rec.update(reward=first.reward, label=labels[self.judges[0].name], rewards=rewards, labels=labels,
                       reward_tokens=first.n_tokens, reward_truncated=first.truncated,
                       reward_over_trained_length=first.n_tokens > TRAINED_LENGTH)
            rows.append(rec)
        return rows
