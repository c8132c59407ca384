"""hhalign.serving.arena: battles, the votes file (and its Hub copy, offline), the leaderboard from the votes."""

from __future__ import annotations

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from hhalign.errors import HHAlignError
from hhalign.serving.arena import (
    MIN_VOTES,
    NOT_ENOUGH,
    VOTES_FILE,
    Battle,
    VoteStore,
    arena_ranks,
    hub_store,
    judge_votes,
    leaderboard,
    new_battle,
)
from hhalign.stats.ratings import bootstrap_ratings, bradley_terry, judge_agreement


def scored_battle(a="sft", b="base", ra=-1.0, rb=-2.5, category="helpful") -> Battle:
    return Battle(a, b, category, reward_a=ra, reward_b=rb)


def test_a_battle_takes_one_valid_vote_once_both_replies_are_scored():
    battle = Battle("sft", "base")
    with pytest.raises(HHAlignError, match="wait until both replies"):
        battle.vote("A")
    battle.reward_a, battle.reward_b = -1.0, -2.5
    for bad in ("a", "C", "", None, "both_bad"):
        with pytest.raises(HHAlignError, match="must be one of"):
            battle.vote(bad)
    record = battle.vote("both bad")
    assert {k: record[k] for k in ("model_a", "model_b", "winner", "reward_a", "reward_b", "category")} == {
        "model_a": "sft", "model_b": "base", "winner": "both bad", "reward_a": -1.0, "reward_b": -2.5,
        "category": "helpful"}
    assert len(record["id"]) == 32 and record["ts"].endswith("Z")
    with pytest.raises(HHAlignError, match="already voted on this pair"):
        battle.vote("A")


def test_pairs_are_two_different_models_in_either_order():
    rng = random.Random(0)
    seen = {(b.model_a, b.model_b) for b in (new_battle(["x", "y", "z"], rng=rng) for _ in range(200))}
    assert all(a != b for a, b in seen) and len(seen) == 6
    with pytest.raises(HHAlignError, match="at least two models"):
        new_battle(["only"])


