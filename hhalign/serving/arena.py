"""The blind arena: two models picked at random answer one prompt without their names, the visitor votes, and the
votes make a leaderboard (Bradley-Terry with bootstrap intervals, :mod:`hhalign.stats.ratings`) shown next to the
reward model's verdicts on the same pairs.

Votes are appended, one JSON line each, to ``votes.jsonl`` beside the results the Space shows; when the Space has a
Hugging Face token and a dataset to write to, a :class:`huggingface_hub.CommitScheduler` also pushes that file to the
dataset (under ``votes/<launch id>/``, so restarts never overwrite earlier launches' votes).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HHAlignError
from ..files import JsonlWriter, read_log
from ..stats.ratings import WINNERS, bootstrap_ratings, bradley_terry, judge_agreement, validate_vote
from .render import brief

logger = logging.getLogger(__name__)

VOTES_FILE = "votes.jsonl"
HUB_FOLDER = "votes"
LEADERBOARD_HEADERS = ["rank", "model", "rating", "95% low", "95% high", "votes", "reward model's rating"]
N_BOOT = 1000
# Votes a model needs before its rating is shown: with fewer, Bradley-Terry and its bootstrap give extreme ratings
# with intervals of zero width (one vote: 1471 [1471, 1471] against 529 [529, 529]).
MIN_VOTES = 5
NOT_ENOUGH = "not enough votes"
_rng = random.SystemRandom()


# --- one battle ------------------------------------------------------------------------------------------------------


@dataclass
class Battle:
    """The pair shown to one visitor: names hidden until the vote, rewards filled in as the replies are scored."""

    model_a: str
    model_b: str
    category: str = "helpful"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    reward_a: float | None = None
    reward_b: float | None = None
    winner: str | None = None
    reply_a: str = ""
    reply_b: str = ""

    @property
    def ready(self) -> bool:
        return self.reward_a is not None and self.reward_b is not None

    def vote(self, winner: Any) -> dict:
        """The vote record for ``winner``; refused before both replies are scored and after a first vote."""
        if not isinstance(winner, str) or winner not in WINNERS:
            raise HHAlignError(f"a vote must be one of {', '.join(map(repr, WINNERS))}, got {brief(winner)}")
        if not self.ready:
            raise HHAlignError("wait until both replies are finished before voting")
        if self.winner is not None:
            raise HHAlignError("you already voted on this pair: start a new round for another vote")
        record = validate_vote({"model_a": self.model_a, "model_b": self.model_b, "winner": winner,
                                "reward_a": self.reward_a, "reward_b": self.reward_b})
        self.winner = winner
        return {"id": uuid.uuid4().hex, "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record,
                "category": self.category}


def new_battle(names: Sequence[str], category: str = "helpful", rng: random.Random = _rng) -> Battle:
    """Two different models in random order."""
    if len(names) < 2:
        raise HHAlignError("the arena needs at least two models: add one with --models name=ref")
    a, b = rng.sample(list(names), 2)
    return Battle(a, b, category)


# --- where votes are kept --------------------------------------------------------------------------------------------


class VoteStore:
    """``votes.jsonl`` in ``folder`` (appended under a lock, one complete line per vote), optionally pushed to a Hub
    dataset by ``scheduler``; ``earlier`` holds votes of earlier launches read from that dataset."""

    def __init__(self, folder: str | Path, scheduler: Any = None, earlier: Sequence[dict] = ()):
        self.folder = Path(folder)
        self.path = self.folder / VOTES_FILE
        self.scheduler = scheduler
        self.earlier = list(earlier)
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        validate_vote(record)
        # The scheduler's lock keeps a push from reading the file while a line is half written.
        with self._lock, (self.scheduler.lock if self.scheduler is not None else nullcontext()):
            self.folder.mkdir(parents=True, exist_ok=True)
            with JsonlWriter(self.path) as out:
                out.write(record)

    def votes(self) -> list[dict]:
        """Every vote: earlier launches' (from the Hub) and this folder's, each once (by id)."""
        seen: set[str] = set()
        out = []
        for vote in [*self.earlier, *read_log(self.path)]:
            key = vote.get("id")
            if key is not None and key in seen:
                continue
            seen.add(key)
            out.append(vote)
        return out


def hub_store(folder: str | Path, repo_id: str, token: str, every_minutes: float = 5, api: Any = None) -> VoteStore:
    """A :class:`VoteStore` whose file a CommitScheduler pushes to the dataset ``repo_id``; the dataset's earlier
    votes are read once. If the Hub cannot be reached the votes stay local (logged), and the Space keeps running."""
    from huggingface_hub import CommitScheduler, HfApi

    api = api or HfApi(token=token)
    launch = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
    try:
        scheduler = CommitScheduler(repo_id=repo_id, repo_type="dataset", folder_path=folder,
                                    path_in_repo=f"{HUB_FOLDER}/{launch}", allow_patterns=[VOTES_FILE],
                                    every=every_minutes, private=True, token=token, hf_api=api)
        earlier = _hub_votes(api, repo_id)
    except Exception as exc:  # noqa: BLE001 - the Hub is optional: the arena works without it
        logger.warning(f"votes stay local: the Hub dataset {repo_id!r} cannot be used ({type(exc).__name__})")
        return VoteStore(folder)
    logger.info(f"votes are pushed to the Hub dataset {repo_id} every {every_minutes:g} min ({len(earlier)} earlier)")
    return VoteStore(folder, scheduler, earlier)


def _hub_votes(api: Any, repo_id: str) -> list[dict]:
    files = [f for f in api.list_repo_files(repo_id, repo_type="dataset")
             if f.startswith(f"{HUB_FOLDER}/") and f.endswith(".jsonl")]
    votes = []
    for name in sorted(files):
        for vote in read_log(api.hf_hub_download(repo_id, name, repo_type="dataset")):
            try:
                votes.append(validate_vote(vote) | {k: vote[k] for k in ("id", "ts", "category") if k in vote})
            except HHAlignError as exc:
                logger.warning(f"skipping a vote in {name}: {exc}")
    return votes


# --- the leaderboard -------------------------------------------------------------------------------------------------


def judge_votes(votes: Sequence[dict]) -> list[dict]:
    """The same pairs with the reward model as the voter: the higher reward wins, equal rewards tie."""
    out = []
    for v in votes:
        if v.get("reward_a") is None or v.get("reward_b") is None:
            continue
        diff = v["reward_a"] - v["reward_b"]
        out.append({"model_a": v["model_a"], "model_b": v["model_b"],
                    "winner": "A" if diff > 0 else "B" if diff < 0 else "tie"})
    return out


def arena_ranks(intervals: dict[str, tuple[float, float]]) -> dict[str, int]:
    """Chatbot Arena's rank: 1 + the number of models whose lower bound is above this model's upper bound, so models
    whose intervals overlap share a rank."""
    return {name: 1 + sum(lo > hi for other, (lo, _) in intervals.items() if other != name)
            for name, (_, hi) in intervals.items()}


@dataclass
class Leaderboard:
    """Rows for the table (rated models by rating, then those with too few votes) and the reward model's agreement
    with the visitors."""

    headers: list[str]
    rows: list[list]
    n_votes: int
    agreement: dict | None = None
    min_votes: int = MIN_VOTES

    def as_value(self) -> dict:
        return {"headers": self.headers, "data": self.rows}

    def summary(self) -> str:
        rule = (f"A model's rating is shown once it has {self.min_votes} votes; until then the table says "
                f"\"{NOT_ENOUGH}\". Models share a rank when neither's interval lies wholly above the other's.")
        if not self.n_votes:
            return f"No votes yet: the leaderboard fills as visitors vote. {rule}"
        a = self.agreement
        text = f"{self.n_votes} vote{'s' if self.n_votes != 1 else ''}. "
        if not a or not a["n"]:
            return text + f"The reward model's agreement needs a vote with a winner (A or B). {rule}"
        agree = round(a["agreement"] * a["n"] / 100)
        text += (f"The reward model agrees with the visitors on {agree} of {a['n']} votes with a winner "
                 f"({a['agreement']:.0f}%, 95% interval {a['ci95'][0]:.0f}-{a['ci95'][1]:.0f}%)")
        if a["excluded"]:
            text += f"; {a['excluded']} tie or both-bad vote{'s' if a['excluded'] != 1 else ''} left out"
        return f"{text}. {rule}"


def leaderboard(votes: Sequence[dict], n_boot: int = N_BOOT, seed: int = 0, min_votes: int = MIN_VOTES) -> Leaderboard:
    """Visitors' Bradley-Terry ratings with 95% bootstrap intervals (as FastChat computes them), the reward model's
    ratings on the same pairs, and how often the two agree (:func:`hhalign.stats.ratings.judge_agreement`).

    Every vote enters the fit; a model with fewer than ``min_votes`` votes shows its count and "not enough votes"
    instead of a rating and rank. Ranks are :func:`arena_ranks` among the rated models."""
    if not votes:
        return Leaderboard(list(LEADERBOARD_HEADERS), [], 0, min_votes=min_votes)
    visitors = bootstrap_ratings(votes, n_boot=n_boot, seed=seed)
    judged = judge_votes(votes)
    judge = bradley_terry(judged) if judged else {}
    rated = {name: r for name, r in visitors.items() if r["n_votes"] >= min_votes}
    ranks = arena_ranks({name: tuple(r["ci95"]) for name, r in rated.items()})
    rows = []
    for name, r in rated.items():
        rm = judge.get(name)
        rows.append([ranks[name], name, round(r["rating"]), round(r["ci95"][0]), round(r["ci95"][1]), r["n_votes"],
                     None if rm is None else round(rm)])
    rows.sort(key=lambda row: (row[0], -row[2]))
    for name, r in sorted(visitors.items(), key=lambda item: (-item[1]["n_votes"], item[0])):
        if name not in rated:
            rows.append([None, name, NOT_ENOUGH, None, None, r["n_votes"], None])
    return Leaderboard(list(LEADERBOARD_HEADERS), rows, len(votes), judge_agreement(votes), min_votes)
