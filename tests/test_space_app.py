"""space/app.py end to end: the demo app served on 127.0.0.1 and driven by gradio_client and by headless Chromium."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "space" / "app.py"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def app_module():
    from hhalign.serving import app

    return app


@pytest.fixture(scope="module")
def demo_cache(tiny_models, tmp_path_factory):
    """The demo's models and results, made by the evaluator's offline demo as --demo does on first launch.

    The session's tiny models are copied in first; the evaluator's build_tiny() finds them complete and skips
    rebuilding identical weights.
    """
    import shutil

    from hhalign.eval.results import ensure_demo_results

    cache = tmp_path_factory.mktemp("space-cache")
    for part in ("policy", "reward"):
        shutil.copytree(getattr(tiny_models, part), cache / "models" / part)
    ensure_demo_results(cache)
    return cache


@pytest.fixture(scope="module")
def client(app_module, demo_cache):
    from gradio_client import Client

    cfg = app_module.SpaceConfig(demo=True, cache_dir=str(demo_cache), max_new_tokens=32, default_new_tokens=12,
                                 max_input_chars=500)
    demo = app_module.create(cfg)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, ssr_mode=False)
    try:
        yield Client(url, verbose=False)
    finally:
        demo.close()


def test_module_level_app_has_the_four_tabs_and_only_published_models():
    """space/app.py imported (as Gradio's reload mode does) builds the app from the registry's published models."""
    import gradio as gr

    from hhalign.publish.registry import load_registry

    spec = importlib.util.spec_from_file_location("hhalign_space_app", APP)
    space_app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(space_app)
    assert isinstance(space_app.demo, gr.Blocks)
    config = space_app.demo.get_config_file()
    labels = [c["props"].get("label") for c in config["components"] if c["type"] == "tabitem"]
    assert labels == ["Chat", "Compare", "Results", "About"]
    dropdown = next(c for c in config["components"] if c["type"] == "dropdown" and c["props"]["label"] == "Model")
    offered = [choice[0] for choice in dropdown["props"]["choices"]]
    assert offered == [e.name for e in load_registry() if e.published]


def test_chat_returns_a_streamed_reply_with_its_score(client):
    box, messages, note, details = client.predict("How long should I boil an egg?", "tiny", True, 10, 0.7, 0.9,
                                                  api_name="/chat")
    assert box == ""  # the input box is emptied for the next message
    assert [m["role"] for m in messages] == ["user", "assistant"]
    reply_text = messages[1]["content"][0]["text"]
    assert details["model"] == "tiny" and details["reply"] in reply_text and details["new_tokens"] <= 10
    assert isinstance(details["reward"], float)
    assert details["harmless_label"] == ("harmless" if details["reward"] >= -3 else "harmful")
    assert details["helpful_label"] == ("helpful" if details["reward"] > -2 else "unhelpful")
    assert f"reward {details['reward']:+.2f}" in reply_text and f"**{details['reward']:+.2f}**" in note
    # The session keeps the conversation: a second message continues it, on the adapter model.
    _, messages, _, details = client.predict("And then?", "tiny_lora", True, 6, 0.7, 0.9, api_name="/chat")
    assert len(messages) == 4 and details["model"] == "tiny_lora"
    client.predict(api_name="/clear")


def test_compare_returns_one_scored_reply_per_model(client):
    *cards, scores = client.predict("Tell me a joke", 8, api_name="/compare")
    assert [s["model"] for s in scores] == ["tiny", "tiny_lora"] and len(cards) == 2
    assert all(isinstance(s["reward"], float) and s["reply"] is not None for s in scores)
    top = max(s["reward"] for s in scores)
    assert [s["best"] for s in scores] == [s["reward"] == top for s in scores]
    assert ["best reward" in c for c in cards] == [s["best"] for s in scores]
    assert all(c.startswith(f"### {s['model']}") and "reward" in c for c, s in zip(cards, scores))


def test_results_load_with_table_plots_and_browser(client):
    summary, metrics, rates, boxes, comparisons, judge, f_model, f_cat, f_label, rows = client.predict(
        api_name="/results")
    assert "Demo run" in summary
    assert judge.startswith("**Judge check:** not run")  # the demo has none; the Space says so
    models = [r[0] for r in metrics["data"]]
    assert models[:2] == ["tiny", "tiny_lora"] and "sft_dpo (study)" in models
    assert "[" in metrics["data"][0][1]  # a 95% interval
    assert Path(rates).read_bytes()[:4] == b"\x89PNG" and Path(boxes).read_bytes()[:4] == b"\x89PNG"
    assert comparisons["data"] and rows["data"]
    filtered = client.predict("tiny_lora", "helpful", "all", api_name="/browse")
    assert filtered["data"] and all(r[0] == "tiny_lora" and r[1] == "helpful" for r in filtered["data"])


def test_over_long_and_bad_input_get_clear_messages_and_the_app_survives(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="501 characters long; the limit is 500: shorten it"):
        client.predict("x" * 501, "tiny", True, 8, 0.7, 0.9, api_name="/chat")
    with pytest.raises(AppError, match="greater than maximum value 32"):  # the slider refuses it first
        client.predict("hi", "tiny", True, 33, 0.7, 0.9, api_name="/chat")
    with pytest.raises(AppError, match="empty"):
        client.predict("   ", 8, api_name="/compare")
    with pytest.raises(AppError):
        client.predict("hi", "not-a-model", True, 8, 0.7, 0.9, api_name="/chat")
    *_, details = client.predict("still there?", "tiny", True, 4, 0.7, 0.9, api_name="/chat")
    assert isinstance(details["reward"], float)


def test_launch_errors_are_one_line(app_module, capsys, tmp_path):
    assert app_module.main(["--results", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --results") and "no metrics.json" in err and "\n" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_cli(demo_cache, tmp_path_factory):
    """``python space/app.py --demo --port N`` exactly as a new user runs it (offline, demo cache already built)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("cli") / "app.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(APP), "--demo", "--port", str(port), "--cache_dir",
                                 str(demo_cache)], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.time() + 90
        while "Running on" not in log.read_text():
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"space/app.py --demo did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.browser
def test_browser_chat_shows_reply_and_score_and_results_table(served_cli):
    if not CHROMIUM.exists():
        message = "headless browser test needs Debian chromium at /usr/bin/chromium: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(message)  # .ci/run installs it: a skip there would hide a broken install step
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(served_cli)
            box = page.locator("#chat-input textarea")
            box.wait_for(timeout=30_000)
            assert [t.inner_text() for t in page.get_by_role("tab").all()] == ["Chat", "Compare", "Results", "About"]
            box.fill("How long should I boil an egg?")
            box.press("Enter")
            page.wait_for_function("(document.querySelector('#chat-score')?.innerText || '').includes('reward')",
                                   timeout=60_000)
            score = page.locator("#chat-score").inner_text()
            assert "tiny" in score and ("harmless" in score or "harmful" in score)
            bubble = page.locator("#chatbot .message-row").last.inner_text()
            assert "reward" in bubble and len(bubble.split("reward")[0].strip()) > 0
            page.screenshot(path=str(ARTIFACTS / "space-chat.png"), full_page=True)
            page.get_by_role("tab", name="Results").click()
            table = page.locator("#metrics-table")
            table.wait_for(timeout=10_000)
            text = table.inner_text()
            assert "HmR % [95% CI]" in text and "tiny_lora" in text and "sft_dpo (study)" in text
            page.screenshot(path=str(ARTIFACTS / "space-results.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "space-results.png").stat().st_size > 10_000


def test_options_come_from_the_command_line_and_the_space_variable(app_module, monkeypatch):
    monkeypatch.setenv("HHALIGN_SPACE_ARGS", "--memory-budget-gb 3 --models mine=org/model")
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)  # Spaces set it to 0.0.0.0; here the default applies
    cfg = app_module.parse_config(["--demo", "--port", "7999"])
    assert (cfg.demo, cfg.port, cfg.memory_budget_gb, cfg.models) == (True, 7999, 3.0, ["mine=org/model"])
    assert cfg.host == "127.0.0.1" and cfg.results is None
