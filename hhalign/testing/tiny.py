"""Tiny, offline, deterministic stand-ins for the study's two models.

`build_tiny(out)` writes `out/policy` (an OPT causal LM shaped like facebook/opt-350m) and `out/reward` (a DeBERTa-v2
sequence classifier shaped like OpenAssistant/reward-model-deberta-v3-large-v2), each with a real tokenizer trained on
the shipped corpus `assets/tiny_corpus.txt`. They load with the Auto classes exactly like the real checkpoints, so the
whole pipeline (SFT, DPO, generation, reward scoring) can be exercised on a CPU without the Hub.

CLI: `hhalign tiny --out DIR`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..files import ASSETS_DIR, write_json
from ..loading import quiet_peft
from . import builders
from .builders import TINY_DEBERTA, TINY_OPT, build_policy, build_reward, quiet_progress_bars

# Bump whenever the code below changes what gets written: builds with another version (or corpus) are rebuilt.
TINY_VERSION = "hhalign-tiny-1"
MARKER_FILE = "hhalign_tiny.json"
CORPUS_PATH = ASSETS_DIR / "tiny_corpus.txt"

POLICY_SEED = 350
REWARD_SEED = 1024

POLICY_VOCAB_TARGET = 1000
REWARD_VOCAB_TARGET = 1000

# The tiny reward model's head is rescaled after its random init (with initializer_range 0.2, see TINY_DEBERTA): raw
# logits then span about -4.3..+1.2 on HH-RLHF test dialogues; scale 1.6 and bias 1.0 move that to roughly -6..+3, the
# range the real reward model gives, so thresholds and plots downstream behave plausibly. These constants were found
# once by scoring those dialogues; fixed constants (not statistics computed at build time) keep the weights a pure
# function of the seed. They depend on the seed, corpus and configs: recheck them when changing any of those. The
# scores carry no meaning: the model is untrained.
REWARD_CLASSIFIER_SCALE = 1.6
REWARD_CLASSIFIER_BIAS = 1.0

_REWARD_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
_POLICY_FILES = (*_REWARD_FILES, "generation_config.json")


@dataclass(frozen=True)
class TinyModels:
    """Paths of a built pair of tiny models."""

    policy: Path
    reward: Path


def build_tiny(out_dir: str | Path, *, overwrite: bool = False) -> TinyModels:
    """Build the tiny policy and reward model under `out_dir` (skipped when a complete build is already there)."""
    out = Path(out_dir)
    models = TinyModels(policy=out / "policy", reward=out / "reward")
    if not overwrite and _is_complete(models.policy, _POLICY_FILES) and _is_complete(models.reward, _REWARD_FILES):
        return models

    corpus = CORPUS_PATH.read_text(encoding="utf-8")
    out.mkdir(parents=True, exist_ok=True)
    # Build in a staging folder next to the target and move into place, so a crash never leaves a half-written model
    # that a later call would mistake for a finished one (the marker is written last, inside the staging folder).
    staging = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=out))
    try:
        with quiet_progress_bars():
            _build_policy(staging / "policy", corpus)
            _build_reward(staging / "reward", corpus)
        for name, files in (("policy", _POLICY_FILES), ("reward", _REWARD_FILES)):
            _write_marker(staging / name, name)
            for path in (staging / name).iterdir():
                path.chmod(0o644)  # safetensors files come out 0600; make them readable like any other checkpoint
            _move_into_place(staging / name, out / name, files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return models


@dataclass
class TinyConfig:
    """Options of ``hhalign tiny``."""

    out: str = field(default="outputs/tiny", metadata={"help": "Folder to write policy/ and reward/ into."})
    overwrite: bool = field(default=False, metadata={"help": "Rebuild even if a complete build exists."})
    family: str | None = field(default=None, metadata={
        "help": "Instead, one tiny causal LM of this family written to --out: gpt2, llama, qwen2, mistral, phi3, "
                "gpt_neox, gemma2 or opt (see hhalign.testing.builders.TINY_CAUSAL_LMS)."})

    def __post_init__(self) -> None:
        if self.family is not None and self.family not in builders.TINY_CAUSAL_LMS:
            from ..errors import HHAlignError

            raise HHAlignError(f"unknown --family {self.family!r}: use one of {', '.join(builders.FAMILIES)}")


def main(cfg: TinyConfig) -> TinyModels | Path:
    """Build the tiny, offline, deterministic stand-ins of the policy (OPT) and the reward model (DeBERTa-v2), or
    with ``--family`` one tiny causal LM of that family.

    Usage:
        hhalign tiny --out outputs/tiny
        hhalign tiny --family llama --out outputs/tiny/llama
    """
    if cfg.family is not None:
        if cfg.overwrite:
            (Path(cfg.out) / MARKER_FILE).unlink(missing_ok=True)  # no marker: rebuilt
        folder = build_tiny_causal_lm(cfg.family, cfg.out)
        print(f"{cfg.family}: {folder}")
        return folder
    models = build_tiny(cfg.out, overwrite=cfg.overwrite)
    print(f"policy: {models.policy}")
    print(f"reward: {models.reward}")
    return models


# --- completeness -------------------------------------------------------------------------------------------------


def _is_complete(folder: Path, files: Sequence[str], extra: dict | None = None) -> bool:
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    expected = {"version": TINY_VERSION, "corpus_sha256": _corpus_sha256(), **(extra or {})}
    return all(marker.get(k) == v for k, v in expected.items()) and all((folder / name).is_file() for name in files)


def _corpus_sha256() -> str:
    return hashlib.sha256(CORPUS_PATH.read_bytes()).hexdigest()


def _write_marker(folder: Path, kind: str, extra: dict | None = None) -> None:
    marker = {"version": TINY_VERSION, "kind": kind, "corpus_sha256": _corpus_sha256(), **(extra or {})}
    write_json(folder / MARKER_FILE, marker)


def _move_into_place(src: Path, dst: Path, files: Sequence[str]) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    try:
        src.rename(dst)
    except OSError:
        # Another process finished the same build first; its output is identical, so keep it.
        if not _is_complete(dst, files):
            raise


# --- the two models -----------------------------------------------------------------------------------------------


def _build_policy(folder: Path, corpus: str) -> None:
    """OPT-350m in miniature (:data:`builders.TINY_OPT`) with its tokenizer, saved to ``folder``."""
    tokenizer = builders.train_policy_tokenizer([corpus], POLICY_VOCAB_TARGET)
    model = build_policy(tokenizer, TINY_OPT, POLICY_SEED)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def build_tiny_causal_lm(family: str, out_dir: str | Path, *, seed: int = POLICY_SEED,
                         chat_template: str | None = None) -> Path:
    """A tiny random causal LM of ``family`` saved to ``out_dir`` (a folder the evaluator and ``from_pretrained``
    load by path), built offline with transformers' own classes and the tiny policy's tokenizer; returns the folder.

    ``family`` is one of ``builders.FAMILIES``: 'gpt2', 'llama' (grouped-query attention), 'qwen2', 'mistral' (a
    24-token sliding window), 'phi3', 'gpt_neox', 'gemma2' (alternating sliding/full layers, soft-capping), 'opt'; the
    shapes are in ``builders.TINY_CAUSAL_LMS`` (3 layers, hidden 64). ``chat_template`` (a Jinja string) is stored
    with the tokenizer. A complete build of the same family, seed, template and code is reused.
    """
    if family not in builders.TINY_CAUSAL_LMS:
        raise ValueError(f"unknown model family {family!r}: use one of {', '.join(builders.FAMILIES)}")
    out = Path(out_dir)
    extra = {"family": family, "seed": seed, "chat_template": chat_template,
             "config": json.loads(json.dumps(builders.TINY_CAUSAL_LMS[family][2]))}
    if _is_complete(out, _POLICY_FILES, extra):
        return out

    def build(staging: Path) -> None:
        tokenizer = builders.train_policy_tokenizer([CORPUS_PATH.read_text(encoding="utf-8")], POLICY_VOCAB_TARGET)
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        model = builders.build_causal_lm(family, tokenizer, seed=seed)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    return _build_one(out, "policy", _POLICY_FILES, extra, build)


def build_tiny_reward(out_dir: str | Path, *, seed: int = REWARD_SEED, chat_template: str | None = None) -> Path:
    """One more tiny reward model (another seed: another, equally meaningless judge), e.g. for several judges.

    ``chat_template`` is stored with its tokenizer, for testing reward models that read a chat template.
    """
    out = Path(out_dir)
    extra = {"seed": seed, "chat_template": chat_template}
    if _is_complete(out, _REWARD_FILES, extra):
        return out
    return _build_one(out, "reward", _REWARD_FILES, extra,
                      lambda staging: _build_reward(staging, CORPUS_PATH.read_text(encoding="utf-8"), seed,
                                                    chat_template))


def _build_one(out: Path, kind: str, files: Sequence[str], extra: dict, build: Callable[[Path], None]) -> Path:
    """Run ``build`` into a staging folder beside ``out``, mark it, then move its ``files`` into ``out``: a killed
    build leaves only a hidden staging folder, never a half-written ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tiny-{kind}-", dir=out.parent))
    try:
        with quiet_progress_bars():
            build(staging)
        _write_marker(staging, kind, extra)
        for path in staging.iterdir():
            path.chmod(0o644)
        _move_into_place(staging, out, files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _build_reward(folder: Path, corpus: str, seed: int = REWARD_SEED, chat_template: str | None = None) -> None:
    """The DeBERTa-v3-large reward model in miniature (:data:`builders.TINY_DEBERTA`) with its tokenizer."""
    tokenizer = builders.train_reward_tokenizer([corpus], REWARD_VOCAB_TARGET, chat_template)
    model = build_reward(tokenizer, TINY_DEBERTA, seed, REWARD_CLASSIFIER_SCALE, REWARD_CLASSIFIER_BIAS)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# --- helpers ------------------------------------------------------------------------------------------------------


def build_tiny_adapter(policy_dir: str | Path, out_dir: str | Path, *, seed: int = 7) -> Path:
    """A LoRA adapter (q_proj/v_proj, r=4) on the tiny policy, saved with PEFT so it loads as an adapter reference.

    PEFT starts LoRA's B matrix at zero, which would make the adapter a no-op; random B weights make its outputs
    differ from the base, so comparisons and adapter loading are tested for real.
    """
    out_dir = Path(out_dir)
    if (out_dir / "adapter_config.json").exists() and (out_dir / "adapter_model.safetensors").exists():
        return out_dir
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(str(policy_dir))
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], bias="none",
                        task_type="CAUSAL_LM", init_lora_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with quiet_peft():
            model = get_peft_model(base, config)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=out_dir.parent if out_dir.parent.exists() else None))
    with quiet_progress_bars():
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(policy_dir)).save_pretrained(tmp)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
