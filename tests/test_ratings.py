"""hhalign.stats.ratings: vote validation, Bradley-Terry (MLE), bootstrap intervals, online Elo, win matrix, judge
agreement.

Expected values are hand-computed or computed independently here (closed forms, the score equations written out
vote by vote), never taken from the module's own output.
"""

import math
import random
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from hhalign.errors import HHAlignError
from hhalign.stats import ratings as hr


def vote(a: str, b: str, winner: str, **rewards) -> dict:
    return {"model_a": a, "model_b": b, "winner": winner, **rewards}


# x always beats y; both split evenly with z: connected, so the MLE exists, and x must come out on top.
X_OVER_Y = [vote("x", "y", "A")] * 3 + [vote("x", "z", "A"), vote("z", "x", "A"), vote("y", "z", "A"),
                                        vote("z", "y", "A")]
# Three models, every pair met, all four winner kinds; the MLE exists (every model won and lost somewhere).
THREE = (
    [vote("a", "b", "A")] * 6 + [vote("a", "b", "B")] * 2 + [vote("b", "a", "tie")] * 2
    + [vote("b", "c", "A")] * 5 + [vote("c", "b", "A")] * 3 + [vote("b", "c", "both bad")]
    + [vote("a", "c", "A")] * 4 + [vote("c", "a", "A")] * 1
)


def test_import_is_light():
    code = ("import sys, hhalign.stats.ratings; "
            "heavy = [m for m in ('torch', 'transformers', 'scipy', 'pandas', 'sklearn') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


# --- validation -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "checked"),
    [
        (vote("p", "q", "A"), {"model_a": "p", "model_b": "q", "winner": "A"}),
        ({**vote("p", "q", "both bad"), "extra": 1}, {"model_a": "p", "model_b": "q", "winner": "both bad"}),
        (vote("p", "q", "tie", reward_a=1, reward_b=np.float32(-2.5)),
         {"model_a": "p", "model_b": "q", "winner": "tie", "reward_a": 1.0, "reward_b": -2.5}),
        (vote("p", "q", "B", reward_a=None, reward_b=None), {"model_a": "p", "model_b": "q", "winner": "B"}),
    ],
)
def test_validate_vote_accepts(raw, checked):
    assert hr.validate_vote(raw) == checked


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"model_b": "q", "winner": "A"}, "model_a"),
        (vote("", "q", "A"), "model_a"),
        (vote("p", 3, "A"), "model_b"),
        (vote("p", "p", "A"), "model_b"),
        (vote("p", "q", "C"), "winner"),
        (vote("p", "q", "model_a"), "winner"),  # FastChat's spelling is not ours
        ({"model_a": "p", "model_b": "q"}, "winner"),
        (vote("p", "q", "A", reward_a="high", reward_b=0.0), "reward_a"),
        (vote("p", "q", "A", reward_a=0.0, reward_b=math.nan), "reward_b"),
        (vote("p", "q", "A", reward_a=True, reward_b=0.0), "reward_a"),
        (vote("p", "q", "A", reward_a=0.5), "reward_b"),  # one reward without the other
    ],
)
def test_validate_vote_names_the_bad_field(raw, field):
    with pytest.raises(HHAlignError, match=f"field '{field}'"):
        hr.validate_vote(raw)


def test_invalid_votes_are_reported_with_their_position():
    with pytest.raises(HHAlignError, match=r"vote 2: field 'winner'"):
        hr.bradley_terry([vote("p", "q", "A"), vote("q", "p", "A"), vote("p", "q", "a")])
    with pytest.raises(HHAlignError, match="must be a mapping"):
        hr.win_matrix([("p", "q", "A")])
    with pytest.raises(HHAlignError, match="no votes"):
        hr.bradley_terry([])


# --- Bradley-Terry ------------------------------------------------------------------------------------------------

