"""Helpers for the Space's tests: a "parrot" model that always answers with a chosen text, served like any other.

The parrot is a real OPT checkpoint (it loads, generates and streams through the same code as the study's models)
whose weights are set by hand: attention and MLP outputs and position embeddings are zero, so the last hidden state
is the layer-normed embedding of the current token, and the output head maps each token of the chosen reply to the
next one (a bigram table). Greedy decoding after the chat protocol's assistant cue then writes exactly that reply.
"""

from __future__ import annotations

from pathlib import Path

# A heading marker, an HTML strike tag, Markdown emphasis and an escape character: rendered as Markdown/HTML this
# becomes a struck-through heading; shown as text it reads exactly like this.
PARROT_REPLY = "# Yes <s>gone\x1b *em"


def _reply_ids(tok, text: str) -> list[int]:
    # "<s>" is OPT's special token 0, which decoding drops: write it from its plain characters instead.
    ids: list[int] = []
    for i, piece in enumerate(text.split("<s>")):
        if i:
            ids += [t for ch in "<s>" for t in tok(ch, add_special_tokens=False)["input_ids"]]
        ids += tok(piece, add_special_tokens=False)["input_ids"]
    return ids


def build_parrot(tokenizer_dir: str | Path, out: str | Path, reply: str = PARROT_REPLY) -> Path:
    """An OPT model under ``out`` that greedily answers every chat-protocol prompt with ``reply``."""
    import torch
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    from hhalign.protocol import model_input

    out = Path(out)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cue = tok(model_input("Human: hi", "chat"))["input_ids"][-1]
    chain = [cue, *_reply_ids(tok, reply), tok.eos_token_id]
    if len(set(chain[:-1])) != len(chain) - 1:
        raise ValueError(f"the parrot's reply {reply!r} repeats a token (or the assistant cue): a bigram table "
                         "cannot write it")
    hidden = 64
    config = OPTConfig(vocab_size=len(tok) + (-len(tok)) % 8, hidden_size=hidden, num_hidden_layers=1, ffn_dim=64,
                       num_attention_heads=4, max_position_embeddings=2048, do_layer_norm_before=True,
                       word_embed_proj_dim=hidden, tie_word_embeddings=False, dropout=0.0, pad_token_id=1,
                       bos_token_id=2, eos_token_id=2)
    torch.manual_seed(0)
    model = OPTForCausalLM(config).eval()
    decoder = model.model.decoder
    with torch.no_grad():
        decoder.embed_positions.weight.zero_()
        for layer in decoder.layers:
            for linear in (layer.self_attn.out_proj, layer.fc2):
                linear.weight.zero_()
                linear.bias.zero_()
        states = torch.nn.functional.layer_norm(decoder.embed_tokens.weight, (hidden,))
        head = torch.zeros_like(model.lm_head.weight)
        for current, following in zip(chain, chain[1:]):
            head[following] += states[current]
        model.lm_head.weight.copy_(head)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
