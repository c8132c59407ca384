"""One builder of offline stand-ins for the study's two models, used by the tests, the demos and the benchmark:
tokenizers trained on given text, and seeded random-weight models of the two architectures at their real size
(:data:`OPT_350M`, :data:`DEBERTA_V3_LARGE`: the benchmark) or in miniature (:data:`TINY_OPT`, :data:`TINY_DEBERTA`:
tests and demos, see :mod:`.tiny`).

The tokenizers are the real models' classes: a byte-level BPE ``GPT2Tokenizer`` with OPT's special ids (it prepends
``</s>`` as BOS) and a SentencePiece-style Unigram ``DebertaV2Tokenizer`` with DeBERTa-v3's (pair template
``[CLS] A [SEP] B [SEP]``). Training is deterministic, so the same text and size give the same files.
"""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

# facebook/opt-350m's config.json (the fields that shape the computation).
OPT_350M = dict(
    vocab_size=50272, hidden_size=1024, num_hidden_layers=24, ffn_dim=4096, num_attention_heads=16,
    word_embed_proj_dim=512, do_layer_norm_before=False, max_position_embeddings=2048, activation_function="relu",
    enable_bias=True, dropout=0.1, attention_dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2,
    prefix="</s>",
)
# HuggingFaceTB/SmolLM2-360M's config.json (LlamaForCausalLM; the same fields in its -Instruct variant): a Llama-family
# model of OPT-350M's size, with grouped-query attention (15 query heads of 64 sharing 5 key/value heads) and tied
# embeddings. The benchmark's Llama-family shape.
SMOLLM2_360M = dict(
    vocab_size=49152, hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
    intermediate_size=2560, hidden_act="silu", max_position_embeddings=8192, rms_norm_eps=1e-5,
    tie_word_embeddings=True, attention_bias=False, mlp_bias=False, initializer_range=0.02,
    rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
)
# OpenAssistant/reward-model-deberta-v3-large-v2's config.json (DeBERTa-v3-large with a one-logit head).
DEBERTA_V3_LARGE = dict(
    vocab_size=128100, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    hidden_act="gelu", max_position_embeddings=512, type_vocab_size=0, layer_norm_eps=1e-7, pad_token_id=0,
    relative_attention=True, max_relative_positions=-1, position_buckets=256, position_biased_input=False,
    pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", share_att_key=True, pooler_hidden_size=1024,
    pooler_dropout=0.0, pooler_hidden_act="gelu", num_labels=1, id2label={0: "LABEL_0"}, label2id={"LABEL_0": 0},
)
# The same architectures in miniature; vocab_size 0: sized to the tokenizer (rounded up to a multiple of 8). OPT keeps
# opt-350m's post-norm layers and its word-embedding projection (project_in/out), which only that OPT size has.
TINY_OPT = {**OPT_350M, "vocab_size": 0, "hidden_size": 64, "num_hidden_layers": 2, "ffn_dim": 128,
            "num_attention_heads": 4, "word_embed_proj_dim": 32}
# initializer_range: ten times DeBERTa's 0.02. With the default, attention is nearly uniform and the [CLS] state
# (hence the score) hardly depends on the input (std 1e-4 across the corpus); 0.2 makes scores differ between texts.
TINY_DEBERTA = {**DEBERTA_V3_LARGE, "vocab_size": 0, "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "intermediate_size": 128, "pooler_hidden_size": 64,
                "initializer_range": 0.2}

# Decoder families a student may align next, in miniature: transformers' own config and model classes, shaped like
# their released small models where it matters to the engine (grouped-query attention, rotary or learned positions,
# sliding windows, Gemma-2's alternating layers and logit soft-capping), 3 layers wide 64. vocab_size 0 and the
# special ids are taken from the tokenizer (see build_causal_lm). The sliding windows (24 tokens) are shorter than
# most test prompts, so windowed attention is exercised, not just configured. initializer_range 0.2 (ten times the
# usual 0.02): with the default, a tiny model with tied embeddings answers every prompt by repeating its last token
# (GPT-2, Llama, Qwen2 all answer ":::::"), and the logit margins are so small that tests of exactness would test
# near-ties. Gemma-2 keeps 0.02: its embeddings are scaled by sqrt(hidden) and 0.2 makes it repeat instead.
TINY_SLIDING_WINDOW = 24
TINY_INIT = 0.2
_TINY_ROPE = {"rope_type": "default", "rope_theta": 10000.0}
# Shared by the rotary families: 3 layers, hidden 64, 4 query heads sharing 2 key/value heads (grouped-query
# attention, as in SmolLM2, Qwen2.5, Mistral, Gemma-2), context 2048.
_TINY_DECODER = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=128, max_position_embeddings=2048, initializer_range=TINY_INIT,
                     rope_parameters=_TINY_ROPE)
