"""The Compare tab: one prompt, every model's reply side by side as text, a reward badge under each, the best
marked."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import gradio as gr

from .chat import best_indices, check_message, normalize_content
from .render import KIND_CHOICES, badge, explainer, text_as_html
from .ui_common import Radio, Slider, decode_options, error_text, generation_limits, loading_note, prepare, ui_error
from .zerogpu import gpu, gpu_seconds

if TYPE_CHECKING:
    from .config import Backend


def card(name: str, update=None, best: bool = False, tied: bool = False, category: str = "helpful",
         note: str = "") -> str:
    """One model's reply: its name (★ when its reward is the highest), the reply as text, the reward badge."""
    crown = f' <span class="hh-best">★ best reward{" (tied)" if tied else ""}</span>' if best else ""
    head = f'<div class="hh-card-head">{html.escape(name)}{crown}</div>'
    if update is None:
        return f'<div class="hh-card">{head}<em>{html.escape(note.strip("*") or "waiting…")}</em></div>'
    reply = text_as_html(update.reply) if update.reply else "<em>(empty reply)</em>"
    scored = update.scored
    tag = (badge(scored.reward, category, judged_tokens=scored.n_tokens if scored.truncated else None) if scored
           else badge(None, category, note="writing…"))
    return f'<div class="hh-card">{head}{reply}<div>{tag}</div></div>'


def cards(names: list[str], updates: list, category: str) -> list[str]:
    by_name = {u.model: u for u in updates}
    final = len(updates) == len(names) and all(u.done for u in updates)
    best = {updates[i].model for i in best_indices(updates)} if final else set()
    return [card(n, by_name.get(n), n in best, len(best) > 1, category) for n in names]


def compare_tab(backend: Backend, examples: dict[str, list[str]]) -> None:
    service, limits, names = backend.service, backend.service.limits, backend.names
    cap = backend.config.gpu_duration

    def seconds(message, options, models=None, category="helpful") -> int:
        return gpu_seconds(options.max_new_tokens, len(names), cap)

    compare_fn = gpu(service.compare, seconds)

    def stream(text: str, category: str, max_new):
        opts = decode_options(limits, True, max_new, 1.0, 1.0)
        note = loading_note(backend, names)
        if note:
            yield (*[card(n, note=note) for n in names], [])
        prepare(backend, names)
        for updates in compare_fn(text, opts, names, category):
            final = len(updates) == len(names) and updates[-1].done
            best = best_indices(updates) if final else []
            rows = [{**u.to_dict(), "best": i in best} for i, u in enumerate(updates) if u.done]
            yield (*cards(names, updates, category), rows)

    def unchanged() -> tuple:
        # Every output set explicitly (left out, Gradio would blank it): the cards keep what they show.
        return (*[gr.update(visible=True) for _ in names], gr.update(visible=False))

    def compare_ui(prompt, category, max_new):
        text = normalize_content(prompt).strip()
        if not text:
            yield gr.update(value=""), *unchanged()  # an empty send does nothing (spaces are cleared)
            return
        try:
            for outputs in stream(check_message(text, limits), category, max_new):
                yield gr.skip(), *outputs
        except Exception as exc:  # noqa: BLE001 - a warning, no error pill left on the cards
            gr.Warning(error_text(exc))
            yield gr.skip(), *unchanged()

    def compare_api(prompt, category, max_new):
        """Every model's reply to one prompt: the cards (HTML) and one score row per model, the best marked."""
        try:
            yield from stream(check_message(prompt, limits), category, max_new)
        except Exception as exc:  # noqa: BLE001
            raise ui_error(exc) from None

    prompt = gr.Textbox(label="One prompt for every model", lines=2, elem_id="compare-input",
                        max_length=limits.max_input_chars)
    with gr.Row():
        kind = Radio(KIND_CHOICES, value="helpful", label="Your prompt is", scale=2)
        max_new = Slider(1, limits.max_new_tokens, value=limits.default_new_tokens, step=1,
                            label="Max new tokens (greedy decoding)", scale=2)
        run = gr.Button("Compare all models", variant="primary", scale=1, elem_id="compare-run")
    gr.Markdown(explainer(service.thresholds), elem_classes=["hh-explainer"])
    with gr.Row(equal_height=True):
        outs = []
        for name in names:
            with gr.Column(min_width=220):
                outs.append(gr.HTML(card(name), elem_classes=["hh-compare-card"]))
    scores = gr.JSON(label="Scores", visible=False)
    gr.Examples([[e, "harmful"] for e in examples["harmful"][:2]] + [[e, "helpful"] for e in examples["helpful"][:2]],
                inputs=[prompt, kind])
    api_button = gr.Button(visible=False)
    limits_kw = generation_limits(backend)
    gr.on([run.click, prompt.submit], compare_ui, inputs=[prompt, kind, max_new], outputs=[prompt, *outs, scores],
          api_visibility="private", trigger_mode="once", **limits_kw)
    api_button.click(compare_api, inputs=[prompt, kind, max_new], outputs=[*outs, scores], api_name="compare",
                     **limits_kw)
