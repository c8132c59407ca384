"""The Arena tab: two anonymous models answer one prompt; the visitor votes; names are revealed after the vote; the
leaderboard of all votes sits beside the reward model's verdicts on the same pairs.

API: ``/arena`` (message, kind) -> the two anonymous replies; ``/vote`` (winner) -> the revealed pair, for the last
pair shown to that session; ``/leaderboard`` -> the table and the reward model's agreement.
"""

from __future__ import annotations

import html
from functools import partial
from typing import TYPE_CHECKING

import gradio as gr

from .arena import MIN_VOTES, Battle, leaderboard, new_battle
from .chat import check_message, normalize_content
from .render import KIND_CHOICES, badge, text_as_html
from .ui_common import Radio, decode_options, error_text, generation_limits, last, loading_note, prepare, ui_error
from .zerogpu import gpu, gpu_seconds

if TYPE_CHECKING:
    from .config import Backend

VOTE_BUTTONS = (("A", "A is better"), ("B", "B is better"), ("tie", "Tie"), ("both bad", "Both are bad"))
INTRO = ("Two models, picked at random, answer your prompt without their names. Vote for the better reply; the names "
         "and the reward model's scores are shown after your vote. One vote per pair.")


def panel(side: str, reply: str | None, battle: Battle | None = None, revealed: bool = False) -> str:
    name = f"Model {side}"
    tag = ""
    if revealed and battle is not None:
        model, reward = (battle.model_a, battle.reward_a) if side == "A" else (battle.model_b, battle.reward_b)
        name += f": {model}"
        tag = f"<div>{badge(reward, battle.category)}</div>"
    body = "<em>waiting…</em>" if reply is None else (text_as_html(reply) if reply else "<em>(empty reply)</em>")
    return f'<div class="hh-card"><div class="hh-card-head">{html.escape(name)}</div>{body}{tag}</div>'


def reveal(battle: Battle) -> str:
    words = {"A": "you preferred A", "B": "you preferred B", "tie": "you called it a tie", "both bad": "both bad"}
    diff = battle.reward_a - battle.reward_b
    judge = "A" if diff > 0 else "B" if diff < 0 else "neither (equal rewards)"
    return (f"**A was {battle.model_a}, B was {battle.model_b}**: {words[battle.winner]}; the reward model preferred "
            f"{judge}. Send another prompt for a new pair.")


