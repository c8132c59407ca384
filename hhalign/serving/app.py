"""The Space's Gradio app: Chat, Compare, Results and About tabs over :mod:`hhalign.serving`. ``space/app.py`` and
``hhalign space`` run :func:`main`."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import traceback
from pathlib import Path

import gradio as gr

from hhalign.data import load_prompts_file
from hhalign.errors import HHAlignError
from hhalign.eval import results as hres
from hhalign.eval.metrics import HARMLESS_THRESHOLD, HELPFUL_THRESHOLD
from hhalign.publish.registry import load_registry, render_models_md
from hhalign.serving.chat import DecodeOptions, best_indices, check_message, gpu
from hhalign.serving.config import Backend, SpaceConfig, build_backend

logger = logging.getLogger(__name__)
TITLE = "hhalign: SFT and DPO on OPT-350M, scored by a reward model"
TABS = ("Chat", "Compare", "Results", "About")


def space_argv(argv: list[str] | None = None) -> list[str]:
    """Launch options: the Space variable HHALIGN_SPACE_ARGS first, then the command line (which wins)."""
    return shlex.split(os.environ.get("HHALIGN_SPACE_ARGS", "")) + list(sys.argv[1:] if argv is None else argv)


def parse_config(argv: list[str] | None = None) -> SpaceConfig:
    from ..config import Parser

    (cfg,) = Parser([SpaceConfig], prog="hhalign space").parse(space_argv(argv))
    return cfg


def _ui_error(exc: BaseException) -> gr.Error:
    """User errors keep their one-line message; anything else is logged and shown briefly, never raised raw."""
    if isinstance(exc, HHAlignError):
        return gr.Error(str(exc), print_exception=False)
    logger.error("unexpected error\n%s", "".join(traceback.format_exception(exc)))
    return gr.Error(f"unexpected error ({type(exc).__name__}: {str(exc)[:200]}); the app keeps running, try again")


def score_note(scored) -> str:
    return (f"reward **{scored.reward:+.2f}** · {scored.harmless_label} (harmless if >= {HARMLESS_THRESHOLD:g}) · "
            f"{scored.helpful_label} (helpful if > {HELPFUL_THRESHOLD:g})")


def _bubble(reply: str, scored=None) -> str:
    text = reply or "*(empty reply)*"
    return f"{text}\n\n*{score_note(scored).replace('**', '')}*" if scored else text


def _display(conversation: list[dict]) -> list[dict]:
    messages = []
    for turn in conversation:
        messages.append({"role": "user", "content": turn["user"]})
        messages.append({"role": "assistant", "content": turn["bubble"]})
    return messages


def _example_prompts() -> dict[str, list[str]]:
    """First human turns of the project's single-turn demo prompts, by category."""
    from hhalign.data import DEMO_PROMPTS_PATH

    out: dict[str, list[str]] = {"harmful": [], "helpful": []}
    for p in load_prompts_file(DEMO_PROMPTS_PATH):
        if "\n\nAssistant:" not in p.prompt and len(out[p.category]) < 4:
            out[p.category].append(p.prompt.removeprefix("Human:").strip())
    return out


def about_markdown(backend: Backend) -> str:
    offered = "\n".join(f"- **{e.name}** ({e.role}): {e.description} `{e.ref.ref}`" for e in backend.catalog)
    demo_note = ""
    if backend.demo:
        demo_note = ("\n\n**This is the offline demo**: the models below are tiny and random, so replies are "
                     "gibberish and scores are meaningless; it shows what the Space does with the real models.")
    return f"""## What this is

This Space accompanies a reproduction of *Improving LLM Safety and Helpfulness using SFT and DPO: a study on
OPT-350M* (Pant, 2025). Four models are compared: OPT-350M as released (**base**), fine-tuned on the chosen HH-RLHF
transcripts (**sft**), a LoRA adapter trained with DPO on HH-RLHF preference pairs (**dpo**), and DPO on top of the
SFT model (**sft_dpo**). A reward model (`{backend.config.reward_model}`) scores every reply; a reply to a harmful
prompt counts as harmless when its reward is >= {HARMLESS_THRESHOLD:g}, a reply to a helpful prompt as helpful when its
reward is > {HELPFUL_THRESHOLD:g} (the study's thresholds).{demo_note}

## Models offered here

{offered}

## The project's model registry (models.md)

{render_models_md(load_registry()).removeprefix("# Models").strip()}

## Protocol

The chat uses the evaluator's `chat` protocol: the conversation is written as an HH-RLHF transcript
(`Human: ...` / `Assistant: ...`), the assistant cue `\\n\\nAssistant:` is appended, and the reply is cut at the next
`\\n\\nHuman:` turn. Decoding is greedy by default, as in the evaluation. The reward model scores the whole
conversation so far as the question and the reply as the answer, as the study did. The Results tab shows the
evaluator's measurements with 95% bootstrap intervals, paired significance tests, and the study's published Table 1
as reference figures.

## Reproduce

```bash
pip install -r requirements.txt
python space/app.py --demo                                  # this Space, offline, tiny models
python batch/eval.py --demo --out results/demo              # the evaluator's offline demo
python batch/eval.py --out results/opt350m                  # the registry's published models, the study's prompts
python space/app.py --results results/opt350m               # this Space over your own results
python space/deploy.py --space-id ORG/NAME --results results/opt350m   # publish it
```
"""


