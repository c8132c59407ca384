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
import math
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import ASSETS_DIR, write_json
from ..loading import quiet_peft

# Bump whenever the code below changes what gets written: builds with another version (or corpus) are rebuilt.
TINY_VERSION = "hhalign-tiny-1"
MARKER_FILE = "hhalign_tiny.json"
CORPUS_PATH = ASSETS_DIR / "tiny_corpus.txt"

POLICY_SEED = 350
REWARD_SEED = 1024

# OPT's GPT-2 style vocabulary starts with these four, in this order: <s>=0, <pad>=1, </s>=2 (BOS and EOS), <unk>=3.
POLICY_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
# DeBERTa-v3's SentencePiece vocabulary starts with [PAD]=0, [CLS]=1, [SEP]=2, [UNK]=3 ([MASK] is last there).
REWARD_SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")

POLICY_VOCAB_TARGET = 1000
REWARD_VOCAB_TARGET = 1000

# The tiny reward model's head is rescaled after its random init (with initializer_range 0.2, see _build_reward): raw
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
        with _quiet_progress_bars():
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


def main(cfg: TinyConfig) -> TinyModels:
    """Build the tiny, offline, deterministic stand-ins of the policy (OPT) and the reward model (DeBERTa-v2).

    Usage:
        hhalign tiny --out outputs/tiny
    """
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


# --- policy: OPT-350m in miniature --------------------------------------------------------------------------------


def _train_policy_tokenizer(corpus: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE like GPT-2/OPT's; BPE training is deterministic, so the vocabulary is too."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=POLICY_VOCAB_TARGET,
        special_tokens=list(POLICY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no text is ever out of vocabulary
        show_progress=False,
    )
    tokenizer.train_from_iterator([corpus], trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return model["vocab"], [tuple(merge) for merge in model["merges"]]


def _build_policy(folder: Path, corpus: str) -> None:
    from transformers import GenerationConfig, GPT2Tokenizer, OPTConfig, OPTForCausalLM

    vocab, merges = _train_policy_tokenizer(corpus)
    # OPT's hub checkpoint names GPT2Tokenizer. add_bos_token=True writes a "</s> $A" post-processor into
    # tokenizer.json, which is what prepends </s> (id 2) after loading: transformers 5 drops add_bos_token from
    # tokenizer_config.json on save and on load whenever a tokenizer.json exists, so `tok.add_bos_token` reads False.
    tokenizer = GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        bos_token="</s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        add_prefix_space=False,
        add_bos_token=True,
    )
    config = OPTConfig(
        vocab_size=_round_up(len(tokenizer), 8),
        hidden_size=64,
        num_hidden_layers=2,
        ffn_dim=128,
        num_attention_heads=4,
        max_position_embeddings=2048,
        # Like opt-350m: post-norm layers and a word-embedding width different from the hidden size, which adds the
        # project_in/project_out layers that only this OPT size has.
        do_layer_norm_before=False,
        word_embed_proj_dim=32,
        dropout=0.1,
        attention_dropout=0.0,
        activation_function="relu",
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=2,
        prefix="</s>",
    )
    model = _seeded_init(OPTForCausalLM, config, POLICY_SEED)
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=2, pad_token_id=1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# --- reward: DeBERTa-v3-large reward model in miniature -----------------------------------------------------------


def _train_reward_vocab(corpus: str) -> list[tuple[str, float]]:
    """SentencePiece-style Unigram vocabulary (pieces with log-probability scores), built deterministically.

    The `tokenizers` UnigramTrainer is not deterministic (piece order and scores change from run to run), so the pieces
    come from a BPE trainer over the same Metaspace pre-tokenization (deterministic), and each piece's score is its
    smoothed log-frequency when the corpus is segmented with those pieces.
    """
    from tokenizers import Tokenizer, models, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer = _deberta_normalizer_and_pretokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=REWARD_VOCAB_TARGET, special_tokens=list(REWARD_SPECIAL_TOKENS), show_progress=False
    )
    tokenizer.train_from_iterator([corpus], trainer)
    counts = Counter(tokenizer.encode(corpus, add_special_tokens=False).tokens)
    pieces = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    normal = [piece for piece, _ in pieces if piece not in REWARD_SPECIAL_TOKENS]
    total = sum(counts[piece] + 1 for piece in normal)
    # Rounded so the JSON text is identical on every platform.
    scored = [(piece, round(math.log((counts[piece] + 1) / total), 6)) for piece in normal]
    return [(token, 0.0) for token in REWARD_SPECIAL_TOKENS] + scored