def _score_residuals(votes: list[dict], ratings: dict[str, float], prior_ties: float = 0.0) -> dict[str, float]:
    """Observed minus expected score per model, vote by vote: the log-likelihood gradient (up to ln(10)/400).

    With the prior, each model also has prior_ties virtual ties against an opponent at 1000.
    """
    grad = dict.fromkeys(ratings, 0.0)
    for v in votes:
        a, b = v["model_a"], v["model_b"]
        expected_a = 1 / (1 + 10 ** ((ratings[b] - ratings[a]) / 400))
        score_a = {"A": 1.0, "B": 0.0}.get(v["winner"], 0.5)
        grad[a] += score_a - expected_a
        grad[b] += (1 - score_a) - (1 - expected_a)
    for m, r in ratings.items():
        grad[m] += prior_ties * (0.5 - 1 / (1 + 10 ** ((1000 - r) / 400)))
    return grad


def test_mle_solves_the_score_equations_on_three_models():
    ratings = hr.bradley_terry(THREE, prior_ties=0)
    assert set(ratings) == {"a", "b", "c"}
    assert max(abs(g) for g in _score_residuals(THREE, ratings).values()) < 1e-8
    assert sum(ratings.values()) / 3 == pytest.approx(1000.0, abs=1e-9)  # the documented anchor
    assert list(ratings) == sorted(ratings, key=ratings.get, reverse=True)  # leaderboard order


def test_the_default_prior_barely_moves_determined_ratings():
    mle, default = hr.bradley_terry(THREE, prior_ties=0), hr.bradley_terry(THREE)
    assert all(abs(mle[m] - default[m]) < 0.5 for m in mle)


def test_the_prior_fit_solves_its_own_score_equations():
    strong = hr.bradley_terry(THREE, prior_ties=2.0)
    # The fit is re-centred on 1000 afterwards; undo that shift first. The vote residuals sum to zero, so the
    # summed residual is the prior's alone, which falls as the shift grows: bisect for its zero.
    lo, hi = -200.0, 200.0
    for _ in range(80):
        shift = (lo + hi) / 2
        total = sum(_score_residuals(THREE, {m: r + shift for m, r in strong.items()}, 2.0).values())
        lo, hi = (shift, hi) if total > 0 else (lo, shift)
    residual = _score_residuals(THREE, {m: r + shift for m, r in strong.items()}, 2.0)
    assert max(abs(g) for g in residual.values()) < 1e-8
    # A stronger prior pulls toward the mean.
    mle = hr.bradley_terry(THREE, prior_ties=0)
    assert max(strong.values()) - min(strong.values()) < max(mle.values()) - min(mle.values())


@pytest.mark.parametrize(
    ("votes", "kwargs", "gap"),
    [
        ([vote("x", "y", "A")] * 3 + [vote("x", "y", "B")], {}, 400 * math.log10(3)),
        ([vote("x", "y", "A")] * 2 + [vote("y", "x", "A")] + [vote("x", "y", "tie")] * 2, {}, 400 * math.log10(1.5)),
        ([vote("x", "y", "A")] * 2 + [vote("y", "x", "A")] + [vote("x", "y", "both bad")] * 2,
         {"ties_as_half": False}, 400 * math.log10(2)),
        ([vote("x", "y", "A")] * 3 + [vote("x", "y", "B")], {"scale": 800}, 800 * math.log10(3)),
        ([vote("x", "y", "A")] * 3 + [vote("x", "y", "B")], {"base": math.e, "scale": 1}, math.log(3)),
    ],
)
def test_two_models_closed_form(votes, kwargs, gap):
    # Two models: the MLE sets P(x beats y) to x's share of the win credit, so the gap is scale*log_base(wx/wy).
    ratings = hr.bradley_terry(votes, prior_ties=0, init_rating=1500, **kwargs)
    assert ratings["x"] - ratings["y"] == pytest.approx(gap, rel=1e-9)
    assert (ratings["x"] + ratings["y"]) / 2 == pytest.approx(1500)