def arena_tab(backend: Backend, demo: gr.Blocks | None = None) -> None:
    service, limits, names = backend.service, backend.service.limits, backend.names
    votes = backend.votes
    cap = backend.config.gpu_duration

    def seconds(message, options, models=None, category="helpful") -> int:
        return gpu_seconds(options.max_new_tokens, 2, cap)

    compare_fn = gpu(service.compare, seconds)

    def stream(text: str, category: str):
        """(battle, reply A, reply B, note) as the two replies stream; the battle gets both rewards at the end. The
        note says while models load (it names no model: the pair stays anonymous)."""
        battle = new_battle(names, category)
        opts = decode_options(limits, True, limits.default_new_tokens, 1.0, 1.0)
        if loading_note(backend, [battle.model_a, battle.model_b]):
            yield battle, None, None, "*Loading the models: the first reply takes longer…*"
        prepare(backend, [battle.model_a, battle.model_b])
        for updates in compare_fn(text, opts, [battle.model_a, battle.model_b], category):
            replies = [u.reply for u in updates] + [None] * (2 - len(updates))
            battle.reply_a, battle.reply_b = (r or "" for r in replies)
            if len(updates) == 2 and updates[-1].done:
                battle.reward_a, battle.reward_b = (u.scored.reward for u in updates)
            yield battle, *replies, ""

    def vote_buttons(active: bool) -> list:
        # Label and state of every vote button on every path (an update left out would blank the button).
        return [gr.update(value=label, interactive=active, visible=True) for _, label in VOTE_BUTTONS]

    def can_vote(state) -> bool:
        return isinstance(state, Battle) and state.ready and state.winner is None

    def open_votes(state) -> list:
        return vote_buttons(can_vote(state))

    def unchanged(state, outcome=None) -> tuple:
        """Every output as it stands: the panels keep what they show, the buttons their labels and state."""
        say = gr.update(visible=True) if outcome is None else gr.update(value=outcome, visible=True)
        return (gr.update(interactive=True), state, gr.update(visible=True), gr.update(visible=True), say,
                *vote_buttons(can_vote(state)))

    def arena_ui(message, category, state):
        text = normalize_content(message).strip()
        if not text:
            yield (gr.update(value="", interactive=True), *unchanged(state)[1:])  # an empty send does nothing
            return
        battle = state
        try:
            text = check_message(text, limits)
            yield "", None, panel("A", None), panel("B", None), "", *vote_buttons(False)
            for battle, a, b, note in stream(text, category):
                # The votes open in the step after this event (open_votes): Gradio re-sends a stream's last outputs
                # when it completes, which would hide a reveal that came in between.
                yield (gr.skip(), battle, panel("A", a), panel("B", b), gr.update(value=note, visible=True),
                       *vote_buttons(False))
        except Exception as exc:  # noqa: BLE001 - a warning, no error pill left on the page
            gr.Warning(error_text(exc))
            yield unchanged(battle if isinstance(battle, Battle) else None, "")

    def cast(state: Battle | None, winner: str) -> Battle:
        if state is None:
            raise gr.Error("no pair to vote on yet: send a prompt first", print_exception=False)
        try:
            votes.append(state.vote(winner))
        except Exception as exc:  # noqa: BLE001
            raise ui_error(exc) from None
        return state

    def board():
        lb = leaderboard(votes.votes())
        return lb.as_value(), lb.summary()

    def vote_ui(state, winner: str):
        try:
            battle = cast(state, winner)
        except gr.Error as exc:  # a second click on a pair already voted on: said, and the page stays as it is
            gr.Warning(str(exc))
            return (*unchanged(state)[1:], *board())
        return (battle, panel("A", battle.reply_a, battle, True), panel("B", battle.reply_b, battle, True),
                reveal(battle), *vote_buttons(False), *board())

    def arena_api(message, category, state):
        """Two anonymous replies to ``message`` from two models picked at random (names hidden until /vote)."""
        try:
            text = check_message(message, limits)
            battle, a, b, _ = last(stream(text, category))
        except Exception as exc:  # noqa: BLE001
            raise ui_error(exc) from None
        return a, b, battle

    def vote_api(winner, state):
        """Vote on the last pair /arena showed this session: "A", "B", "tie" or "both bad"; returns the pair revealed
        (model names, both rewards, the winner)."""
        battle = cast(state, winner)
        return {"model_a": battle.model_a, "model_b": battle.model_b, "winner": battle.winner,
                "reward_a": battle.reward_a, "reward_b": battle.reward_b, "category": battle.category}, battle

    gr.Markdown(INTRO)
    with gr.Row():
        kind = Radio(KIND_CHOICES, value="helpful", label="Your prompt is", scale=2, elem_id="arena-kind")
    with gr.Row():
        prompt = gr.Textbox(show_label=False, placeholder="A prompt for two anonymous models", scale=5,
                            elem_id="arena-input", max_length=limits.max_input_chars)
        send = gr.Button("Send to both", variant="primary", scale=1, min_width=120, elem_id="arena-send")
    with gr.Row(equal_height=True):
        with gr.Column(min_width=220):
            side_a = gr.HTML(panel("A", None), elem_id="arena-a")
        with gr.Column(min_width=220):
            side_b = gr.HTML(panel("B", None), elem_id="arena-b")
    with gr.Row():
        buttons = [gr.Button(text, interactive=False, elem_id=f"vote-{key.replace(' ', '-')}", min_width=120)
                   for key, text in VOTE_BUTTONS]
    outcome = gr.Markdown(elem_id="arena-reveal")
    gr.Markdown("### Leaderboard\nBradley-Terry ratings from all visitors' votes (Elo scale, 95% bootstrap intervals "
                "as FastChat computes them), beside the rating the reward model earns when it votes on the same pairs "
                f"(the higher reward wins). A model needs {MIN_VOTES} votes before its rating is shown.")
    lb = leaderboard(votes.votes())
    table = gr.Dataframe(lb.as_value(), interactive=False, elem_id="leaderboard", wrap=True,
                         datatype=["number", "str", "str", "number", "number", "number", "number"],
                         buttons=["copy"], column_widths=["64px", "150px", "80px", "86px", "90px", "70px", "120px"])
    agreement = gr.Markdown(lb.summary(), elem_id="leaderboard-agreement")
    state = gr.State(None)
    api_message, api_winner = gr.Textbox(visible=False), gr.Textbox(visible=False)
    api_a, api_b, api_reveal = gr.Textbox(visible=False), gr.Textbox(visible=False), gr.JSON(visible=False)
    go, vote_go, board_go = gr.Button(visible=False), gr.Button(visible=False), gr.Button(visible=False)

    limits_kw = generation_limits(backend)
    gr.on([send.click, prompt.submit], arena_ui, inputs=[prompt, kind, state],
          outputs=[prompt, state, side_a, side_b, outcome, *buttons], api_visibility="private", trigger_mode="once",
          **limits_kw).then(open_votes, inputs=state, outputs=buttons, queue=False, api_visibility="private")
    for (key, _), button in zip(VOTE_BUTTONS, buttons):
        button.click(partial(vote_ui, winner=key), inputs=state,
                     outputs=[state, side_a, side_b, outcome, *buttons, table, agreement], api_visibility="private",
                     concurrency_limit=4)
    go.click(arena_api, inputs=[api_message, kind, state], outputs=[api_a, api_b, state], api_name="arena",
             **limits_kw)
    vote_go.click(vote_api, inputs=[api_winner, state], outputs=[api_reveal, state], api_name="vote",
                  concurrency_limit=4)
    board_go.click(board, outputs=[table, agreement], api_name="leaderboard", concurrency_limit=4)
    if demo is not None:
        # Each page load shows every visitor's votes so far (a vote in another tab counts for this one too).
        demo.load(board, outputs=[table, agreement], api_visibility="private", queue=False)
