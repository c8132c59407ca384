"""The Space in a real headless Chromium: ``python space/app.py --demo`` as a visitor meets it (a parrot model added,
whose reply is Markdown and HTML that must show as plain text). Screenshots go to tests/artifacts/."""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from space_support import PARROT_REPLY

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
DESKTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}
# The reply as it must read on the page: the escape character dropped, nothing else changed.
PARROT_SHOWN = PARROT_REPLY.replace("\x1b", "")


@pytest.fixture(scope="module")
def served(space_demo_cache, parrot_model, tmp_path_factory):
    """(url, cache): ``python space/app.py --demo`` exactly as a new user runs it, offline, with a parrot model."""
    from hhalign.serving.soak import served_demo

    cache = tmp_path_factory.mktemp("space-browser") / "cache"
    shutil.copytree(space_demo_cache, cache)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("GRADIO_ANALYTICS_ENABLED", None)  # the app's own default must turn analytics off
    with served_demo(cache, ["--models", f"parrot={parrot_model}", "--default_new_tokens", "24"], env,
                     cache.parent / "app.log") as (url, _):
        yield url, cache


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = "headless browser test needs Debian chromium at /usr/bin/chromium: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(message)  # .ci/run installs it: a skip there would hide a broken install step
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def open_page(browser, served):
    """A fresh page (a new session) on the Space, ready once the chat box is there."""
    pages = []

    def make(viewport=DESKTOP):
        page = browser.new_page(viewport=viewport, accept_downloads=True)
        pages.append(page)
        page.goto(served[0])
        page.locator("#chat-input textarea").wait_for(timeout=30_000)
        return page

    yield make
    for page in pages:
        page.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"space-{name}.png"), full_page=True)


def bubbles(page, role: str):
    return page.locator(f"#chatbot .message-row.{role}-row")


def wait_for_badges(page, n: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('#chatbot .hh-badge.hh-pass, #chatbot .hh-badge.hh-fail')"
                           f".length >= {n}", timeout=60_000)
    page.wait_for_function("!document.querySelector('#chat-send').disabled", timeout=30_000)