def test_votes_are_appended_whole_from_many_threads_and_read_back(tmp_path):
    store = VoteStore(tmp_path / "results")

    def cast(i: int) -> None:
        for j in range(25):
            store.append(scored_battle(ra=float(i), rb=float(j)).vote("A" if (i + j) % 2 else "B"))

    threads = [threading.Thread(target=cast, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "results" / VOTES_FILE).read_text().splitlines()
    assert len(lines) == 200 and all(json.loads(line)["model_a"] == "sft" for line in lines)
    assert len(store.votes()) == 200 and len({v["id"] for v in store.votes()}) == 200
    with pytest.raises(HHAlignError, match="winner"):
        store.append({"model_a": "sft", "model_b": "base", "winner": "C"})
    assert len(store.votes()) == 200


def test_a_torn_last_line_is_dropped_before_the_next_vote(tmp_path):
    store = VoteStore(tmp_path)
    store.append(scored_battle().vote("A"))
    with open(tmp_path / VOTES_FILE, "a") as fh:
        fh.write('{"model_a": "sft", "mod')  # a write killed half way
    assert len(store.votes()) == 1
    store.append(scored_battle().vote("B"))
    assert [v["winner"] for v in store.votes()] == ["A", "B"]


def test_leaderboard_is_the_ratings_modules_bradley_terry_with_the_reward_model_beside_it():
    votes = [scored_battle("sft", "base", -1.0, -2.0).vote(w) for w in ("A", "A", "B", "tie", "A")]
    votes += [scored_battle("dpo", "sft", -1.5, -0.5).vote(w) for w in ("B", "B", "A", "both bad")]
    board = leaderboard(votes, n_boot=200, seed=1)
    expected = bootstrap_ratings(votes, n_boot=200, seed=1)  # every vote enters the fit, dpo's too
    judge = bradley_terry(judge_votes(votes))
    assert MIN_VOTES == 5 and {n: r["n_votes"] for n, r in expected.items()} == {"sft": 9, "base": 5, "dpo": 4}
    rated = [row for row in board.rows if row[0] is not None]
    assert [row[1] for row in rated] == [n for n in expected if n != "dpo"]
    ranks = arena_ranks({n: tuple(expected[n]["ci95"]) for n in ("sft", "base")})
    for row in rated:
        r = expected[row[1]]
        assert row == [ranks[row[1]], row[1], round(r["rating"]), round(r["ci95"][0]), round(r["ci95"][1]),
                       r["n_votes"], round(judge[row[1]])]
    assert board.rows[-1] == [None, "dpo", NOT_ENOUGH, None, None, 4, None]  # its count, no rating
    assert board.agreement == judge_agreement(votes) and board.n_votes == 9
    # The reward model preferred sft in every pair, so it ranks sft first; it agrees with 3 of 4 and 2 of 3 votes.
    assert max(judge, key=judge.get) == "sft"
    assert "agrees with the visitors on 5 of 7 votes with a winner" in board.summary()
    assert "2 tie or both-bad votes left out" in board.summary()
    assert "once it has 5 votes" in board.summary()


def test_one_vote_shows_counts_not_ratings():
    board = leaderboard([scored_battle("sft", "base").vote("A")], n_boot=50)
    assert board.rows == [[None, "base", NOT_ENOUGH, None, None, 1, None],
                          [None, "sft", NOT_ENOUGH, None, None, 1, None]]
    assert board.summary().startswith("1 vote.")


def test_arena_ranks_count_the_models_wholly_above():
    # b's interval overlaps a's: both rank 1; c lies wholly below both: rank 3 (no rank 2, as in Chatbot Arena).
    assert arena_ranks({"a": (1100, 1200), "b": (1050, 1150), "c": (900, 1000)}) == {"a": 1, "b": 1, "c": 3}
    assert arena_ranks({"a": (1100, 1200), "b": (1000, 1100)}) == {"a": 1, "b": 1}  # touching is not above
    assert arena_ranks({"a": (1100, 1200), "b": (1000, 1099)}) == {"a": 1, "b": 2}


def test_tied_models_share_a_rank_and_clear_winners_rank_apart():
    ties = [scored_battle("sft", "base").vote("tie") for _ in range(6)]
    board = leaderboard(ties, n_boot=100)
    assert [(row[0], row[2]) for row in board.rows] == [(1, 1000), (1, 1000)]
    chain = [scored_battle("sft", "base").vote("A") for _ in range(40)]
    chain += [scored_battle("base", "dpo").vote("A") for _ in range(40)]
    board = leaderboard(chain, n_boot=200)
    assert [(row[0], row[1]) for row in board.rows] == [(1, "sft"), (2, "base"), (3, "dpo")]


def test_a_vote_moves_the_leaderboard_and_an_empty_one_says_so():
    empty = leaderboard([])
    assert empty.rows == [] and "No votes yet" in empty.summary() and "5 votes" in empty.summary()
    votes = [scored_battle("sft", "base").vote("tie") for _ in range(5)]
    before = {row[1]: row[2] for row in leaderboard(votes, n_boot=50).rows}
    votes.append(scored_battle("sft", "base").vote("B"))
    after = {row[1]: row[2] for row in leaderboard(votes, n_boot=50).rows}
    assert after["base"] > before["base"] and after["sft"] < before["sft"]


def test_judge_votes_follow_the_higher_reward():
    votes = [{"model_a": "x", "model_b": "y", "winner": "A", "reward_a": r_a, "reward_b": r_b}
             for r_a, r_b in ((1.0, 0.0), (0.0, 1.0), (0.5, 0.5))]
    votes.append({"model_a": "x", "model_b": "y", "winner": "A"})  # no rewards: left out
    assert [v["winner"] for v in judge_votes(votes)] == ["A", "B", "tie"]


class FakeHub:
    """The HfApi calls CommitScheduler and hub_store make, answered offline; earlier launches' files included."""

    def __init__(self, files: dict[str, str] | None = None, fail: bool = False):
        self.files, self.fail = dict(files or {}), fail
        self.calls: list = []
        self.pool = ThreadPoolExecutor(1)

    def create_repo(self, repo_id, private=None, repo_type=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, repo_type, private))
        if self.fail:
            raise OSError("network is unreachable")
        return SimpleNamespace(repo_id=repo_id)

    def run_as_future(self, fn):
        return self.pool.submit(fn)

    def create_commit(self, repo_id, repo_type, operations, commit_message, revision=None):
        for op in operations:
            self.files[op.path_in_repo] = op.path_or_fileobj.read().decode()
        self.calls.append(("create_commit", repo_id, repo_type, [op.path_in_repo for op in operations]))

    def list_repo_files(self, repo_id, repo_type=None):
        return sorted(self.files)

    def hf_hub_download(self, repo_id, filename, repo_type=None):
        path = self.tmp / filename.replace("/", "_")
        path.write_text(self.files[filename])
        return str(path)


def test_votes_reach_a_hub_dataset_through_a_commit_scheduler_offline(tmp_path, monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("the test must not build a real HfApi")

    monkeypatch.setattr(huggingface_hub, "HfApi", no_network)
    earlier = scored_battle("dpo", "base").vote("A")
    hub = FakeHub({"votes/20250101T000000-aaaa/votes.jsonl": json.dumps(earlier) + "\n", "README.md": "# votes\n"})
    hub.tmp = tmp_path
    store = hub_store(tmp_path / "results", "org/space-votes", "hf_secret_token", every_minutes=60, api=hub)
    try:
        assert hub.calls[0] == ("create_repo", "org/space-votes", "dataset", True)
        assert [v["id"] for v in store.votes()] == [earlier["id"]]  # the earlier launch's vote counts
        mine = scored_battle().vote("B")
        store.append(mine)
        store.scheduler.trigger().result(timeout=30)
        pushed = [c for c in hub.calls if c[0] == "create_commit"][-1]
        (path,) = pushed[3]
        assert path.startswith("votes/") and path.endswith("/votes.jsonl") and path != next(iter(hub.files))
        assert json.loads(hub.files[path]) == mine
        assert [v["winner"] for v in store.votes()] == ["A", "B"]
    finally:
        store.scheduler.stop()


def test_an_unreachable_hub_leaves_the_votes_local(tmp_path, caplog):
    hub = FakeHub(fail=True)
    with caplog.at_level("WARNING", logger="hhalign"):
        store = hub_store(tmp_path, "org/space-votes", "hf_secret_token", api=hub)
    assert store.scheduler is None and "votes stay local" in caplog.text and "hf_secret" not in caplog.text
    store.append(scored_battle().vote("A"))
    assert len(store.votes()) == 1
