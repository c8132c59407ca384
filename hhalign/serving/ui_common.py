"""What the Space's tabs share: error messages for the page, decoding options, model preparation, styles."""

from __future__ import annotations

import logging
import traceback
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

import gradio as gr

from ..errors import HHAlignError
from .chat import DecodeOptions, Limits
from .render import brief

if TYPE_CHECKING:
    from .config import Backend

logger = logging.getLogger(__name__)
T = TypeVar("T")


def ui_error(exc: BaseException) -> gr.Error:
    """User errors keep their one-line message; anything else is logged and named briefly, never raised raw."""
    return gr.Error(error_text(exc), print_exception=False)


def error_text(exc: BaseException) -> str:
    if isinstance(exc, HHAlignError):
        return str(exc)
    logger.error("unexpected error\n%s", "".join(traceback.format_exception(exc)))
    return f"unexpected error ({type(exc).__name__}); the app keeps running, try again"


def decode_options(limits: Limits, greedy, max_new, temperature, top_p) -> DecodeOptions:
    if not isinstance(greedy, bool):  # a checkbox accepts anything an API client sends
        raise HHAlignError(f"greedy must be true or false, got {brief(greedy)}")
    return DecodeOptions(int(max_new), bool(greedy), float(temperature), float(top_p)).checked(limits)


def loading_note(backend: Backend, models: list[str]) -> str:
    """What the page says while models load ("" when all are loaded): shown in the tab's own status line, which
    the reply replaces (a toast could outlive the reply)."""
    pool = backend.service.pool
    missing = [m for m in dict.fromkeys(models) if not pool.is_loaded(m)]
    return f"*Loading {', '.join(missing)}: the first reply takes longer…*" if missing else ""


def prepare(backend: Backend, models: list[str]) -> None:
    """Load models before any GPU window opens (ZeroGPU keeps what the main process loaded)."""
    backend.service.prepare(models)


def last(items: Iterable[T]) -> T:
    """The last item of a stream (a reply finished, for callers that do not show it streaming)."""
    tail = deque(items, maxlen=1)
    if not tail:
        raise HHAlignError("nothing was generated")
    return tail[0]


def generation_limits(backend: Backend) -> dict:
    # Chat, compare and arena share one limit: they run the same models on the same device.
    return {"concurrency_limit": backend.config.concurrency, "concurrency_id": "generate"}


def sampling_controls(greedy: bool):
    """Temperature and top-p only matter when sampling: disabled while Greedy is ticked."""
    return gr.update(interactive=not greedy), gr.update(interactive=not greedy)


def checked(component: T) -> T:
    """``component`` with a value it would refuse refused first: a one-line error that quotes at most a few dozen
    characters of it and is not logged (Gradio's own error quotes the whole value and logs it with a traceback). An
    instance attribute, not a subclass: Gradio writes a .pyi stub beside the module of every component subclass."""
    refuse = component.preprocess

    def preprocess(payload):
        try:
            return refuse(payload)
        except Exception:  # noqa: BLE001 - any refusal of the visitor's value: said briefly, not logged
            raise gr.Error(f"{component.label or type(component).__name__}: {allowed(component)}, got "
                           f"{brief(payload)}", print_exception=False) from None

    component.preprocess = preprocess
    return component


def allowed(component) -> str:
    if hasattr(component, "choices"):
        return "choose one of " + ", ".join(repr(v) for _, v in component.choices)
    if hasattr(component, "maximum"):
        return f"a number from {component.minimum:g} to {component.maximum:g}"
    return "not a valid value"


# Every Radio, Dropdown and Slider an event reads is made by these: refusals are short and unlogged.
def Radio(*args, **kwargs) -> gr.Radio:  # noqa: N802 - named as the component it makes
    return checked(gr.Radio(*args, **kwargs))


def Dropdown(*args, **kwargs) -> gr.Dropdown:  # noqa: N802
    return checked(gr.Dropdown(*args, **kwargs))


def Slider(*args, **kwargs) -> gr.Slider:  # noqa: N802
    return checked(gr.Slider(*args, **kwargs))


CSS = """
.hh-badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 0.85em; font-weight: 600;
  color: #fff; line-height: 1.6; white-space: nowrap; }
.hh-pass { background: #15803d; }
.hh-fail { background: #b91c1c; }
.hh-none { background: #6b7280; }
.hh-explainer { font-size: 0.85em; opacity: 0.85; }
.hh-text { white-space: pre-wrap; overflow-wrap: anywhere; }
.hh-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 12px; min-height: 4em; }
.hh-card-head { font-weight: 700; margin-bottom: 6px; }
.hh-best { color: #b45309; }
.hh-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 10px; }
.hh-cards .hh-card dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 10px; margin: 0; }
.hh-cards .hh-card dt { font-weight: 600; }
.hh-cards .hh-card dd { margin: 0; }
.hh-figure { margin: 0 0 12px 0; }
.hh-figure img { max-width: 100%; height: auto; display: block; background: #fff; border-radius: 4px; }
.hh-figure figcaption { font-size: 0.85em; opacity: 0.85; margin-top: 4px; }
.hh-csv a { font-weight: 600; }
/* Gradio 6.31 leaves a separator after the last footer link. */
footer > .divider:last-child { display: none; }
@media (max-width: 640px) {
  .hh-hide-phone { display: none !important; }
  /* The chat box and the latest reply on a phone's first screen (390x844): a smaller title and intro, a shorter
     conversation pane, and the conversation, its box and buttons before the settings. */
  .hh-title h1 { font-size: 1.25rem !important; margin: 0 !important; }
  .hh-intro { font-size: 0.8em; }
  .hh-phone-first { order: -1; }
  #chatbot { height: min(380px, 46vh) !important; }
  /* Narrower tab labels, so all five tabs fit a phone's width instead of hiding behind "...". */
  .tab-container button { padding-left: 7px !important; padding-right: 7px !important; }
}
"""