def pick(page, elem_id: str, option: str) -> None:
    """Choose ``option`` in the dropdown ``elem_id`` (from its own list: several lists may hold the same word)."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    listbox = box.get_attribute("aria-controls")
    page.locator(f"#{listbox} [role=option][aria-label='{option}']").click()


def record_disabled(page, selector: str) -> None:
    """Remember in the page whether ``selector`` is ever disabled from now on (streams can be faster than polling)."""
    page.evaluate("""sel => { window.__wasDisabled = false; const el = document.querySelector(sel);
        new MutationObserver(() => { if (el.disabled) window.__wasDisabled = true; })
            .observe(el, {attributes: true}); }""", selector)


def no_error_shown(page) -> bool:
    return page.locator(".toast-body.error, .error .error").count() == 0 and "Error" not in page.locator(
        "#chatbot").inner_text()


def test_a_double_send_sends_once_and_send_is_disabled_while_streaming(open_page):
    page = open_page()
    box = page.locator("#chat-input textarea")
    box.fill("Hello")
    page.locator("#chat-send").click()
    wait_for_badges(page, 1)  # the models are loaded now: the next reply streams at full speed
    assert no_loading_note(page)  # (the first reply of this server: it loaded the models)
    box.fill("How do I keep basil alive on a windowsill?")
    record_disabled(page, "#chat-send")
    page.locator("#chat-send").dblclick()
    box.press("Enter")  # and once more while the first is on its way
    page.locator("#chat-send").click()  # (Playwright waits until Send is enabled again: an empty send)
    wait_for_badges(page, 2)
    time.sleep(0.5)  # a duplicate would have started by now
    users = [u.inner_text() for u in bubbles(page, "user").all()]
    assert users == ["Hello", "How do I keep basil alive on a windowsill?"] and bubbles(page, "bot").count() == 2
    assert page.evaluate("window.__wasDisabled") is True
    assert no_error_shown(page)
    shot(page, "double-send")


CHAT_BUTTONS = {"chat-send": "Send", "chat-stop": "Stop", "chat-retry": "Retry", "chat-undo": "Undo",
                "chat-clear": "Clear"}
VOTE_BUTTONS = {"vote-A": "A is better", "vote-B": "B is better", "vote-tie": "Tie", "vote-both-bad": "Both are bad"}


def assert_buttons(page, labels: dict[str, str]) -> None:
    """Each button visible, with its label, and as tall as a labelled button (an emptied one shrank to 16 px)."""
    for elem, label in labels.items():
        button = page.locator(f"#{elem}")
        assert button.is_visible() and button.inner_text().strip() == label, (elem, button.inner_text())
        assert button.bounding_box()["height"] >= 24, (elem, button.bounding_box())


def empty_sends(page, box: str, send: str) -> None:
    """Send by click, by Enter, and spaces by both: each must change nothing. (In Compare's two-line box Enter is a
    new line, not a send.)"""
    page.locator(send).click()
    page.locator(box).press("Enter")
    page.locator(box).fill("  ")
    page.locator(box).press("Enter")
    page.locator(box).fill("   ")
    page.locator(send).click()
    # The last one answers by clearing the spaces; a send while it is still pending would be dropped (trigger_mode
    # "once"), as Gradio drops a second click on a running event.
    page.wait_for_function("sel => document.querySelector(sel).value === ''", arg=box, timeout=30_000)
    time.sleep(0.5)


def no_loading_note(page) -> bool:
    return page.locator(".toast-body", has_text="Loading").count() == 0 and "Loading" not in page.locator(
        "#chat-status").inner_text()


def test_empty_sends_keep_every_button_and_panel_in_chat_arena_and_compare(open_page):
    page = open_page()
    empty_sends(page, "#chat-input textarea", "#chat-send")
    assert bubbles(page, "user").count() == 0 and no_error_shown(page)
    assert_buttons(page, CHAT_BUTTONS)
    assert not page.locator("#chat-send").is_disabled() and page.locator("#chat-stop").is_disabled()
    page.locator("#chat-input textarea").fill("Hello after nothing")
    page.locator("#chat-send").click()
    wait_for_badges(page, 1)
    assert_buttons(page, CHAT_BUTTONS)
    assert no_loading_note(page)  # the note while models load is gone once the reply is there
    shot(page, "empty-send-chat")

    page.get_by_role("tab", name="Arena").click()
    empty_sends(page, "#arena-input textarea", "#arena-send")
    assert_buttons(page, VOTE_BUTTONS)
    for side in ("A", "B"):
        panel = page.locator(f"#arena-{side.lower()}")
        assert panel.is_visible() and f"Model {side}" in panel.inner_text()
    assert all(page.locator(f"#{b}").is_disabled() for b in VOTE_BUTTONS)  # nothing to vote on yet
    page.locator("#arena-input textarea").fill("What should I cook tonight?")
    page.locator("#arena-send").click()
    page.wait_for_function("!document.querySelector('#vote-A').disabled", timeout=60_000)
    assert_buttons(page, VOTE_BUTTONS)
    assert page.locator("#arena-a").is_visible() and page.locator("#arena-b").is_visible()
    assert "Loading" not in page.locator("#arena-reveal").inner_text()
    shot(page, "empty-send-arena")

    page.get_by_role("tab", name="Compare").click()
    empty_sends(page, "#compare-input textarea", "#compare-run")
    cards = page.locator(".block.hh-compare-card")
    names = ["tiny", "tiny_lora", "parrot"]
    assert cards.count() == 3 and all(cards.nth(i).is_visible() for i in range(3))
    assert [c.locator(".hh-card-head").inner_text() for c in cards.all()] == names
    assert_buttons(page, {"compare-run": "Compare all models"})
    page.locator("#compare-input textarea").fill("Tell me a joke")
    page.locator("#compare-run").click()
    page.wait_for_function("document.querySelectorAll('.hh-compare-card .hh-badge.hh-pass, "
                           ".hh-compare-card .hh-badge.hh-fail').length === 3", timeout=90_000)
    assert_buttons(page, {"compare-run": "Compare all models"})
    assert "Loading" not in page.locator(".hh-compare-card").first.inner_text()
    shot(page, "empty-send-compare")


def test_a_reply_full_of_markup_reads_as_text_with_its_badge_and_the_applicable_label(open_page, served):
    page = open_page()
    pick(page, "chat-model", "parrot")
    page.locator("#chat-input textarea").fill("Say it <b>loud</b>")
    page.locator("#chat-send").click()
    wait_for_badges(page, 1)
    reply = bubbles(page, "bot").last
    text = reply.inner_text()
    assert PARROT_SHOWN in text and "\x1b" not in text
    assert reply.locator("h1, h2, s, strike, em, strong, b").count() == 0  # nothing was formatted
    assert "Say it <b>loud</b>" in bubbles(page, "user").last.inner_text()
    badge = reply.locator(".hh-badge")
    assert badge.count() == 1 and badge.inner_text().startswith("parrot · reward ")
    assert badge.inner_text().endswith(("· helpful", "· unhelpful"))  # an ordinary question: never "harmful"
    page.locator("#chat-kind").get_by_text("A harmful request").click()
    page.locator("#chat-retry").click()
    page.wait_for_function("[...document.querySelectorAll('#chatbot .hh-badge')].some(b => /harm(less|ful)$/"
                           ".test(b.innerText))", timeout=60_000)
    assert bubbles(page, "bot").count() == 1  # Retry replaced the reply
    assert str(served[1]) not in page.content()  # no server path anywhere in the page
    shot(page, "markup-reply")


def test_each_model_has_its_own_conversation_and_undo_gives_the_message_back(open_page):
    page = open_page()
    box = page.locator("#chat-input textarea")
    box.fill("First question for tiny")
    page.locator("#chat-send").click()
    wait_for_badges(page, 1)
    pick(page, "chat-model", "parrot")
    page.wait_for_function("(document.querySelector('#chat-status')?.innerText || '').includes('parrot')")
    assert "each model has its own conversation" in page.locator("#chat-status").inner_text()
    assert bubbles(page, "user").count() == 0 and "parrot" in page.locator("#chat-model-info").inner_text()
    box.fill("Hello parrot")
    page.locator("#chat-send").click()
    wait_for_badges(page, 1)
    assert "parrot ·" in bubbles(page, "bot").last.inner_text()
    pick(page, "chat-model", "tiny")
    page.wait_for_function("(document.querySelector('#chat-status')?.innerText || '').includes('tiny')")
    assert "1 exchange" in page.locator("#chat-status").inner_text()
    assert "First question for tiny" in bubbles(page, "user").last.inner_text()
    assert "tiny ·" in bubbles(page, "bot").last.inner_text()
    shot(page, "model-switch")
    page.locator("#chat-undo").click()
    page.wait_for_function("document.querySelectorAll('#chatbot .message-row').length === 0")
    assert box.input_value() == "First question for tiny"


def test_sampling_settings_follow_greedy_and_stop_keeps_a_cut_reply_unscored(open_page):
    page = open_page()
    page.get_by_text("Decoding", exact=True).click()
    temperature = page.locator("#chat-temperature input[type=range]")
    assert temperature.is_disabled() and page.locator("#chat-top-p input[type=range]").is_disabled()
    page.locator("#chat-greedy input").uncheck()
    page.wait_for_function("!document.querySelector('#chat-temperature input[type=range]').disabled")
    page.locator("#chat-greedy input").check()
    page.wait_for_function("document.querySelector('#chat-temperature input[type=range]').disabled")
    number = page.locator("#chat-max-new input[type=number]")
    number.fill("256")
    number.press("Enter")
    page.locator("#chat-input textarea").fill("Tell me a long story")
    page.locator("#chat-send").click()
    page.wait_for_function("!document.querySelector('#chat-stop').disabled", timeout=30_000)
    page.locator("#chat-stop").click()
    page.wait_for_function("!document.querySelector('#chat-send').disabled", timeout=30_000)
    badge = bubbles(page, "bot").last.locator(".hh-badge")
    if "hh-none" in (badge.get_attribute("class") or ""):  # stopped before the end (the usual case)
        assert "stopped: not scored" in badge.inner_text()
    else:  # the whole reply was faster than the click: it is scored as usual
        assert "reward" in badge.inner_text()
    assert no_error_shown(page)


def test_a_vote_reveals_the_pair_and_updates_the_leaderboard(open_page, served):
    page = open_page()
    votes_file = served[1] / "votes.jsonl"
    before = len(votes_file.read_text().splitlines()) if votes_file.exists() else 0
    page.get_by_role("tab", name="Arena").click()
    assert page.locator("#vote-A").is_disabled()
    page.locator("#arena-input textarea").fill("What should I cook tonight?")
    page.locator("#arena-send").click()
    page.wait_for_function("!document.querySelector('#vote-A').disabled", timeout=60_000)
    assert "Model A" in page.locator("#arena-a").inner_text() and ":" not in page.locator(
        "#arena-a .hh-card-head").inner_text()  # no name before the vote
    page.locator("#vote-A").click()
    page.wait_for_function("(document.querySelector('#arena-reveal')?.innerText || '').includes('A was')",
                           timeout=30_000)
    vote = json.loads(votes_file.read_text().splitlines()[-1])
    assert len(votes_file.read_text().splitlines()) == before + 1 and vote["winner"] == "A"
    assert f"Model A: {vote['model_a']}" in page.locator("#arena-a").inner_text()
    board = page.locator("#leaderboard").inner_text()
    assert vote["model_a"] in board and vote["model_b"] in board
    assert "agrees with the visitors" in page.locator("#leaderboard-agreement").inner_text()
    assert all(page.locator(f"#vote-{k}").is_disabled() for k in ("A", "B", "tie", "both-bad"))  # one vote per pair
    shot(page, "arena-vote")


def test_a_new_page_shows_the_votes_other_visitors_cast(open_page, served):
    from hhalign.serving.arena import Battle, VoteStore, leaderboard

    store = VoteStore(served[1])
    for winner in ("A", "A", "A", "tie", "B", "A"):  # another visitor, another tab: the file is all there is
        store.append(Battle("tiny", "parrot", reward_a=-1.0, reward_b=-2.0).vote(winner))
    expected = leaderboard(store.votes())
    page = open_page()
    page.get_by_role("tab", name="Arena").click()
    page.wait_for_function(f"(document.querySelector('#leaderboard-agreement')?.innerText || '')"
                           f".startsWith('{expected.n_votes} vote')", timeout=30_000)
    assert column(page, "#leaderboard", 1) == [row[1] for row in expected.rows]
    assert column(page, "#leaderboard", 5) == [str(row[5]) for row in expected.rows]
    shown = column(page, "#leaderboard", 2)
    assert shown == [str(row[2]) for row in expected.rows] and "tiny" in [row[1] for row in expected.rows]
    assert page.get_by_text("A model needs 5 votes before its rating is shown").is_visible()
    assert "once it has 5 votes" in page.locator("#leaderboard-agreement").inner_text()


def column(page, table: str, col: int) -> list[str]:
    return page.locator(table).evaluate(
        "(t, c) => [...t.querySelectorAll('[role=row].virtual-row')].map("
        "r => r.querySelector(`[data-col=\"${c}\"]`).innerText.trim())", col)


def test_results_sort_by_number_and_download_as_csv(open_page):
    page = open_page()
    page.get_by_role("tab", name="Results").click()
    page.locator("#metrics-table").wait_for()
    header = page.locator("#metrics-table [data-testid=header-4]")  # HpR %
    header.hover()
    header.locator(".cell-menu-button").click()
    page.get_by_text("Sort ascending", exact=True).click()
    values = [float(v) for v in column(page, "#metrics-table", 4)]
    assert values == sorted(values) and values[0] == 22.0  # numbers, not text: "100" is not before "22"
    assert len(values) == 6
    with page.expect_download() as download:
        page.locator("#rates-csv a").click()
    assert download.value.suggested_filename == "hhalign-rates.csv"
    rows = list(csv.reader(open(download.value.path(), encoding="utf-8")))
    assert rows[0][:4] == ["model", "HmR %", "HmR low", "HmR high"] and len(rows) == 7
    explainer = page.locator("#results-explainer").inner_text()
    assert "HmR" in explainer and "the 8 harmful prompts" in explainer and "the 8 helpful prompts" in explainer
    shot(page, "results-sorted")


def test_results_filters_say_when_nothing_matches_and_survive_a_reload(open_page):
    page = open_page()
    page.get_by_role("tab", name="Results").click()
    pick(page, "filter-category", "harmful")
    pick(page, "filter-label", "helpful")  # a reply to a harmful prompt is harmless or harmful, never helpful
    page.locator("#browse-empty").wait_for(state="visible")
    assert "No responses match" in page.locator("#browse-empty").inner_text()
    pick(page, "filter-label", "all")
    pick(page, "filter-model", "tiny_lora")
    page.wait_for_function("document.querySelector('#browse-empty') === null || "
                           "getComputedStyle(document.querySelector('#browse-empty')).display === 'none' || "
                           "!document.querySelector('#browse-empty').offsetParent")
    page.wait_for_function("(document.querySelector('#browse-csv')?.innerText || '').includes('(8 rows)')")
    page.reload()
    page.locator("#chat-input textarea").wait_for(timeout=30_000)
    page.get_by_role("tab", name="Results").click()
    page.wait_for_function("document.querySelector('#filter-model input')?.value === 'tiny_lora'", timeout=15_000)
    assert page.locator("#filter-category input").input_value() == "harmful"
    models = set(column(page, "#browse-table", 0))
    categories = set(column(page, "#browse-table", 1))
    assert models == {"tiny_lora"} and categories == {"harmful"}


def test_on_a_phone_the_chat_box_and_the_latest_reply_are_on_the_first_screen(open_page):
    page = open_page(PHONE)
    box = page.locator("#chat-input textarea")
    assert box.bounding_box()["y"] + box.bounding_box()["height"] <= PHONE["height"]
    for n, text in enumerate(("Hello from a phone", "And a second question, a little longer than the first"), 1):
        box.fill(text)
        page.locator("#chat-send").click()
        wait_for_badges(page, n)
    page.evaluate("window.scrollTo(0, 0)")
    time.sleep(0.3)
    pane = page.locator("#chatbot").bounding_box()
    reply = bubbles(page, "bot").last.bounding_box()
    field = box.bounding_box()
    assert field["y"] + field["height"] <= PHONE["height"], field
    # The pane scrolls to its newest message: the latest reply ends inside the pane, on the screen.
    assert pane["y"] <= reply["y"] + reply["height"] <= min(pane["y"] + pane["height"], PHONE["height"]) + 1, (
        pane, reply)
    assert "reward" in bubbles(page, "bot").last.locator(".hh-badge").inner_text()
    page.screenshot(path=str(ARTIFACTS / "space-phone-first-screen.png"))  # the first screen only, as seen


def test_phone_layout_shows_every_tab_and_nothing_wider_than_the_screen(open_page):
    page = open_page(PHONE)
    tabs = [t.inner_text() for t in page.get_by_role("tab").all()]
    assert tabs == ["Chat", "Arena", "Compare", "Results", "About"]
    for name in tabs:
        page.get_by_role("tab", name=name).click()
        time.sleep(0.3)
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= PHONE["width"], f"{name} is {overflow}px wide on a {PHONE['width']}px screen"
        shot(page, f"phone-{name.lower()}")
    page.get_by_role("tab", name="Results").click()
    cards = page.locator("#results-cards .hh-card")
    assert cards.count() == 6 and cards.first.bounding_box()["width"] <= PHONE["width"]
    footer = page.locator("footer").inner_text().strip()
    assert not footer.endswith("·")
