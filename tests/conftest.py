"""Shared fixtures: tiny models built once per session, the local HH-RLHF copy, the study's published ratings."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Nothing may reach the Hub from tests: set before huggingface_hub is imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
HH_PATH = SHARED / "data" / "hh-rlhf"
STUDY_RESPONSES = SHARED / "reference" / "pant2025" / "responses"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """``TinyModels`` with ``.policy`` (tiny OPT) and ``.reward`` (tiny DeBERTa-v2 reward model) folders."""
    from hhalign.testing.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_adapter(tiny_models, tmp_path_factory):
    """A PEFT LoRA adapter folder on the tiny policy, with non-zero weights so it changes outputs."""
    from hhalign.testing.tiny import build_tiny_adapter

    return build_tiny_adapter(tiny_models.policy, tmp_path_factory.mktemp("adapter") / "lora")


@pytest.fixture(scope="session")
def hh_path() -> Path:
    if not HH_PATH.is_dir():
        pytest.skip(f"local HH-RLHF copy not found at {HH_PATH}")
    return HH_PATH


@pytest.fixture(scope="session")
def study_responses() -> Path:
    if not STUDY_RESPONSES.is_dir():
        pytest.skip(f"the study's published ratings not found at {STUDY_RESPONSES}")
    return STUDY_RESPONSES


@contextmanager
def captured_log() -> Iterator[list[str]]:
    """The messages hhalign logs (at INFO and above) while the block runs."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("hhalign")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="session")
def space_demo_cache(tiny_models, tmp_path_factory) -> Path:
    """The Space's --demo cache (tiny models and the evaluator's demo results), built once per session; tests that
    write into a cache (votes) copy it first. The session's tiny models are copied in, so build_tiny() skips them."""
    import shutil

    from hhalign.eval.results import ensure_demo_results

    cache = tmp_path_factory.mktemp("space-cache")
    for part in ("policy", "reward"):
        shutil.copytree(getattr(tiny_models, part), cache / "models" / part)
    return ensure_demo_results(cache)


@pytest.fixture(scope="session")
def parrot_model(tiny_models, tmp_path_factory) -> Path:
    """An OPT checkpoint that answers every chat prompt with ``space_support.PARROT_REPLY`` (see space_support)."""
    from space_support import build_parrot

    return build_parrot(tiny_models.policy, tmp_path_factory.mktemp("parrot") / "parrot")