def options(limits, greedy, max_new, temperature, top_p) -> DecodeOptions:
    return DecodeOptions(int(max_new), bool(greedy), float(temperature), float(top_p)).checked(limits)


def prepare(backend: Backend, models: list[str]) -> None:
    """Load models before any GPU window opens (ZeroGPU keeps what the main process loaded)."""
    missing = [m for m in models if not backend.service.pool.is_loaded(m)]
    if missing:
        gr.Info(f"Loading {', '.join(missing)}: the first reply takes longer")
    backend.service.prepare(models)


def chat_tab(backend: Backend, examples: dict[str, list[str]]) -> None:
    service, limits, names = backend.service, backend.service.limits, backend.names
    chat_fn = gpu(service.chat, backend.config.gpu_duration)
    describe = {e.name: f"*{e.role}*: {e.description}" for e in backend.catalog}

    def respond(message, conversation, model, greedy, max_new, temperature, top_p):
        conversation = list(conversation or [])
        try:
            opts = options(limits, greedy, max_new, temperature, top_p)
            text = check_message(message, limits)
            service.pool.entry(model)
            prepare(backend, [model])
        except Exception as exc:  # noqa: BLE001
            raise _ui_error(exc) from None
        history = [(t["user"], t["reply"]) for t in conversation]
        writing = f"*{model} is writing…*"
        yield "", _display([*conversation, {"user": text, "bubble": "…"}]), conversation, writing, {}
        try:
            for update in chat_fn(history, text, model, opts):
                turn = {"user": text, "reply": update.reply, "bubble": _bubble(update.reply, update.scored)}
                shown = [*conversation, turn]
                if update.done:
                    note = f"**{model}**, last reply: {score_note(update.scored)}"
                    yield "", _display(shown), shown, note, update.to_dict()
                else:
                    yield "", _display(shown), conversation, writing, {}
        except Exception as exc:  # noqa: BLE001
            raise _ui_error(exc) from None

    with gr.Row():
        model = gr.Dropdown(names, value=names[0], label="Model", scale=1)
        model_info = gr.Markdown(describe[names[0]])
    chatbot = gr.Chatbot(label="Conversation", height=380, feedback_options=None, buttons=["copy", "copy_all"],
                         placeholder="Ask anything; each reply gets a reward score.", elem_id="chatbot")
    with gr.Row():
        msg = gr.Textbox(show_label=False, placeholder="Type a message and press Enter", scale=5,
                         elem_id="chat-input")
        send = gr.Button("Send", variant="primary", scale=1)
        clear = gr.Button("Clear history", scale=1)
    score_md = gr.Markdown(elem_id="chat-score")
    with gr.Accordion("Decoding", open=False):
        greedy = gr.Checkbox(True, label="Greedy (the evaluator's decoding); untick to sample")
        max_new = gr.Slider(1, limits.max_new_tokens, value=limits.default_new_tokens, step=1,
                            label=f"Max new tokens (at most {limits.max_new_tokens})")
        temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="Temperature (sampling only)")
        top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p (sampling only)")
    with gr.Accordion("Last reply: details", open=False):
        details = gr.JSON(label="reply, reward, labels, tokens")
    gr.Examples(examples["harmful"], inputs=msg, label="Examples: harmful prompts (a good reply is harmless)")
    gr.Examples(examples["helpful"], inputs=msg, label="Examples: helpful prompts (a good reply helps)")
    conversation = gr.State([])

    io = dict(fn=respond, inputs=[msg, conversation, model, greedy, max_new, temperature, top_p],
              outputs=[msg, chatbot, conversation, score_md, details], **_generation_limits(backend))
    msg.submit(api_name="chat", **io)
    send.click(api_visibility="private", **io)
    clear.click(lambda: ([], [], "", {}), outputs=[chatbot, conversation, score_md, details], api_name="clear")
    # The chatbot's own trash button empties the display; the model's memory of the conversation must follow.
    chatbot.clear(lambda: ([], "", {}), outputs=[conversation, score_md, details], api_visibility="private")
    model.change(lambda m: describe.get(m, ""), inputs=model, outputs=model_info, api_visibility="private")


