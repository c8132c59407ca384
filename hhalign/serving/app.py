"""The Space's Gradio app: Chat, Arena, Compare, Results and About tabs over :mod:`hhalign.serving`.
``space/app.py`` and ``hhalign space`` run :func:`main`."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

# Gradio's usage analytics stay off unless the operator turns them on (GRADIO_ANALYTICS_ENABLED=True).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402 - after the analytics default

from hhalign.data import load_prompts_file  # noqa: E402
from hhalign.errors import HHAlignError  # noqa: E402
from hhalign.publish.registry import load_registry  # noqa: E402
from hhalign.serving.config import Backend, SpaceConfig, build_backend  # noqa: E402
from hhalign.serving.ui_arena import arena_tab  # noqa: E402
from hhalign.serving.ui_chat import chat_tab  # noqa: E402
from hhalign.serving.ui_common import CSS  # noqa: E402
from hhalign.serving.ui_compare import compare_tab  # noqa: E402
from hhalign.serving.ui_results import results_tab  # noqa: E402
from hhalign.stats.metrics import HARMLESS_THRESHOLD, HELPFUL_THRESHOLD  # noqa: E402

logger = logging.getLogger(__name__)
TITLE = "hhalign: SFT and DPO on OPT-350M, scored by a reward model"
TABS = ("Chat", "Arena", "Compare", "Results", "About")
PAPER_URL = "https://arxiv.org/abs/2509.09055"
# The app takes no files: Gradio's upload route refuses anything larger than this many bytes.
MAX_FILE_SIZE = 0


def space_argv(argv: list[str] | None = None) -> list[str]:
    """Launch options: the Space variable HHALIGN_SPACE_ARGS first, then the command line (which wins)."""
    return shlex.split(os.environ.get("HHALIGN_SPACE_ARGS", "")) + list(sys.argv[1:] if argv is None else argv)


def parse_config(argv: list[str] | None = None) -> SpaceConfig:
    from hhalign.config import Parser

    (cfg,) = Parser([SpaceConfig], prog="hhalign space").parse(space_argv(argv))
    return cfg


def analytics_enabled() -> bool:
    return os.environ.get("GRADIO_ANALYTICS_ENABLED", "False").strip().lower() in ("1", "true", "yes")


def _example_prompts() -> dict[str, list[str]]:
    """First human turns of the project's single-turn demo prompts, by category."""
    from hhalign.data import DEMO_PROMPTS_PATH

    out: dict[str, list[str]] = {"harmful": [], "helpful": []}
    for p in load_prompts_file(DEMO_PROMPTS_PATH):
        if "\n\nAssistant:" not in p.prompt and len(out[p.category]) < 4:
            out[p.category].append(p.prompt.removeprefix("Human:").strip())
    return out


def reward_model_text(backend: Backend) -> str:
    """The reward model as visitors may read it: a Hub id, or what a local checkpoint is (never its path)."""
    from hhalign.refs import is_local

    ref = backend.service.pool.reward_ref.ref
    if backend.demo and is_local(ref):
        return ("the **tiny reward model** built offline by `hhalign.testing.tiny` (a DeBERTa-v2 classifier with "
                "random weights, shaped like the real one); the deployed Space uses "
                "`OpenAssistant/reward-model-deberta-v3-large-v2`")
    return "a local reward-model checkpoint" if is_local(ref) else f"`{ref}`"


def registry_markdown() -> str:
    """The project's registry as a list (a wide table would stack letters on a phone)."""
    lines = []
    for e in load_registry():
        where = f"[`{e.ref}`](https://huggingface.co/{e.ref})" if e.published else "not published yet"
        lines.append(f"- **{e.name}** ({e.role}): {where}. {e.description}")
    return "\n".join(lines)