def test_a_model_that_always_wins_is_rated_higher():
    ratings = hr.bradley_terry(X_OVER_Y, prior_ties=0)
    assert ratings["x"] > ratings["z"] > ratings["y"]
    assert ratings["x"] - 1000 == pytest.approx(1000 - ratings["y"])  # x and y mirror each other
    # With only x and y there is no MLE: the default prior keeps it finite, and prior_ties=0 says why not.
    only = [vote("x", "y", "A")] * 5
    finite = hr.bradley_terry(only)
    assert 500 < finite["x"] - finite["y"] < 2500
    assert hr.bradley_terry(only, prior_ties=1.0)["x"] - hr.bradley_terry(only, prior_ties=1.0)["y"] < 600
    with pytest.raises(HHAlignError, match="y never beat x"):
        hr.bradley_terry(only, prior_ties=0)
    with pytest.raises(HHAlignError, match="c never beat a, b"):
        hr.bradley_terry([vote("a", "b", "A"), vote("b", "a", "A"), vote("a", "c", "A")], prior_ties=0)


@pytest.mark.parametrize(
    "votes",
    [
        [vote("x", "y", "A")] * 3 + [vote("x", "y", "B")] * 3,
        [vote("x", "y", "tie")],
        [vote("x", "y", "both bad"), vote("y", "x", "tie")],
        [vote("r", "p", "A"), vote("p", "s", "A"), vote("s", "r", "A")],  # rock-paper-scissors
        [vote("r", "p", "A"), vote("p", "s", "A"), vote("s", "r", "A"), vote("p", "r", "A"), vote("s", "p", "A"),
         vote("r", "s", "A"), vote("r", "s", "tie")],
    ],
)
def test_symmetric_votes_give_equal_ratings(votes):
    for prior in (0.0, hr.PRIOR_TIES):
        ratings = hr.bradley_terry(votes, prior_ties=prior)
        assert all(r == pytest.approx(1000.0, abs=1e-9) for r in ratings.values())


def test_bradley_terry_ignores_vote_order_and_sides():
    reference = hr.bradley_terry(THREE)
    shuffled = list(THREE)
    random.Random(4).shuffle(shuffled)
    assert hr.bradley_terry(shuffled) == reference
    flip = {"A": "B", "B": "A", "tie": "tie", "both bad": "both bad"}
    swapped = [vote(v["model_b"], v["model_a"], flip[v["winner"]]) for v in THREE]
    assert hr.bradley_terry(swapped) == pytest.approx(reference, abs=1e-9)


# --- bootstrap --------------------------------------------------------------------------------------------------

def test_bootstrap_ratings():
    out = hr.bootstrap_ratings(THREE * 3, n_boot=300, seed=2)
    point = hr.bradley_terry(THREE * 3)
    assert list(out) == list(point)
    for model, entry in out.items():
        assert entry["rating"] == pytest.approx(point[model])
        lo, hi = entry["ci95"]
        assert lo < entry["rating"] < hi and hi - lo < 400
    assert {m: e["n_votes"] for m, e in out.items()} == {"a": 45, "b": 57, "c": 42}  # 3 x (a-b 10, b-c 9, a-c 5)
    assert hr.bootstrap_ratings(THREE * 3, n_boot=300, seed=2) == out
    assert hr.bootstrap_ratings(THREE * 3, n_boot=300, seed=3) != out


def test_bootstrap_on_sparse_votes_widens_instead_of_failing():
    out = hr.bootstrap_ratings(X_OVER_Y, n_boot=200)
    assert out["x"]["ci95"][1] - out["x"]["ci95"][0] > 300  # resamples where x never lost push far up
    with pytest.raises(HHAlignError, match="bootstrap resample"):
        hr.bootstrap_ratings(X_OVER_Y, n_boot=200, prior_ties=0)


def test_bootstrap_converges_on_a_sparse_arena():
    # 8 models, 15 votes: resamples leave models without votes or unbeaten, held only by the weak prior (a full
    # Newton step from the warm start once overshot there; steps are now capped).
    rng = random.Random(0)
    models = [f"m{i}" for i in range(8)]
    votes = [vote(*rng.sample(models, 2), rng.choice(["A", "A", "B", "tie", "both bad"])) for _ in range(15)]
    out = hr.bootstrap_ratings(votes, n_boot=300)
    assert set(out) == {m for v in votes for m in (v["model_a"], v["model_b"])}
    for entry in out.values():
        assert all(math.isfinite(x) for x in entry["ci95"]) and entry["ci95"][0] <= entry["ci95"][1]