def _generation_limits(backend: Backend) -> dict:
    # Chat and compare share one limit: both run the same models on the same device.
    return {"concurrency_limit": backend.config.concurrency, "concurrency_id": "generate"}


def compare_tab(backend: Backend, examples: dict[str, list[str]]) -> None:
    service, limits, names = backend.service, backend.service.limits, backend.names
    compare_fn = gpu(service.compare, backend.config.gpu_duration * max(1, len(names)))

    def cards(updates) -> list[str]:
        by_name = {u.model: u for u in updates}
        final = len(updates) == len(names) and all(u.done for u in updates)
        best = {updates[i].model for i in best_indices(updates)} if final else set()
        mark = " ★ best reward" + (" (tied)" if len(best) > 1 else "")
        out = []
        for name in names:
            u = by_name.get(name)
            if u is None:
                out.append(f"### {name}\n\n*waiting…*")
                continue
            crown = mark if name in best else ""
            score = score_note(u.scored) if u.scored else "*writing…*"
            out.append(f"### {name}{crown}\n\n{u.reply or '*(empty reply)*'}\n\n{score}")
        return out

    def compare(prompt, max_new):
        try:
            opts = options(limits, True, max_new, 1.0, 1.0)
            text = check_message(prompt, limits)
            prepare(backend, names)
            for updates in compare_fn(text, opts):
                final = len(updates) == len(names) and updates[-1].done
                best = best_indices(updates) if final else []
                rows = [{**u.to_dict(), "best": i in best} for i, u in enumerate(updates) if u.done]
                yield (*cards(updates), rows)
        except Exception as exc:  # noqa: BLE001
            raise _ui_error(exc) from None

    prompt = gr.Textbox(label="One prompt for every model", lines=2, elem_id="compare-input")
    with gr.Row():
        max_new = gr.Slider(1, limits.max_new_tokens, value=limits.default_new_tokens, step=1,
                            label="Max new tokens (greedy decoding)", scale=3)
        run = gr.Button("Compare all models", variant="primary", scale=1)
    with gr.Row(equal_height=True):
        outs = []
        for name in names:
            with gr.Column(variant="panel", min_width=200):
                outs.append(gr.Markdown(f"### {name}"))
    scores = gr.JSON(label="Scores")
    gr.Examples(examples["harmful"][:2] + examples["helpful"][:2], inputs=prompt)
    io = dict(fn=compare, inputs=[prompt, max_new], outputs=[*outs, scores], **_generation_limits(backend))
    run.click(api_name="compare", **io)
    prompt.submit(api_visibility="private", **io)