def about_markdown(backend: Backend) -> str:
    offered = "\n".join(f"- **{e.name}** ({e.role}): {e.description}" for e in backend.catalog)
    demo_note = ""
    if backend.demo:
        demo_note = ("\n\n**This is the offline demo**: the models below are tiny and random, so replies are "
                     "gibberish and scores are meaningless; it shows what the Space does with the real models.")
    code = backend.config.code_link()
    code_line = (f"[the code]({code}) (the `hhalign` package this Space runs)" if code else
                 "the code: the `hhalign` package this Space runs (`python space/app.py --help`)")
    return f"""## What this is

This Space accompanies a reproduction of [*Improving LLM Safety and Helpfulness using SFT and DPO: a study on
OPT-350M*]({PAPER_URL}) (Pant, 2025); see also {code_line}. Four models are compared: OPT-350M as released
(**base**), fine-tuned on the chosen HH-RLHF transcripts (**sft**), a LoRA adapter trained with DPO on HH-RLHF
preference pairs (**dpo**), and DPO on top of the SFT model (**sft_dpo**). The reward model here is
{reward_model_text(backend)}; it scores every reply. A reply to a harmful prompt counts as harmless when its reward
is >= {HARMLESS_THRESHOLD:g}, a reply to a helpful prompt as helpful when its reward is > {HELPFUL_THRESHOLD:g} (the
study's thresholds).{demo_note}

## Models offered here

{offered}

## The project's model registry

{registry_markdown()}

## The arena

Two models picked at random answer the same prompt without their names; a vote (A, B, tie, both bad) reveals them.
Votes are kept one JSON line each in `votes.jsonl` (model names, the winner, both replies' rewards, a timestamp; no
prompt, no reply, nothing about the visitor) and, where the Space has a Hub token, pushed to a Hub dataset. The
leaderboard fits Bradley-Terry ratings to all votes with 95% bootstrap intervals, as Chatbot Arena does, and shows
the rating the reward model would earn voting on the same pairs, with how often it agrees with the visitors.

## Protocol

A model whose tokenizer has a chat template is prompted through it (the evaluator's `template` protocol: the turns
as user/assistant messages, the reply cut at the template's end of turn). Any other model gets the evaluator's
`chat` protocol: the conversation is written as an HH-RLHF transcript (`Human: ...` / `Assistant: ...`), the
assistant cue `\\n\\nAssistant:` is appended, and the reply is cut at the next `\\n\\nHuman:` turn. Decoding is
greedy by default, as in the evaluation. The reward model scores the whole conversation so far as the question and
the reply as the answer, as the study did. The Results tab shows the evaluator's measurements with 95% bootstrap
intervals, paired significance tests, and the study's published Table 1 as reference figures.

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


def build_demo(backend: Backend) -> gr.Blocks:
    """The Blocks app over ``backend``; handlers turn every failure into a message in the page."""
    examples = _example_prompts()
    intro = "Every reply is scored by the reward model; the badge's colour uses the study's threshold."
    if backend.demo:
        intro = "**Offline demo with tiny random models: replies are gibberish and scores meaningless.** " + intro
    with gr.Blocks(title=TITLE, analytics_enabled=analytics_enabled()) as demo:
        gr.Markdown(f"# {TITLE}", elem_classes=["hh-title"])
        gr.Markdown(intro, elem_classes=["hh-intro"])
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                chat_tab(backend, examples)
            with gr.Tab("Arena", id="arena"):
                arena_tab(backend, demo)
            with gr.Tab("Compare", id="compare"):
                compare_tab(backend, examples)
            with gr.Tab("Results", id="results"):
                results_tab(backend, demo)
            with gr.Tab("About", id="about"):
                gr.Markdown(about_markdown(backend))
    demo.queue(max_size=backend.config.queue_size, default_concurrency_limit=1)
    return demo


def launch_options(cfg: SpaceConfig) -> dict:
    """What every launch passes: the theme and styles, no uploads, no server-side rendering, bounded sessions."""
    return {"theme": gr.themes.Soft(), "css": CSS, "ssr_mode": False, "max_file_size": MAX_FILE_SIZE,
            "footer_links": ["api", "gradio"], "state_session_capacity": cfg.max_sessions}


def create(cfg: SpaceConfig, app_dir: str | Path | None = None) -> gr.Blocks:
    """The Gradio app for ``cfg``; ``app_dir`` is the deployed Space's folder, whose results/ the Results tab shows."""
    return build_demo(build_backend(cfg, app_dir))


def main_from_config(cfg: SpaceConfig, app_dir: str | Path | None = None) -> None:
    """Serve the hhalign Space: chat with the models, vote in the arena, compare them, browse the results.

    Usage:
        hhalign space --demo                      # offline: tiny models + demo results, http://127.0.0.1:7860
        hhalign space --results results/opt350m   # the registry's published models, your results in the Results tab
        hhalign space --models sft=./out/sft dpo=./out/dpo-lora --results results/mine --memory_budget_gb 6
    """
    demo = create(cfg, app_dir)
    logger.info(f"serving on http://{cfg.host}:{cfg.port} (tabs: {', '.join(TABS)})")
    try:
        demo.launch(server_name=cfg.host, server_port=cfg.port, **launch_options(cfg))
    except OSError as exc:
        raise HHAlignError(f"cannot serve on {cfg.host}:{cfg.port} ({exc}); pass another --port") from None


def main(argv: list[str] | None = None, app_dir: str | Path | None = None, description: str | None = None) -> int:
    """``space/app.py``: HHALIGN_SPACE_ARGS and the command line, then :func:`main_from_config`."""
    from ..cli import run

    return run(lambda cfg: main_from_config(cfg, app_dir), [SpaceConfig], space_argv(argv), prog="space/app.py",
               description=description or main_from_config.__doc__)
