"""Tiny random models of other causal-LM families (Llama, Qwen2, GPT-NeoX), built offline with transformers' own
classes and the project's tiny tokenizer, optionally with a chat template: stand-ins for SmolLM2, Qwen2.5 and Pythia
(and their instruct versions) in the tests of chat templates, training on other bases and decoder judges.

A small local helper: hhalign.testing's family builders can replace it (same arguments: family and folder).
"""

from __future__ import annotations

from pathlib import Path

# ChatML, as SmolLM2-Instruct and Qwen2.5-Instruct write it (without Qwen's default system message).
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Llama-3 style: BOS written by the template, turns end in <|eot_id|>, while the tokenizer's EOS is another token.
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
TEMPLATES = {
    "chatml": (CHATML, ["<|im_start|>", "<|im_end|>"], "<|im_end|>"),
    "llama3": (LLAMA3, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], None),
}
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=2048)


def tiny_tokenizer(tokenizer_dir: str | Path, template: str | None = None):
    """The project's tiny tokenizer (from ``tokenizer_dir``), with a chat template's special tokens and template
    (``chatml``: EOS becomes ``<|im_end|>``; ``llama3``: EOS stays, turns end in ``<|eot_id|>``)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if template is not None:
        text, specials, eos = TEMPLATES[template]
        tok.add_special_tokens({"additional_special_tokens": specials})
        if eos:
            tok.eos_token = eos
        tok.chat_template = text
    return tok


def family_config(family: str, tok, **extra):
    """A tiny config of ``family`` sized to ``tok`` (vocabulary rounded up to a multiple of 8)."""
    import transformers

    ids = dict(vocab_size=len(tok) + (-len(tok)) % 8, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id)
    if family == "llama":
        return transformers.LlamaConfig(**{**SMALL, "num_key_value_heads": 2, **ids, **extra})
    if family == "qwen2":
        return transformers.Qwen2Config(**{**SMALL, "num_key_value_heads": 2, **ids, **extra})
    if family == "gemma2":
        return transformers.Gemma2Config(**{**SMALL, "num_key_value_heads": 2, "head_dim": 16, **ids, **extra})
    if family == "gpt2":
        return transformers.GPT2Config(**{"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 2048, **ids,
                                          **extra})
    if family == "gpt_neox":
        return transformers.GPTNeoXConfig(**{**SMALL, "rotary_pct": 0.25, **ids, **extra})
    raise ValueError(f"unknown family {family!r}")


def build_family(family: str, tokenizer_dir: str | Path, out: str | Path, template: str | None = None,
                 seed: int = 0, head: str = "causal_lm") -> Path:
    """A tiny ``family`` model (``head``: causal_lm or sequence_classification with one logit) saved with its
    tokenizer under ``out``."""
    import torch
    import transformers

    out = Path(out)
    tok = tiny_tokenizer(tokenizer_dir, template)
    config = family_config(family, tok, **({"num_labels": 1} if head != "causal_lm" else {}))
    auto = transformers.AutoModelForCausalLM if head == "causal_lm" else \
        transformers.AutoModelForSequenceClassification
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = auto.from_config(config).eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_llama_parrot(tokenizer_dir: str | Path, out: str | Path, reply: str, template: str = "llama3",
                       after: str = " and more") -> Path:
    """A Llama that answers every ``--protocol template`` prompt with ``reply``, the template's end-of-turn token,
    then ``after`` and EOS: what follows the end of turn must be cut off.

    Attention and MLP outputs are zero, so the last hidden state is the normalized embedding of the current token,
    and the output head maps each token of the chain to the next one (a bigram table), as tests/space_support's OPT
    parrot does."""
    import torch
    import transformers

    from hhalign.protocol import template_input, turn_end_ids

    out = Path(out)
    tok = tiny_tokenizer(tokenizer_dir, template)
    cue = tok(template_input(tok, "Human: hi"), add_special_tokens=False)["input_ids"][-1]

    def enc(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    chain = [cue, *enc(reply), turn_end_ids(tok)[0], *enc(after), tok.eos_token_id]
    if len(set(chain)) != len(chain):
        raise ValueError(f"the parrot's chain {chain} repeats a token: a bigram table cannot write it")
    config = family_config("llama", tok, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        states = model.model.norm(model.model.embed_tokens.weight)
        head = torch.zeros_like(model.lm_head.weight)
        for current, following in zip(chain, chain[1:]):
            head[following] += states[current]
        model.lm_head.weight.copy_(head * 4)
    model.generation_config = transformers.GenerationConfig(bos_token_id=tok.bos_token_id,
                                                            eos_token_id=tok.eos_token_id,
                                                            pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