def results_tab(backend: Backend) -> None:
    cache = Path(backend.config.cache_dir) / "figures"

    def outputs(view: hres.ResultsView) -> tuple:
        figs = {k: _image(v) for k, v in view.figures.items()}
        return (view.summary, view.metrics.as_value(), figs.get("rates"), figs.get("reward_boxes"),
                view.comparisons.as_value(), view.judge,
                *[gr.Dropdown(choices=view.choices[k], value=hres.ALL) for k in ("model", "category", "label")],
                view.rows.as_value())

    def reload():
        try:
            view = hres.results_view(backend.results, cache)
        except Exception as exc:  # noqa: BLE001
            raise _ui_error(exc) from None
        if view.error:
            gr.Warning(view.error)
        return outputs(view)

    def filter_rows(model, category, label):
        if backend.results is None:
            return hres.Table(list(hres.BROWSE_HEADERS)).as_value()
        try:
            return hres.browse(hres.load_results(backend.results), model, category, label).as_value()
        except Exception as exc:  # noqa: BLE001
            raise _ui_error(exc) from None

    def browse(model: str = "all", category: str = "all", label: str = "all") -> dict:
        """Per-prompt records of the results folder matching the filters ("all" matches everything)."""
        if backend.results is None:
            raise gr.Error("no results folder is attached: launch with --results DIR", print_exception=False)
        return filter_rows(model, category, label)

    # Built with the page, so a visitor sees the numbers at once and the filters know their choices.
    view = hres.results_view(backend.results, cache)
    figs = {k: _image(v) for k, v in view.figures.items()}
    summary = gr.Markdown(view.summary)
    metrics = gr.Dataframe(view.metrics.as_value(), interactive=False, wrap=True, elem_id="metrics-table",
                           label="Metrics; rows marked (study) are the published Table 1, for reference")
    with gr.Row():
        rates = gr.Image(figs.get("rates"), label="HmR, HpR, CAS with 95% error bars", interactive=False,
                         format="png")
        boxes = gr.Image(figs.get("reward_boxes"), label="Reward distributions per category", interactive=False,
                         format="png")
    comparisons = gr.Dataframe(view.comparisons.as_value(), label="Significance of paired differences",
                               interactive=False, wrap=True)
    judge = gr.Markdown(view.judge)  # the reward model's own accuracy on HH-RLHF, next to the verdicts it gives
    gr.Markdown("### Per-prompt browser")
    with gr.Row():
        f_model = gr.Dropdown(view.choices["model"], value=hres.ALL, label="Model")
        f_category = gr.Dropdown(view.choices["category"], value=hres.ALL, label="Category")
        f_label = gr.Dropdown(view.choices["label"], value=hres.ALL, label="Label")
    rows = gr.Dataframe(view.rows.as_value(), label="Responses", interactive=False, wrap=True, max_height=600)
    reload_btn = gr.Button("Reload results")

    reload_btn.click(reload, outputs=[summary, metrics, rates, boxes, comparisons, judge, f_model, f_category, f_label,
                                      rows],
                     api_name="results", concurrency_limit=4)
    for f in (f_model, f_category, f_label):
        f.change(filter_rows, inputs=[f_model, f_category, f_label], outputs=rows, api_visibility="private",
                 concurrency_limit=4)
    gr.api(browse, api_name="browse", concurrency_limit=4)


def build_demo(backend: Backend) -> gr.Blocks:
    """The Blocks app over ``backend``; handlers turn every failure into a message in the page."""
    examples = _example_prompts()
    intro = "Every reply is scored by the reward model; labels use the study's thresholds."
    if backend.demo:
        intro = "**Offline demo with tiny random models: replies are gibberish and scores meaningless.** " + intro
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\n{intro}")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                chat_tab(backend, examples)
            with gr.Tab("Compare", id="compare"):
                compare_tab(backend, examples)
            with gr.Tab("Results", id="results"):
                results_tab(backend)
            with gr.Tab("About", id="about"):
                gr.Markdown(about_markdown(backend))
    demo.queue(max_size=backend.config.queue_size, default_concurrency_limit=1)
    return demo


def _image(path: Path):
    from PIL import Image

    with Image.open(path) as img:
        return img.copy()


def create(cfg: SpaceConfig, app_dir: str | Path | None = None) -> gr.Blocks:
    """The Gradio app for ``cfg``; ``app_dir`` is the deployed Space's folder, whose results/ the Results tab shows."""
    return build_demo(build_backend(cfg, app_dir))


def main_from_config(cfg: SpaceConfig, app_dir: str | Path | None = None) -> None:
    """Serve the hhalign Space: chat with the models, compare them, browse the results.

    Usage:
        hhalign space --demo                      # offline: tiny models + demo results, http://127.0.0.1:7860
        hhalign space --results results/opt350m   # the registry's published models, your results in the Results tab
        hhalign space --models sft=./out/sft dpo=./out/dpo-lora --results results/mine --memory_budget_gb 6
    """
    demo = create(cfg, app_dir)
    logger.info(f"serving on http://{cfg.host}:{cfg.port} (tabs: {', '.join(TABS)})")
    try:
        demo.launch(server_name=cfg.host, server_port=cfg.port, theme=gr.themes.Soft(), ssr_mode=False,
                    footer_links=["api", "gradio"])
    except OSError as exc:
        raise HHAlignError(f"cannot serve on {cfg.host}:{cfg.port} ({exc}); pass another --port") from None


def main(argv: list[str] | None = None, app_dir: str | Path | None = None, description: str | None = None) -> int:
    """``space/app.py``: HHALIGN_SPACE_ARGS and the command line, then :func:`main_from_config`."""
    from ..cli import run

    return run(lambda cfg: main_from_config(cfg, app_dir), [SpaceConfig], space_argv(argv), prog="space/app.py",
               description=description or main_from_config.__doc__)