# --- online Elo ---------------------------------------------------------------------------------------------------

def test_online_elo_by_hand():
    out = hr.online_elo([vote("p", "q", "A"), vote("p", "q", "B")], k=4)
    # First vote: equal ratings, expected 0.5, so p +2 and q -2. Second: p (1002) loses to q (998).
    expected_p = 1 / (1 + 10 ** ((998 - 1002) / 400))
    assert out["p"] == pytest.approx(1002 - 4 * expected_p)
    assert out["q"] == pytest.approx(998 + 4 * expected_p)
    assert sum(out.values()) == pytest.approx(2000)  # zero-sum updates
    assert list(out) == ["q", "p"]


def test_online_elo_ties_and_order():
    assert hr.online_elo([vote("p", "q", "tie"), vote("q", "p", "both bad")]) == {"p": 1000.0, "q": 1000.0}
    votes = [vote("p", "q", "A")] * 5 + [vote("q", "p", "A")] * 5
    forward, backward = hr.online_elo(votes, k=32), hr.online_elo(votes[::-1], k=32)
    assert forward["q"] > forward["p"] and backward["p"] > backward["q"]  # recent votes weigh more


# --- win matrix and judge agreement -------------------------------------------------------------------------------

def test_win_matrix():
    votes = [vote("x", "y", "A"), vote("y", "x", "A"), vote("x", "y", "A"), vote("x", "y", "tie"),
             vote("y", "x", "both bad"), vote("x", "z", "tie")]
    out = hr.win_matrix(votes)
    assert out == {
        "x": {"y": {"wins": 2, "losses": 1, "ties": 1, "both_bad": 1, "n": 5, "win_rate": pytest.approx(200 / 3)},
              "z": {"wins": 0, "losses": 0, "ties": 1, "both_bad": 0, "n": 1, "win_rate": None}},
        "y": {"x": {"wins": 1, "losses": 2, "ties": 1, "both_bad": 1, "n": 5, "win_rate": pytest.approx(100 / 3)}},
        "z": {"x": {"wins": 0, "losses": 0, "ties": 1, "both_bad": 0, "n": 1, "win_rate": None}},
    }
    assert hr.win_matrix([]) == {}


def test_judge_agreement():
    votes = [
        vote("x", "y", "A", reward_a=-1.0, reward_b=-3.0),  # agrees
        vote("x", "y", "B", reward_a=-1.0, reward_b=-3.0),  # disagrees
        vote("y", "x", "B", reward_a=-4.0, reward_b=0.5),  # agrees
        vote("x", "y", "A", reward_a=2.0, reward_b=2.0),  # reward tie on a decisive vote: disagrees
        vote("x", "y", "tie", reward_a=1.0, reward_b=0.0),  # excluded
        vote("x", "y", "both bad", reward_a=1.0, reward_b=0.0),  # excluded
        vote("x", "y", "A"),  # unscored
    ]
    out = hr.judge_agreement(votes)
    assert (out["n"], out["excluded"], out["unscored"], out["judge_ties"]) == (4, 2, 1, 1)
    assert out["agreement"] == pytest.approx(50.0)
    # Wilson for 2 of 4: centre 0.5, half-width 1.96/(4+1.96^2) * sqrt(1 + 1.96^2/4).
    z = 1.959963984540054
    half = z / (4 + z * z) * math.sqrt(1 + z * z / 4)
    assert out["ci95"] == pytest.approx([100 * (0.5 - half), 100 * (0.5 + half)])


def test_judge_agreement_without_decisive_votes():
    out = hr.judge_agreement([vote("x", "y", "tie", reward_a=1.0, reward_b=0.0)])
    assert math.isnan(out["agreement"]) and out["ci95"] == [0.0, 100.0] and out["excluded"] == 1
