"""Leaderboard of a blind arena: visitors vote between two anonymous models, ratings as Chatbot Arena computes them.

A vote is ``{"model_a": str, "model_b": str, "winner": "A" | "B" | "tie" | "both bad"}``, optionally with
``reward_a``/``reward_b`` (the reward model's scores of the two replies, raw logits). Ratings are on the Elo scale:
``P(a beats b) = 1 / (1 + base ** ((R_b - R_a) / scale))``. Pure numpy (no scipy, no sklearn).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..errors import HHAlignError
from .inference import wilson_interval

WINNERS = ("A", "B", "tie", "both bad")
SCALE = 400.0
BASE = 10.0
INIT_RATING = 1000.0
# Virtual ties per model against an opponent rated INIT_RATING: enough to keep every rating finite (a model that
# never lost ends ~1000 points up instead of at infinity), too little to move ratings that the votes do determine
# (well under a point with a few dozen votes). 0 gives the pure maximum-likelihood fit.
PRIOR_TIES = 0.01
# Newton stops once every model's score equation is met to this share of the total vote weight.
_GRAD_TOL = 1e-10
_MAX_NEWTON = 200
# Largest change of any strength in one Newton step, in nats (~350 Elo points): far from the optimum, e.g. a model
# that drew no votes in a bootstrap resample and is held only by the weak prior, a full step can overshoot wildly.
_MAX_STEP = 2.0


# --- votes ------------------------------------------------------------------------------------------------------

def validate_vote(vote: Mapping, index: int | None = None) -> dict:
    """A checked copy of one vote (model_a, model_b, winner and, if given, both rewards as floats).

    Raises HHAlignError naming the bad field (and the vote's position when ``index`` is given).
    """
    where = f"vote {index}: " if index is not None else "vote: "
    if not isinstance(vote, Mapping):
        raise HHAlignError(f"{where}must be a mapping with model_a, model_b and winner, got {type(vote).__name__}")
    out: dict = {}
    for field in ("model_a", "model_b"):
        name = vote.get(field)
        if not isinstance(name, str) or not name.strip():
            raise HHAlignError(f"{where}field '{field}' must be a non-empty model name, got {name!r}")
        out[field] = name
    if out["model_a"] == out["model_b"]:
        raise HHAlignError(f"{where}field 'model_b' names the same model as model_a ({out['model_b']!r}): "
                           "a vote compares two different models")
    winner = vote.get("winner")
    if winner not in WINNERS:
        raise HHAlignError(f"{where}field 'winner' must be one of {', '.join(map(repr, WINNERS))}, got {winner!r}")
    out["winner"] = winner
    rewards = {f: vote.get(f) for f in ("reward_a", "reward_b") if vote.get(f) is not None}
    for field, value in rewards.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(value):
            raise HHAlignError(f"{where}field '{field}' must be a finite number (reward logit), got {value!r}")
        out[field] = float(value)
    if len(rewards) == 1:
        given = next(iter(rewards))
        missing = "reward_b" if given == "reward_a" else "reward_a"
        raise HHAlignError(f"{where}field '{missing}' is missing while '{given}' is given: score both replies or "
                           "neither")
    return out


def _validated(votes: Iterable[Mapping]) -> list[dict]:
    return [validate_vote(v, i) for i, v in enumerate(votes)]


def _sorted_by_rating(ratings: Mapping[str, float]) -> dict[str, float]:
    """Leaderboard order: highest rating first, name breaking exact ties."""
    return dict(sorted(ratings.items(), key=lambda kv: (-kv[1], kv[0])))


# --- Bradley-Terry by maximum likelihood ------------------------------------------------------------------------

def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(_log_sigmoid(x))


def _loglik(theta: np.ndarray, wins: np.ndarray, prior_ties: float) -> float:
    """Log-likelihood (natural-log strengths) plus the virtual-tie prior against an opponent at strength 0."""
    ll = float((wins * _log_sigmoid(theta[:, None] - theta[None, :])).sum())
    if prior_ties:
        ll += prior_ties / 2 * float((_log_sigmoid(theta) + _log_sigmoid(-theta)).sum())
    return ll


def _score_gradient(theta: np.ndarray, wins: np.ndarray, prior_ties: float = 0.0) -> np.ndarray:
    """Gradient of the Bradley-Terry log-likelihood in natural-log strengths theta.

    ``wins[i, j]`` is the credit of i over j (a tie gives 0.5 each way). Entry i is observed minus expected wins
    of model i (plus the prior's pull toward 0); it is zero at the maximum-likelihood solution.
    """
    games = wins + wins.T
    expected = games * _sigmoid(theta[:, None] - theta[None, :])
    grad = (wins - expected).sum(axis=1)
    if prior_ties:
        grad += prior_ties * (0.5 - _sigmoid(theta))
    return grad


def _undefeated_split(wins: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(never_beat, others) index groups when the MLE does not exist, else None.

    The MLE exists exactly when the "i beat j at least once" graph (a tie counted as half a win counts both ways)
    is strongly connected (Zermelo 1929; Ford 1957): otherwise some group never beat the rest and the gap between
    them grows without bound.
    """
    beat = wins > 0
    m = beat.shape[0]
    for graph, reversed_ in ((beat, False), (beat.T, True)):
        reached = np.zeros(m, dtype=bool)
        reached[0] = True
        while True:
            grown = reached | graph[reached].any(axis=0)
            if (grown == reached).all():
                break
            reached = grown
        if not reached.all():
            inside, outside = np.flatnonzero(reached), np.flatnonzero(~reached)
            # Forward: nobody reached from model 0 by "beat" chains beat anyone outside; backward: the reverse.
            return (outside, inside) if reversed_ else (inside, outside)
    return None


def _fit(wins: np.ndarray, prior_ties: float, theta0: np.ndarray | None = None) -> np.ndarray:
    """Natural-log strengths maximising the (prior-penalised) likelihood, mean zero. Newton with backtracking."""
    m = wins.shape[0]
    games = wins + wins.T
    tol = _GRAD_TOL * max(1.0, float(games.sum()) / 2)
    theta = np.zeros(m) if theta0 is None else theta0 - theta0.mean()
    ll = _loglik(theta, wins, prior_ties)
    for _ in range(_MAX_NEWTON):
        grad = _score_gradient(theta, wins, prior_ties)
        if np.abs(grad).max() <= tol:
            return theta - theta.mean()
        p = _sigmoid(theta[:, None] - theta[None, :])
        w = games * p * (1 - p)
        info = np.diag(w.sum(axis=1)) - w  # observed information: a weighted graph Laplacian
        if prior_ties:
            s = _sigmoid(theta)
            info += np.diag(prior_ties * s * (1 - s))
        else:
            # Without a prior, shifting every strength changes nothing; adding 11'/m pins the step to mean zero.
            info += 1.0 / m
        step = np.linalg.solve(info, grad)
        step *= min(1.0, _MAX_STEP / np.abs(step).max())
        slope = float(grad @ step)  # > 0: info is positive definite, so this is an ascent direction
        t = 1.0
        while True:  # backtrack until the likelihood rises enough (Armijo); rounding allowance near the optimum
            cand = theta + t * step
            cand_ll = _loglik(cand, wins, prior_ties)
            if cand_ll >= ll + 1e-4 * t * slope - 1e-12 * abs(ll) or t < 1e-8:
                break
            t /= 2
        theta, ll = cand, cand_ll
    raise RuntimeError(f"Bradley-Terry fit did not converge in {_MAX_NEWTON} Newton steps "
                       f"(max gradient {np.abs(_score_gradient(theta, wins, prior_ties)).max():.3g})")


class _Design:
    """Votes reduced to distinct (model_a, model_b, outcome) cells, each with its count and win credits."""

    def __init__(self, votes: Sequence[dict], ties_as_half: bool):
        self.models = sorted({v[k] for v in votes for k in ("model_a", "model_b")})
        index = {name: i for i, name in enumerate(self.models)}
        m = len(self.models)
        cells: dict[tuple[int, int, str], int] = {}
        for v in votes:
            key = (index[v["model_a"]], index[v["model_b"]], v["winner"])
            cells[key] = cells.get(key, 0) + 1
        keys = sorted(cells)  # sorted, so the design (and everything after) ignores the votes' order
        self.counts = np.array([cells[k] for k in keys], dtype=float)
        # credit[u] spreads one vote of cell u over the flattened m x m win matrix.
        self.credit = np.zeros((len(keys), m * m))
        for u, (a, b, winner) in enumerate(keys):
            if winner == "A":
                self.credit[u, a * m + b] = 1.0
            elif winner == "B":
                self.credit[u, b * m + a] = 1.0
            elif ties_as_half:  # "tie" and "both bad": half a win each way, as FastChat's duplicated rows do
                self.credit[u, a * m + b] = self.credit[u, b * m + a] = 0.5

    def wins(self, counts: np.ndarray | None = None) -> np.ndarray:
        m = len(self.models)
        return ((self.counts if counts is None else counts) @ self.credit).reshape(m, m)


def _checked_fit(design: _Design, wins: np.ndarray, prior_ties: float, theta0: np.ndarray | None = None,
                 context: str = "") -> np.ndarray:
    if prior_ties == 0:
        split = _undefeated_split(wins)
        if split is not None:
            never, others = ([design.models[i] for i in group] for group in split)
            raise HHAlignError(
                f"{context}no maximum-likelihood Bradley-Terry ratings: {', '.join(never)} never beat "
                f"{', '.join(others)} in these votes, so the gap between them is unbounded; use prior_ties > 0 "
                f"(default {PRIOR_TIES}) or collect more votes")
    return _fit(wins, prior_ties, theta0)


def _check_rating_args(scale: float, base: float, prior_ties: float) -> None:
    if not (scale > 0 and base > 1):
        raise HHAlignError(f"need scale > 0 and base > 1, got scale={scale}, base={base}")
    if not (math.isfinite(prior_ties) and prior_ties >= 0):
        raise HHAlignError(f"prior_ties must be a number >= 0, got {prior_ties}")


def _to_elo(theta: np.ndarray, scale: float, base: float, init_rating: float) -> np.ndarray:
    # theta is in nats; one Elo unit is ln(base) / scale nats.
    return init_rating + scale * theta / math.log(base)


def bradley_terry(votes: Iterable[Mapping], scale: float = SCALE, base: float = BASE,
                  init_rating: float = INIT_RATING, ties_as_half: bool = True,
                  prior_ties: float = PRIOR_TIES) -> dict[str, float]:
    """Elo-scaled Bradley-Terry ratings by maximum likelihood, highest first; deterministic, order-independent.

    The logistic model of FastChat's ``compute_mle_elo``, fitted by Newton's method. A "tie" or "both bad" vote
    counts as half a win each way (``ties_as_half=False`` drops them). Only rating differences are identified;
    the anchor is the mean: ratings average exactly ``init_rating`` (FastChat's unpenalised fit started at 0 ends
    there too). The MLE does not exist when some group of models never beat the rest (e.g. a model that never
    lost). ``prior_ties`` adds that many virtual ties per model against an opponent rated ``init_rating``: the
    default (``PRIOR_TIES``, 0.01) keeps such ratings finite while leaving well-determined ones all but
    untouched; a larger value (e.g. 1.0) shrinks sparse arenas toward the mean; 0 is the exact MLE and raises
    HHAlignError when it does not exist.
    """
    _check_rating_args(scale, base, prior_ties)
    checked = _validated(votes)
    if not checked:
        raise HHAlignError("no votes to rate")
    design = _Design(checked, ties_as_half)
    theta = _checked_fit(design, design.wins(), prior_ties)
    elo = _to_elo(theta, scale, base, init_rating)
    return _sorted_by_rating({name: float(r) for name, r in zip(design.models, elo)})


def bootstrap_ratings(votes: Iterable[Mapping], n_boot: int = 1000, seed: int = 0, scale: float = SCALE,
                      base: float = BASE, init_rating: float = INIT_RATING, ties_as_half: bool = True,
                      prior_ties: float = PRIOR_TIES) -> dict[str, dict]:
    """Bradley-Terry ratings with seeded 95% percentile-bootstrap intervals over votes, highest rating first.

    ``{model: {"rating", "ci95": [lo, hi], "n_votes"}}``; "rating" is the full-data estimate and ``n_votes``
    counts every vote the model was in. Resamples draw n votes with replacement (as multinomial counts over the
    distinct vote kinds, which is the same distribution). With sparse votes some resamples leave a model
    unbeaten; the default prior keeps its rating finite but far off, which widens that model's interval, as it
    should. With ``prior_ties=0`` such a resample has no MLE and raises.
    """
    _check_rating_args(scale, base, prior_ties)
    if n_boot < 1:
        raise HHAlignError(f"n_boot must be >= 1, got {n_boot}")
    checked = _validated(votes)
    if not checked:
        raise HHAlignError("no votes to rate")
    design = _Design(checked, ties_as_half)
    theta = _checked_fit(design, design.wins(), prior_ties)
    rng = np.random.default_rng(seed)
    n = len(checked)
    draws = rng.multinomial(n, design.counts / n, size=n_boot).astype(float)
    boot = np.empty((n_boot, len(design.models)))
    for r in range(n_boot):
        # Warm start from the full-data fit: same optimum, fewer Newton steps.
        boot[r] = _checked_fit(design, design.wins(draws[r]), prior_ties, theta,
                               context=f"bootstrap resample {r + 1} of {n_boot}: ")
    elo, boot_elo = _to_elo(theta, scale, base, init_rating), _to_elo(boot, scale, base, init_rating)
    n_votes = {name: sum(name in (v["model_a"], v["model_b"]) for v in checked) for name in design.models}
    out = {
        name: {
            "rating": float(elo[i]),
            "ci95": [float(np.quantile(boot_elo[:, i], 0.025)), float(np.quantile(boot_elo[:, i], 0.975))],
            "n_votes": n_votes[name],
        }
        for i, name in enumerate(design.models)
    }
    order = _sorted_by_rating({name: entry["rating"] for name, entry in out.items()})
    return {name: out[name] for name in order}


# --- the classic sequential Elo -----------------------------------------------------------------------------------

def online_elo(votes: Iterable[Mapping], k: float = 4.0, scale: float = SCALE, base: float = BASE,
               init: float = INIT_RATING) -> dict[str, float]:
    """Sequential Elo in vote order (FastChat's ``compute_online_elo``), highest first; for reference only.

    Each vote moves both ratings by ``k * (score - expected)``, score 1/0 for a win/loss and 0.5 for "tie" or
    "both bad". Unlike Bradley-Terry it depends on the order of the votes and favours recent ones.
    """
    if not (scale > 0 and base > 1):
        raise HHAlignError(f"need scale > 0 and base > 1, got scale={scale}, base={base}")
    ratings: dict[str, float] = {}
    for v in _validated(votes):
        a, b = v["model_a"], v["model_b"]
        ra, rb = ratings.setdefault(a, init), ratings.setdefault(b, init)
        expected_a = 1.0 / (1.0 + base ** ((rb - ra) / scale))
        score_a = {"A": 1.0, "B": 0.0}.get(v["winner"], 0.5)
        ratings[a] = ra + k * (score_a - expected_a)
        ratings[b] = rb + k * ((1.0 - score_a) - (1.0 - expected_a))
    return _sorted_by_rating(ratings)


# --- tables -----------------------------------------------------------------------------------------------------

def win_matrix(votes: Iterable[Mapping]) -> dict[str, dict[str, dict]]:
    """Head-to-head counts for a leaderboard table: ``out[model][opponent]`` for every pair that met.

    Each entry holds ``wins``, ``losses``, ``ties`` ("tie" votes), ``both_bad``, ``n`` (all their votes) and
    ``win_rate``: wins / (wins + losses) in percent, None without a decisive vote. Models sorted by name;
    ``out[a][b]["wins"] == out[b][a]["losses"]``.
    """
    counts: dict[tuple[str, str], dict[str, int]] = {}

    def cell(x: str, y: str) -> dict[str, int]:
        return counts.setdefault((x, y), {"wins": 0, "losses": 0, "ties": 0, "both_bad": 0})

    for v in _validated(votes):
        a, b, winner = v["model_a"], v["model_b"], v["winner"]
        if winner == "A":
            cell(a, b)["wins"] += 1
            cell(b, a)["losses"] += 1
        elif winner == "B":
            cell(a, b)["losses"] += 1
            cell(b, a)["wins"] += 1
        else:
            key = "ties" if winner == "tie" else "both_bad"
            cell(a, b)[key] += 1
            cell(b, a)[key] += 1
    out: dict[str, dict[str, dict]] = {}
    for (x, y) in sorted(counts):
        c = counts[(x, y)]
        decisive = c["wins"] + c["losses"]
        out.setdefault(x, {})[y] = {**c, "n": decisive + c["ties"] + c["both_bad"],
                                    "win_rate": c["wins"] / decisive * 100 if decisive else None}
    return out


# --- the reward model as a judge -----------------------------------------------------------------------------------

def judge_agreement(votes: Iterable[Mapping]) -> dict:
    """How often the reward model's preference matches the visitors' A/B votes (percent, Wilson 95% interval).

    The reward model prefers the reply with the higher reward (equal rewards: a tie, which counts as
    disagreeing with a decisive vote; their number is ``judge_ties``). Only votes with a winner ("A"/"B") and
    both rewards count in ``n``; ``excluded`` is the number of "tie"/"both bad" votes left out and ``unscored``
    the decisive votes without rewards. With n = 0, agreement is NaN and the interval [0, 100].
    """
    agree = n = excluded = unscored = judge_ties = 0
    for v in _validated(votes):
        if v["winner"] not in ("A", "B"):
            excluded += 1
            continue
        if "reward_a" not in v:
            unscored += 1
            continue
        n += 1
        diff = v["reward_a"] - v["reward_b"]
        if diff == 0:
            judge_ties += 1
        elif (diff > 0) == (v["winner"] == "A"):
            agree += 1
    lo, hi = wilson_interval(agree, n)
    return {
        "agreement": agree / n * 100 if n else math.nan,
        "ci95": [lo * 100, hi * 100],
        "n": n,
        "excluded": excluded,
        "unscored": unscored,
        "judge_ties": judge_ties,
    }
