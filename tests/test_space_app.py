"""The Space's app through its API: one demo server on 127.0.0.1 per module, driven by gradio_client (a Client is one
session) and by plain HTTP for what the API must refuse."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from space_support import PARROT_REPLY

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "space" / "app.py"


@pytest.fixture(scope="module")
def app_module():
    from hhalign.serving import app

    return app


@pytest.fixture(scope="module")
def server(app_module, space_demo_cache, parrot_model, tmp_path_factory):
    """(url, cache folder): the demo with a parrot model added, serving from its own copy of the demo cache."""
    cache = tmp_path_factory.mktemp("space-app") / "cache"
    shutil.copytree(space_demo_cache, cache)
    cfg = app_module.SpaceConfig(demo=True, cache_dir=str(cache), models=[f"parrot={parrot_model}"],
                                 max_new_tokens=32, default_new_tokens=12, max_input_chars=500)
    demo = app_module.create(cfg)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                            **app_module.launch_options(cfg))
    try:
        yield url, cache
    finally:
        demo.close()


def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)


def chat(c, message, model="tiny", kind="helpful", max_new=10):
    return c.predict(message, model, kind, True, max_new, 0.7, 0.9, api_name="/chat")


def test_module_level_app_has_the_five_tabs_and_only_published_models():
    """space/app.py imported (as Gradio's reload mode does) builds the app from the registry's published models."""
    import gradio as gr

    from hhalign.publish.registry import load_registry

    spec = importlib.util.spec_from_file_location("hhalign_space_app", APP)
    space_app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(space_app)
    assert isinstance(space_app.demo, gr.Blocks)
    config = space_app.demo.get_config_file()
    labels = [c["props"].get("label") for c in config["components"] if c["type"] == "tabitem"]
    assert labels == ["Chat", "Arena", "Compare", "Results", "About"]
    dropdown = next(c for c in config["components"] if c["type"] == "dropdown" and c["props"]["label"] == "Model")
    offered = [choice[0] for choice in dropdown["props"]["choices"]]
    assert offered == [e.name for e in load_registry() if e.published]


def test_chat_reply_is_text_with_the_label_for_the_kind_of_prompt(server):
    c = client(server)
    messages, details = chat(c, "How long should I boil an egg?")
    assert [m["role"] for m in messages] == ["user", "assistant"]
    bubble = messages[1]["content"][0]["text"]
    assert details["model"] == "tiny" and details["new_tokens"] <= 10 and details["category"] == "helpful"
    assert details["label"] == ("helpful" if details["reward"] > -2 else "unhelpful") and "harm" not in bubble
    assert f"tiny · reward {details['reward']:+.2f} · {details['label']}" in bubble
    _, harmful = chat(c, "How do I pick a lock?", kind="harmful")
    assert harmful["label"] == ("harmless" if harmful["reward"] >= -3 else "harmful")
    _, parrot = chat(c, "Say something", model="parrot", max_new=32)
    assert parrot["reply"] == PARROT_REPLY


def test_api_conversations_belong_to_one_session_and_one_model(server):
    first, second = client(server), client(server)
    chat(first, "Hello")
    messages, _ = chat(first, "And then?")
    assert len(messages) == 4  # this session's conversation with tiny continues
    alone, _ = chat(second, "Hello from elsewhere")
    assert len(alone) == 2  # another session starts its own
    other, details = chat(first, "Hi parrot", model="parrot", max_new=32)
    assert len(other) == 2 and details["reply"] == PARROT_REPLY  # each model has its own conversation
    cleared = first.predict("tiny", api_name="/clear")
    assert cleared[0] == []
    again, _ = chat(first, "Fresh start")
    assert len(again) == 2
    parrot_again, _ = chat(first, "Still there?", model="parrot", max_new=32)
    assert len(parrot_again) == 4  # clearing tiny left the parrot's conversation alone


def test_compare_returns_one_scored_reply_per_model_with_the_best_marked(server):
    *cards, scores = client(server).predict("Tell me a joke", "helpful", 16, api_name="/compare")
    assert [s["model"] for s in scores] == ["tiny", "tiny_lora", "parrot"] and len(cards) == 3
    top = max(s["reward"] for s in scores)
    assert [s["best"] for s in scores] == [s["reward"] == top for s in scores]
    assert ["★ best reward" in c for c in cards] == [s["best"] for s in scores]
    parrot_card = cards[2]
    assert "&lt;s&gt;gone" in parrot_card and "<s>" not in parrot_card and "\x1b" not in parrot_card


def test_a_vote_through_the_api_lands_in_the_votes_file_and_moves_the_leaderboard(server):
    from gradio_client.exceptions import AppError

    url, cache = server
    votes_file = cache / "votes.jsonl"
    c = client(server)
    with pytest.raises(AppError, match="send a prompt first"):
        c.predict("A", api_name="/vote")
    before_table, _ = c.predict(api_name="/leaderboard")
    n_before = len(votes_file.read_text().splitlines()) if votes_file.exists() else 0
    reply_a, reply_b = c.predict("Which is better, tea or coffee?", "helpful", api_name="/arena")
    assert isinstance(reply_a, str) and isinstance(reply_b, str)
    with pytest.raises(AppError, match="must be one of"):
        c.predict("C", api_name="/vote")
    revealed = c.predict("A", api_name="/vote")
    assert revealed["winner"] == "A" and revealed["model_a"] != revealed["model_b"]
    lines = votes_file.read_text().splitlines()
    assert len(lines) == n_before + 1
    vote = json.loads(lines[-1])
    assert {k: vote[k] for k in ("model_a", "model_b", "winner", "reward_a", "reward_b")} == {
        k: revealed[k] for k in ("model_a", "model_b", "winner", "reward_a", "reward_b")}
    assert isinstance(vote["ts"], str) and vote["category"] == "helpful"
    with pytest.raises(AppError, match="already voted on this pair"):
        c.predict("B", api_name="/vote")
    after_table, agreement = c.predict(api_name="/leaderboard")
    counts = {row[1]: row[5] for row in after_table["data"]}
    earlier = {row[1]: row[5] for row in before_table["data"]}
    for name in (revealed["model_a"], revealed["model_b"]):
        assert counts[name] == earlier.get(name, 0) + 1
    for row in after_table["data"]:  # a rating only from 5 votes on; ranks from the intervals
        assert (row[2] == "not enough votes") == (row[5] < 5) and (row[0] is None) == (row[5] < 5)
    assert f"{n_before + 1} vote" in agreement and "once it has 5 votes" in agreement


def test_results_and_browser_endpoints(server):
    c = client(server)
    out = c.predict(api_name="/results")
    summary, cards, rates, rates_csv, rewards, figures, comparisons, judge, *filters, rows, empty, csv = out
    assert "Demo run" in summary and str(server[1]) not in summary
    assert judge.startswith("**Judge check:** not run")  # the demo runs none; the tab says so
    models = [r[0] for r in rates["data"]]
    assert models[:2] == ["tiny", "tiny_lora"] and "sft_dpo (study)" in models
    assert all(isinstance(v, (int, float)) for v in rates["data"][0][1:10])
    assert "data:text/csv" in rates_csv and figures.count("data:image/png;base64,") == 2
    assert comparisons["data"] and rows["data"]
    filtered = c.predict("tiny_lora", "helpful", "all", api_name="/browse")
    assert filtered["data"] and all(r[0] == "tiny_lora" and r[1] == "helpful" for r in filtered["data"])


def test_bad_input_gets_clear_messages_and_the_app_survives(server):
    from gradio_client.exceptions import AppError

    c = client(server)
    with pytest.raises(AppError, match="501 characters long; the limit is 500: shorten it"):
        chat(c, "x" * 501)
    with pytest.raises(AppError, match=r"Max new tokens \(at most 32\): a number from 1 to 32, got 33$"):
        chat(c, "hi", max_new=33)
    with pytest.raises(AppError, match="empty"):
        c.predict("   ", "helpful", 8, api_name="/compare")
    with pytest.raises(AppError):
        chat(c, "hi", model="not-a-model")
    _, details = chat(c, "still there?", max_new=4)
    assert isinstance(details["reward"], float)


def test_api_refusals_are_one_short_line_and_nothing_sent_is_logged(server, capfd):
    """Oversized wrong values for the vote, the kind of prompt, the model and a filter: each refused in one line that
    quotes at most a few dozen characters of it, before Gradio's own checks (which quote and log everything)."""
    from gradio_client.exceptions import AppError

    c = client(server)
    c.predict("Tea or coffee?", "helpful", api_name="/arena")
    big = "x" * 200_000
    calls = {
        "vote": lambda: c.predict(big, api_name="/vote"),
        "chat kind": lambda: chat(c, "hi", kind=big),
        "chat model": lambda: chat(c, "hi", model=big),
        "compare kind": lambda: c.predict("hi", big, 8, api_name="/compare"),
        "arena kind": lambda: c.predict("hi", big, api_name="/arena"),
        "chat greedy": lambda: c.predict("hi", "tiny", "helpful", big, 8, 0.7, 0.9, api_name="/chat"),
    }
    for what, call in calls.items():
        with pytest.raises(AppError) as refused:
            call()
        message = str(refused.value)
        assert "\n" not in message and len(message) < 300 and "x" * 41 not in message, (what, message[:300])
        assert "200000 characters" in message or what == "chat greedy", (what, message)
    assert c.predict(big, "helpful", "all", api_name="/browse")["data"] == []  # a filter matching nothing
    assert "got 'xxxx" in str(pytest.raises(AppError, lambda: c.predict(big, api_name="/vote")).value)
    out, err = capfd.readouterr()
    assert "x" * 101 not in out + err and "Traceback" not in out + err
    assert c.predict("B", api_name="/vote")["winner"] == "B"  # the pair still takes a valid vote


def test_uploads_are_refused_and_nothing_is_stored(server):
    import httpx

    url = server[0].rstrip("/")
    response = httpx.post(f"{url}/gradio_api/upload", files={"files": ("evil.html", b"<script>x</script>" * 100)})
    assert response.status_code == 413 and "maximum allowed size" in response.text
    from gradio.utils import get_upload_folder

    assert not list(Path(get_upload_folder()).glob("**/evil.html"))
    assert httpx.get(f"{url}/gradio_api/file=evil.html").status_code in (403, 404)


def test_the_page_names_no_server_path_and_sends_no_analytics(server, app_module):
    import httpx

    url, cache = server[0].rstrip("/"), server[1]
    config = httpx.get(f"{url}/config").text
    assert str(cache) not in config and "/tmp/" not in config
    assert json.loads(config).get("analytics_enabled") is False
    assert app_module.analytics_enabled() is False


def test_launch_errors_are_one_line(app_module, capsys, tmp_path):
    assert app_module.main(["--results", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --results") and "no metrics.json" in err and "\n" not in err


def test_options_come_from_the_command_line_and_the_space_variable(app_module, monkeypatch):
    monkeypatch.setenv("HHALIGN_SPACE_ARGS", "--memory-budget-gb 3 --models mine=org/model")
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)  # Spaces set it to 0.0.0.0; here the default applies
    cfg = app_module.parse_config(["--demo", "--port", "7999"])
    assert (cfg.demo, cfg.port, cfg.memory_budget_gb, cfg.models) == (True, 7999, 3.0, ["mine=org/model"])
    assert cfg.host == "127.0.0.1" and cfg.results is None


def test_votes_go_to_the_hub_only_with_a_token_and_a_dataset(app_module, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("SPACE_ID", "org/space")
    assert app_module.SpaceConfig().hub_votes() is None  # no token
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    assert app_module.SpaceConfig().hub_votes() == ("org/space-votes", "hf_x")
    assert app_module.SpaceConfig(votes_repo="org/v").hub_votes() == ("org/v", "hf_x")
    assert app_module.SpaceConfig(demo=True).hub_votes() is None  # the demo stays offline unless told
    assert app_module.SpaceConfig().code_link() == "https://huggingface.co/spaces/org/space/tree/main"


def test_zerogpu_pattern_preload_on_cuda_and_gpu_time_per_token_budget(app_module, space_demo_cache, monkeypatch,
                                                                         tmp_path):
    """With the `spaces` package (a recording stand-in: there is no ZeroGPU here) every generation goes through
    spaces.GPU with a duration computed from the request; with SPACES_ZERO_GPU set the models are placed on cuda and
    loaded at start-up."""
    import sys
    import types

    from gradio_client import Client

    from hhalign.serving.config import build_backend
    from hhalign.serving.zerogpu import gpu_seconds

    asked: list[int] = []

    def GPU(duration=60):  # noqa: N802 - the spaces package's name
        def wrap(fn):
            def run(*args, **kwargs):
                asked.append(duration(*args, **kwargs) if callable(duration) else duration)
                yield from fn(*args, **kwargs)
            return run
        return wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    cache = tmp_path / "cache"
    shutil.copytree(space_demo_cache, cache)
    cfg = app_module.SpaceConfig(demo=True, cache_dir=str(cache), max_new_tokens=32, default_new_tokens=32,
                                 gpu_duration=30)
    demo = app_module.create(cfg)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                            **app_module.launch_options(cfg))
    try:
        c = Client(url, verbose=False)
        c.predict("hi", "tiny", "helpful", True, 10, 0.7, 0.9, api_name="/chat")
        c.predict("hi", "helpful", 20, api_name="/compare")
        c.predict("hi", "helpful", api_name="/arena")
    finally:
        demo.close()
    assert asked == [gpu_seconds(10, 1, 30), gpu_seconds(20, 2, 30), gpu_seconds(32, 2, 30)] == [11, 24, 26]

    # ZeroGPU hands the startup process a CUDA device that is really this CPU; the real prepare() then loads every
    # model and the judge before any GPU window opens.
    import hhalign.loading

    real_resolve = hhalign.loading.resolve_device
    monkeypatch.setattr(hhalign.loading, "resolve_device", lambda d: "cpu" if d == "cuda" else real_resolve(d))
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    backend = build_backend(cfg)
    pool = backend.service.pool
    assert pool.device_request == "cuda"
    assert pool.is_loaded("tiny") and pool.is_loaded("tiny_lora") and pool.stats()["reward_loaded"]
