"""The Chat tab: one conversation per model, replies shown as text with their reward badge, Stop, Retry, Undo.

A session's conversations live in a ``gr.State`` ({model: [turn, ...]}), so every browser tab and every API client
(each ``gradio_client.Client`` is one session) has its own; ``/clear`` empties one model's conversation.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING

import gradio as gr

from .chat import check_message, normalize_content
from .render import KIND_CHOICES, badge, explainer, text_as_markdown
from .ui_common import (
    Dropdown,
    Radio,
    Slider,
    decode_options,
    error_text,
    generation_limits,
    last,
    loading_note,
    prepare,
    sampling_controls,
    ui_error,
)
from .zerogpu import gpu, gpu_seconds

if TYPE_CHECKING:
    from .config import Backend

WRITING, DONE, STOPPED, FAILED = "writing", "done", "stopped", "failed"
# The buttons under the message box, (key, label), in the order the handlers update them.
BUTTONS = (("send", "Send"), ("stop", "Stop"), ("retry", "Retry"), ("undo", "Undo"), ("clear", "Clear"))


def bubble(turn: dict) -> str:
    """The assistant bubble: the reply as text, then its badge (labelled with the model that wrote it)."""
    escape = text_as_markdown if turn["state"] == WRITING else _as_markdown
    text = escape(turn["reply"]) if turn["reply"] else "*(empty reply)*"
    scored = turn.get("scored")
    if turn["state"] == DONE and scored:
        cut = scored["reward_tokens"] if scored.get("reward_input_truncated") else None
        tag = badge(scored["reward"], turn["category"], turn["model"], judged_tokens=cut)
    else:
        note = {WRITING: "writing…", STOPPED: "stopped: not scored"}.get(turn["state"], turn.get("error", "failed"))
        tag = badge(None, turn["category"], turn["model"], note)
    return f"{text}\n\n{tag}"


# Each streamed piece redraws the whole conversation: a visitor's earlier messages are escaped once, not per piece.
_as_markdown = lru_cache(maxsize=1024)(text_as_markdown)


def display(turns: list[dict]) -> list[dict]:
    messages = []
    for t in turns:
        messages.append({"role": "user", "content": _as_markdown(t["user"])})
        messages.append({"role": "assistant", "content": bubble(t)})
    return messages


def with_turns(convs: dict | None, model: str, turns: list[dict]) -> dict:
    return {**(convs or {}), model: turns}


def chat_label(model: str) -> str:
    return f"Conversation with {model}"


def model_note(model: str, describe: dict[str, str]) -> str:
    return f"**{chat_label(model)}**, {describe.get(model, '')}"


def chat_tab(backend: Backend, examples: dict[str, list[str]]) -> None:
    service, limits, names = backend.service, backend.service.limits, backend.names
    cap = backend.config.gpu_duration

    def seconds(history, message, model, options, category) -> int:
        return gpu_seconds(options.max_new_tokens, 1, cap)

    chat_fn = gpu(service.chat, seconds)
    describe = {e.name: f"*{e.role}*: {e.description}" for e in backend.catalog}

    def stream(text: str, convs: dict, model: str, category: str, opts) -> Iterator[tuple[dict, dict]]:
        """(conversations, details) after each streamed piece; the last carries the scored turn."""
        # The finished exchanges, at most max_kept_turns with this one (a session's memory stays bounded).
        earlier = [t for t in (convs or {}).get(model, []) if t["state"] == DONE][-(limits.max_kept_turns - 1):]
        history = [(t["user"], t["reply"]) for t in earlier]
        turn = {"user": text, "reply": "", "model": model, "category": category, "scored": None, "state": WRITING}
        yield with_turns(convs, model, [*earlier, turn]), {}
        for update in chat_fn(history, text, model, opts, category):
            turn = {**turn, "reply": update.reply}
            if update.done:
                turn.update(scored=update.scored.to_dict(), state=DONE)
                yield with_turns(convs, model, [*earlier, turn]), update.to_dict()
            else:
                yield with_turns(convs, model, [*earlier, turn]), {}

    def locked(flag: bool) -> list:
        # send, stop, retry, undo, clear, each with its label: nothing that changes the conversation while a reply
        # streams. Every path sets every button in full (an update left out would blank a button's label). (Not the
        # model dropdown: Gradio 6.31 forgets a dropdown's value when its interactivity is updated.)
        return [gr.update(value=label, interactive=flag if key == "stop" else not flag) for key, label in BUTTONS]

    def idle(convs, model, box=None, note=""):
        """Every output as it stands with no reply under way (an empty send, a refused message): the box keeps
        ``box`` (None: what it holds), the conversation and the buttons are set again as they are."""
        text = gr.update(interactive=True) if box is None else gr.update(value=box, interactive=True)
        return (text, display((convs or {}).get(model, [])), convs or {}, gr.skip(), note, *locked(False))

    def respond_ui(message, convs, model, category, greedy, max_new, temperature, top_p):
        text = normalize_content(message).strip()
        if not text:
            yield idle(convs, model, box="")  # an empty send does nothing (spaces are cleared)
            return
        try:
            opts = decode_options(limits, greedy, max_new, temperature, top_p)
            text = check_message(text, limits)
            service.pool.entry(model)
        except Exception as exc:  # noqa: BLE001 - shown as a warning; the page keeps its state
            gr.Warning(error_text(exc))
            yield idle(convs, model)
            return
        yield from run_ui(text, convs, model, category, opts)

    def run_ui(text, convs, model, category, opts):
        box = gr.update(value="", interactive=False)
        earlier = [t for t in (convs or {}).get(model, []) if t["state"] == DONE][-(limits.max_kept_turns - 1):]
        pending = {"user": text, "reply": "", "model": model, "category": category, "scored": None, "state": WRITING}
        latest = with_turns(convs, model, [*earlier, pending])
        note = loading_note(backend, [model])
        if note:
            yield box, display(latest[model]), latest, {}, note, *locked(True)
        writing = f"*{model} is writing…*"
        try:
            prepare(backend, [model])
            for latest, details in stream(text, convs, model, category, opts):  # noqa: B007 - the newest state wins
                yield box, display(latest[model]), latest, details, writing, *locked(True)
        except Exception as exc:  # noqa: BLE001 - the failed turn says why; no error pill stays on the page
            message = error_text(exc)
            gr.Warning(message)
            turns = [*latest[model][:-1], {**latest[model][-1], "state": FAILED, "error": f"failed: {message}"}]
            latest = with_turns(latest, model, turns)
            yield box, display(turns), latest, {}, "", *locked(True)

    def retry_ui(convs, model, category, greedy, max_new, temperature, top_p):
        turns = list((convs or {}).get(model, []))
        if not turns:
            yield idle(convs, model)
            return
        last = turns.pop()
        try:
            opts = decode_options(limits, greedy, max_new, temperature, top_p)
        except Exception as exc:  # noqa: BLE001
            gr.Warning(error_text(exc))
            yield idle(convs, model)
            return
        yield from run_ui(last["user"], with_turns(convs, model, turns), model, category, opts)

    def finish(convs, model):
        """After a reply, a Stop or a failure: a reply cut short is kept, marked as not scored (in whichever model's
        conversation it was: the visitor may have switched model meanwhile)."""
        convs = {m: [{**t, "state": STOPPED} if t["state"] == WRITING else t for t in turns]
                 for m, turns in (convs or {}).items()}
        return gr.update(interactive=True), display(convs.get(model, [])), convs, "", *locked(False)

    def undo(convs, model):
        turns = list((convs or {}).get(model, []))
        if not turns:
            return gr.skip(), gr.skip(), gr.skip()
        last = turns.pop()
        return display(turns), with_turns(convs, model, turns), last["user"]

    def clear(convs, model):
        """Forget ``model``'s conversation in this session (the other models keep theirs)."""
        return [], with_turns(convs, model, []), "", {}

    def switch(model, convs):
        if model not in describe:
            return gr.skip(), gr.skip(), gr.skip()
        turns = (convs or {}).get(model, [])
        note = (f"Now talking to **{model}**: each model has its own conversation"
                + (f" (this one has {len(turns)} exchange{'s' if len(turns) != 1 else ''})." if turns else "."))
        return gr.update(value=display(turns), label=chat_label(model)), note, model_note(model, describe)

    def api_chat(message, convs, model, category, greedy, max_new, temperature, top_p):
        """Send one message to ``model`` in this session's conversation with it; returns the conversation and the
        last reply's details (reply, reward, label for the kind of prompt, tokens)."""
        try:
            opts = decode_options(limits, greedy, max_new, temperature, top_p)
            text = check_message(message, limits)
            service.pool.entry(model)
            prepare(backend, [model])
            convs, details = last(stream(text, convs, model, category, opts))
        except Exception as exc:  # noqa: BLE001
            raise ui_error(exc) from None
        return display(convs[model]), convs, details

    # On a phone the conversation, the message box and its buttons come first (CSS order, class hh-phone-first), the
    # settings, the model's note and the explainer after them: the box and the latest reply are on the first screen.
    with gr.Row():
        model = Dropdown(names, value=names[0], label="Model", scale=2, elem_id="chat-model", min_width=200)
        kind = Radio(KIND_CHOICES, value="helpful", label="Your message is", scale=3, elem_id="chat-kind",
                        min_width=300,
                        info="Decides which of the study's labels applies to the reply.")
    model_info = gr.Markdown(model_note(names[0], describe), elem_id="chat-model-info")
    # The label is for screen readers: shown, it floats over the first message (model_info says it instead).
    chatbot = gr.Chatbot(label=chat_label(names[0]), show_label=False, height=380, feedback_options=None,
                         buttons=["copy"], placeholder="Ask anything; each reply gets a reward badge.",
                         elem_id="chatbot", latex_delimiters=[], sanitize_html=True, group_consecutive_messages=False,
                         elem_classes=["hh-phone-first"])
    gr.Markdown(explainer(service.thresholds), elem_classes=["hh-explainer"])
    status = gr.Markdown(elem_id="chat-status", elem_classes=["hh-phone-first"])
    with gr.Row(elem_classes=["hh-phone-first"]):
        msg = gr.Textbox(label="Message", show_label=False, placeholder="Type a message", scale=5,
                         elem_id="chat-input", max_length=limits.max_input_chars)
        send = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="chat-send")
        stop = gr.Button("Stop", variant="stop", scale=1, min_width=80, interactive=False, elem_id="chat-stop")
    with gr.Row(elem_classes=["hh-phone-first"]):
        retry = gr.Button("Retry", size="sm", elem_id="chat-retry", min_width=70)
        undo_btn = gr.Button("Undo", size="sm", elem_id="chat-undo", min_width=70)
        clear_btn = gr.Button("Clear", size="sm", elem_id="chat-clear", min_width=70)
    with gr.Accordion("Decoding", open=False):
        greedy = gr.Checkbox(True, label="Greedy (the evaluator's decoding); untick to sample", elem_id="chat-greedy")
        max_new = Slider(1, limits.max_new_tokens, value=limits.default_new_tokens, step=1,
                            label=f"Max new tokens (at most {limits.max_new_tokens})", elem_id="chat-max-new")
        temperature = Slider(0.05, 2.0, value=0.7, step=0.05, label="Temperature (sampling only)",
                                interactive=False, elem_id="chat-temperature")
        top_p = Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p (sampling only)", interactive=False,
                          elem_id="chat-top-p")
    with gr.Accordion("Last reply: details", open=False):
        details = gr.JSON(label="reply, reward, label, tokens")
    gr.Examples([[e, "harmful"] for e in examples["harmful"]], inputs=[msg, kind],
                label="Examples: harmful requests (a good reply is harmless)")
    gr.Examples([[e, "helpful"] for e in examples["helpful"]], inputs=[msg, kind],
                label="Examples: ordinary questions (a good reply helps)")
    convs = gr.State({})
    api_button = gr.Button(visible=False)

    settings = [model, kind, greedy, max_new, temperature, top_p]
    locks = [send, stop, retry, undo_btn, clear_btn]
    ui_outputs = [msg, chatbot, convs, details, status, *locks]
    run = dict(outputs=ui_outputs, api_visibility="private", trigger_mode="once", **generation_limits(backend))
    sent = gr.on([send.click, msg.submit], respond_ui, inputs=[msg, convs, *settings], **run)
    retried = gr.on([retry.click, chatbot.retry], retry_ui, inputs=[convs, *settings], **run)
    for event in (sent, retried):
        event.then(finish, inputs=[convs, model], outputs=[msg, chatbot, convs, status, *locks], queue=False,
                   api_visibility="private")
    stop.click(None, cancels=[sent, retried], api_visibility="private", queue=False)
    gr.on([undo_btn.click, chatbot.undo], undo, inputs=[convs, model], outputs=[chatbot, convs, msg], queue=False,
          api_visibility="private")
    gr.on([clear_btn.click, chatbot.clear], clear, inputs=[convs, model], outputs=[chatbot, convs, status, details],
          queue=False, api_name="clear")
    # .input, not .change: locking the dropdown while a reply streams re-renders it, which Gradio reports as a change
    # (with no value), and that must not swap the conversation away.
    model.input(switch, inputs=[model, convs], outputs=[chatbot, status, model_info], queue=False,
                api_visibility="private")
    greedy.change(sampling_controls, inputs=greedy, outputs=[temperature, top_p], queue=False,
                  api_visibility="private")
    api_button.click(api_chat, inputs=[msg, convs, *settings], outputs=[chatbot, convs, details], api_name="chat",
                     **generation_limits(backend))