def _deberta_normalizer_and_pretokenizer() -> tuple[Any, Any]:
    """The same normalizer and pre-tokenizer that transformers' DebertaV2Tokenizer builds."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "),
            normalizers.NFC(),
            normalizers.Strip(left=False, right=True),
        ]
    )
    return normalizer, pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")


def build_tiny_reward(out_dir: str | Path, *, seed: int = REWARD_SEED, chat_template: str | None = None) -> Path:
    """One more tiny reward model (another seed: another, equally meaningless judge), e.g. for several judges.

    ``chat_template`` is stored with its tokenizer, for testing reward models that read a chat template.
    """
    out = Path(out_dir)
    extra = {"seed": seed, "chat_template": chat_template}
    if _is_complete(out, _REWARD_FILES, extra):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-reward-", dir=out.parent))
    try:
        with _quiet_progress_bars():
            _build_reward(staging, CORPUS_PATH.read_text(encoding="utf-8"), seed, chat_template)
        _write_marker(staging, "reward", extra)
        for path in staging.iterdir():
            path.chmod(0o644)
        _move_into_place(staging, out, _REWARD_FILES)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _build_reward(folder: Path, corpus: str, seed: int = REWARD_SEED, chat_template: str | None = None) -> None:
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2Tokenizer

    vocab = _train_reward_vocab(corpus)
    # DebertaV2Tokenizer adds the pair template [CLS] A [SEP] B [SEP] with token_type_ids 0/1. model_max_length is
    # int(1e30) as in the real reward model, so `truncation=True` alone truncates nothing there either.
    tokenizer = DebertaV2Tokenizer(
        vocab=vocab,
        do_lower_case=False,
        split_by_punct=False,
        unk_id=REWARD_SPECIAL_TOKENS.index("[UNK]"),
        model_max_length=int(1e30),
    )
    config = DebertaV2Config(
        vocab_size=_round_up(len(tokenizer), 8),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_act="gelu",
        max_position_embeddings=512,
        type_vocab_size=0,
        layer_norm_eps=1e-7,
        pad_token_id=0,
        # Ten times DeBERTa's 0.02: with the default, attention is nearly uniform and the [CLS] state (hence the
        # score) hardly depends on the input (std 1e-4 across the corpus); 0.2 makes scores differ between texts.
        initializer_range=0.2,
        # DeBERTa-v3's attention: relative positions only, log buckets, shared keys, both disentangled terms.
        relative_attention=True,
        max_relative_positions=-1,
        position_buckets=256,
        position_biased_input=False,
        pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pooler_hidden_size=64,
        pooler_dropout=0.0,
        pooler_hidden_act="gelu",
        num_labels=1,
        id2label={0: "LABEL_0"},
        label2id={"LABEL_0": 0},
    )
    model = _seeded_init(DebertaV2ForSequenceClassification, config, seed)
    with torch.no_grad():
        model.classifier.weight.mul_(REWARD_CLASSIFIER_SCALE)
        model.classifier.bias.fill_(REWARD_CLASSIFIER_BIAS)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# --- helpers ------------------------------------------------------------------------------------------------------


def _seeded_init(model_cls: Any, config: Any, seed: int) -> Any:
    """Instantiate with fixed-seed random weights without disturbing the caller's global RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.eval()


@contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Hide save_pretrained's one-step "Writing model shards" bar, then restore the caller's settings."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
    from transformers.utils import logging as hf_logging

    transformers_on, hub_off = hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # also turns off huggingface_hub's bars
    try:
        yield
    finally:
        if transformers_on:
            hf_logging.enable_progress_bar()
            if hub_off:
                disable_progress_bars()


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


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
    with _quiet_progress_bars():
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(policy_dir)).save_pretrained(tmp)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