TINY_CAUSAL_LMS: dict[str, tuple[str, str, dict]] = {
    # GPT-2: learned absolute positions (a left-padded row at shifted positions computes something else).
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(
        n_embd=64, n_layer=3, n_head=4, n_inner=128, n_positions=2048, initializer_range=TINY_INIT, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0)),
    # Llama with tied embeddings, like SmolLM2.
    "llama": ("LlamaConfig", "LlamaForCausalLM", {**_TINY_DECODER, "tie_word_embeddings": True}),
    # Qwen2 adds biases to the query/key/value projections.
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {**_TINY_DECODER, "tie_word_embeddings": True}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {**_TINY_DECODER, "sliding_window": TINY_SLIDING_WINDOW}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {**_TINY_DECODER, "original_max_position_embeddings": 2048}),
    # Pythia's layout: no grouped-query attention, parallel residual, rotary on a quarter of each head.
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {
        **_TINY_DECODER, "num_key_value_heads": None, "use_parallel_residual": True,
        "rope_parameters": {**_TINY_ROPE, "partial_rotary_factor": 0.25}}),
    # Gemma-2: sliding and full attention layers alternating, attention and final logits soft-capped.
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {
        **_TINY_DECODER, "initializer_range": 0.02, "head_dim": 16, "query_pre_attn_scalar": 16,
        "sliding_window": TINY_SLIDING_WINDOW,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}),
    # OPT-350M's layout (post-norm, word-embedding projection), as the tiny policy but 3 layers.
    "opt": ("OPTConfig", "OPTForCausalLM", {**TINY_OPT, "num_hidden_layers": 3}),
}
FAMILIES = tuple(TINY_CAUSAL_LMS)

# OPT's GPT-2 style vocabulary starts with these four, in this order: <s>=0, <pad>=1, </s>=2 (BOS and EOS), <unk>=3.
POLICY_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
# DeBERTa-v3's SentencePiece vocabulary starts with [PAD]=0, [CLS]=1, [SEP]=2, [UNK]=3 ([MASK] is last there).
REWARD_SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# --- tokenizers ---------------------------------------------------------------------------------------------------


