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
# The shared data sit next to the main checkout (../shared); a worktree one level deeper finds them further up.
SHARED = next((p / "shared" for p in ROOT.parents if (p / "shared" / "data").is_dir()), ROOT.parent / "shared")
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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: the tiny models gain nothing from more, and on a shared CPU thread sync makes steps crawl."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _shared(path: Path, what: str) -> Path:
    """A path under ../shared; missing, a test is skipped on a developer's machine but fails in CI, where the
    data is part of the contract."""
    if not path.is_dir():
        message = f"{what} not found at {path}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run with ../shared present")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def hh_path() -> Path:
    return _shared(HH_PATH, "local HH-RLHF copy")


@pytest.fixture(scope="session")
def study_responses() -> Path:
    return _shared(STUDY_RESPONSES, "the study's published ratings")


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

    from hhalign.stats.results import ensure_demo_results

    cache = tmp_path_factory.mktemp("space-cache")
    for part in ("policy", "reward"):
        shutil.copytree(getattr(tiny_models, part), cache / "models" / part)
    return ensure_demo_results(cache)


@pytest.fixture(scope="session")
def parrot_model(tiny_models, tmp_path_factory) -> Path:
    """An OPT checkpoint that answers every chat prompt with ``space_support.PARROT_REPLY`` (see space_support)."""
    from space_support import build_parrot

    return build_parrot(tiny_models.policy, tmp_path_factory.mktemp("parrot") / "parrot")