def _policy_vocab(texts: Sequence[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE like GPT-2/OPT's; BPE training is deterministic, so the vocabulary is too."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(POLICY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no text is ever out of vocabulary
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return model["vocab"], [tuple(merge) for merge in model["merges"]]


def train_policy_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """OPT's tokenizer class with a vocabulary of ``vocab_size`` trained on ``texts``."""
    from transformers import GPT2Tokenizer

    vocab, merges = _policy_vocab(texts, vocab_size)
    # OPT's hub checkpoint names GPT2Tokenizer. add_bos_token=True writes a "</s> $A" post-processor into
    # tokenizer.json, which is what prepends </s> (id 2) after loading: transformers 5 drops add_bos_token from
    # tokenizer_config.json on save and on load whenever a tokenizer.json exists, so `tok.add_bos_token` reads False.
    return GPT2Tokenizer(vocab=vocab, merges=merges, bos_token="</s>", eos_token="</s>", unk_token="<unk>",
                         pad_token="<pad>", add_prefix_space=False, add_bos_token=True)


def deberta_normalizer_and_pretokenizer() -> tuple[Any, Any]:
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


def _reward_vocab(texts: Sequence[str], vocab_size: int) -> list[tuple[str, float]]:
    """SentencePiece-style Unigram vocabulary (pieces with log-probability scores), built deterministically.

    The `tokenizers` UnigramTrainer is not deterministic (piece order and scores change from run to run), so the pieces
    come from a BPE trainer over the same Metaspace pre-tokenization (deterministic), and each piece's score is its
    smoothed log-frequency when the texts are segmented with those pieces.
    """
    from tokenizers import Tokenizer, models, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer = deberta_normalizer_and_pretokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(REWARD_SPECIAL_TOKENS),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    counts: Counter = Counter()
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        counts.update(encoding.tokens)
    pieces = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    normal = [piece for piece, _ in pieces if piece not in REWARD_SPECIAL_TOKENS]
    total = sum(counts[piece] + 1 for piece in normal)
    # Rounded so the JSON text is identical on every platform.
    scored = [(piece, round(math.log((counts[piece] + 1) / total), 6)) for piece in normal]
    return [(token, 0.0) for token in REWARD_SPECIAL_TOKENS] + scored


def train_reward_tokenizer(texts: Sequence[str], vocab_size: int, chat_template: str | None = None) -> Any:
    """DeBERTa-v2/v3's tokenizer class with a vocabulary of about ``vocab_size`` pieces trained on ``texts``."""
    from transformers import DebertaV2Tokenizer

    # DebertaV2Tokenizer adds the pair template [CLS] A [SEP] B [SEP] with token_type_ids 0/1. model_max_length is
    # int(1e30) as in the real reward model, so `truncation=True` alone truncates nothing there either.
    tokenizer = DebertaV2Tokenizer(vocab=_reward_vocab(texts, vocab_size), do_lower_case=False, split_by_punct=False,
                                   unk_id=REWARD_SPECIAL_TOKENS.index("[UNK]"), model_max_length=int(1e30))
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


@contextmanager
def quiet_progress_bars() -> Iterator[None]:
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


# --- models -------------------------------------------------------------------------------------------------------


def seeded_init(model_cls: Any, config: Any, seed: int) -> Any:
    """Instantiate with fixed-seed random weights without disturbing the caller's global RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.eval()


def _vocab_size(config: dict, tokenizer: Any) -> int:
    size = config["vocab_size"] or round_up(len(tokenizer), 8)
    if size < len(tokenizer):
        raise ValueError(f"vocab_size {size} is smaller than the tokenizer's {len(tokenizer)} tokens")
    return size


def build_policy(tokenizer: Any, config: dict, seed: int) -> Any:
    """An OPT causal LM shaped by ``config`` (e.g. :data:`OPT_350M`) with seeded random weights."""
    from transformers import GenerationConfig, OPTConfig, OPTForCausalLM

    model = seeded_init(OPTForCausalLM, OPTConfig(**{**config, "vocab_size": _vocab_size(config, tokenizer)}), seed)
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=2, pad_token_id=1)
    return model


def build_causal_lm(family: str, tokenizer: Any, config: dict | None = None, seed: int = 0) -> Any:
    """A causal LM of ``family`` (one of :data:`FAMILIES`) shaped by ``config`` (default: the family's tiny config in
    :data:`TINY_CAUSAL_LMS`) with seeded random weights; its special ids are ``tokenizer``'s, and its vocabulary is
    sized to it when ``config`` has no ``vocab_size`` (or 0)."""
    import transformers
    from transformers import GenerationConfig

    if family not in TINY_CAUSAL_LMS:
        raise ValueError(f"unknown model family {family!r}: use one of {', '.join(FAMILIES)}")
    config_name, model_name, tiny = TINY_CAUSAL_LMS[family]
    # A deep copy: some config classes edit nested dicts in place (Phi3Config adds keys to rope_parameters).
    config = copy.deepcopy(tiny if config is None else config)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    config = {**config, **special, "vocab_size": _vocab_size({"vocab_size": 0, **config}, tokenizer)}
    config.pop("prefix", None)
    model = seeded_init(getattr(transformers, model_name), getattr(transformers, config_name)(**config), seed)
    model.generation_config = GenerationConfig(**special)
    return model


def build_reward(tokenizer: Any, config: dict, seed: int, head_scale: float = 1.0,
                 head_bias: float | None = None) -> Any:
    """A DeBERTa-v2 one-logit sequence classifier shaped by ``config`` (e.g. :data:`DEBERTA_V3_LARGE`) with seeded
    random weights; the head's weights are multiplied by ``head_scale`` and its bias set to ``head_bias``."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    config = DebertaV2Config(**{**config, "vocab_size": _vocab_size(config, tokenizer)})
    model = seeded_init(DebertaV2ForSequenceClassification, config, seed)
    with torch.no_grad():
        model.classifier.weight.mul_(head_scale)
        if head_bias is not None:
            model.classifier.bias.fill_(head_bias)
    return model
