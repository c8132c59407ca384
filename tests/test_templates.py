"""--protocol template: HH prompts as chat messages through the model's own chat template, replies cut at the
template's end of turn, judges still reading the HH transcript; tested on tiny Llama models (tests/families.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from families import build_family, build_llama_parrot, tiny_tokenizer

from conftest import ROOT
from hhalign.cli import run as cli_run
from hhalign.errors import HHAlignError
from hhalign.eval.config import EvalConfig
from hhalign.eval.run import run
from hhalign.files import read_log
from hhalign.protocol import cut_at_turn_end, model_input, prompt_messages, template_input, turn_end_ids

EVAL = [sys.executable, str(ROOT / "batch" / "eval.py")]
REPLY = "Sure, here it is"


@pytest.fixture(scope="module")
def chat_models(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-models")
    return {"parrot": build_llama_parrot(tiny_models.policy, root / "parrot", REPLY),
            "chatml": build_family("llama", tiny_models.policy, root / "chatml", template="chatml", seed=3),
            "judge": build_family("qwen2", tiny_models.policy, root / "judge", template="chatml", seed=4,
                                  head="sequence_classification")}


def test_hh_turns_become_alternating_messages():
    messages, unfinished = prompt_messages("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: one\n\nHuman: two"
                                           "\n\nAssistant:")
    assert messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": "one\n\ntwo"}] and not unfinished
    # The study's quirk: a prompt ending inside an assistant reply, which the model continues.
    assert prompt_messages("Human: hi\n\nAssistant: I think") == (
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "I think"}], True)
    assert prompt_messages("a bare question") == ([{"role": "user", "content": "a bare question"}], False)


@pytest.mark.parametrize("template, end", [("chatml", "<|im_end|>"), ("llama3", "<|eot_id|>")])
def test_template_input_and_its_end_of_turn(tiny_models, template, end):
    tok = tiny_tokenizer(tiny_models.policy, template)
    text = model_input("Human: hi\n\nAssistant: ok\n\nHuman: more?", "template", tok)
    assert text == tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"},
                                            {"role": "user", "content": "more?"}], tokenize=False,
                                           add_generation_prompt=True)
    assert template_input(tok, "Human: hi\n\nAssistant: I think").endswith("assistant<|end_header_id|>\n\nI think"
                                                                          if template == "llama3" else
                                                                          "<|im_start|>assistant\nI think")
    stops = turn_end_ids(tok)
    assert tok.convert_ids_to_tokens(stops[0]) == end and tok.eos_token_id in stops
    assert cut_at_turn_end([5, 6, stops[0], 7], stops) == [5, 6]
    with pytest.raises(HHAlignError, match="needs the model's tokenizer"):
        model_input("Human: hi", "template")


def test_eval_cli_with_template_protocol_end_to_end(chat_models, tiny_models, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [*EVAL, "--models", f"parrot={chat_models['parrot']}", f"chatml={chat_models['chatml']}", "--protocol",
         "template", "--reward_model", f"oa={tiny_models.reward}", f"qwen={chat_models['judge']}", "--judge_formats",
         "qwen=chat", "--prompt_set", "demo", "--limit", "3",
         "--max_new_tokens", "12", "--batch_size", "4", "--n_bootstrap", "100", "--judge_check", "0", "--no_plots",
         "--out", str(out)], capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["protocol"] == "template"
    records = read_log(out / "responses.jsonl")
    parrot = [r for r in records if r["model"] == "parrot"]
    # The parrot writes REPLY, <|eot_id|>, " and more", EOS: the reply ends at the template's end of turn.
    assert len(parrot) == 6 and {r["response"] for r in parrot} == {REPLY}
    reply_ids = tiny_tokenizer(chat_models["parrot"])(REPLY, add_special_tokens=False)["input_ids"]
    assert {r["n_new_tokens"] for r in parrot} == {len(reply_ids)}  # counted up to the end of turn
    # The judge read the HH transcript and the reply as a text pair, as for every other protocol.
    from hhalign.engine.reward import score
    from hhalign.loading import load_reward_model

    prompts, responses = [r["prompt"] for r in records], [r["response"] for r in records]
    judge = load_reward_model(str(tiny_models.reward))
    direct = score(judge.model, judge.tokenizer, prompts, responses, engine="loop")
    assert [r["reward"] for r in records] == pytest.approx([s.reward for s in direct], abs=1e-5)
    # A second judge on a decoder backbone (Qwen2 sequence classifier) reading its chat template, batched in the run.
    qwen = load_reward_model(str(chat_models["judge"]))
    direct = score(qwen.model, qwen.tokenizer, prompts, responses, engine="loop", input_format="chat")
    assert [r["rewards"]["qwen"] for r in records] == pytest.approx([s.reward for s in direct], abs=1e-5)


def test_a_model_without_chat_template_is_refused_in_one_line(tiny_models, tmp_path, capsys):
    out = tmp_path / "refused"
    code = cli_run(lambda cfg: run(cfg), [EvalConfig],
                   ["--models", f"opt={tiny_models.policy}", "--protocol", "template", "--reward_model",
                    str(tiny_models.reward), "--prompt_set", "demo", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "--protocol" in err, err
    assert "'opt' has no chat template" in err
    assert not out.exists()  # refused before anything was written
    code = cli_run(lambda cfg: run(cfg), [EvalConfig], ["--demo", "--protocol", "template", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--protocol template" in err and not out.exists()


def test_space_chat_uses_the_template_of_a_model_that_has_one(chat_models, tiny_models):
    from hhalign.loading import load_policy
    from hhalign.protocol import serving_protocol
    from hhalign.refs import parse_model_ref
    from hhalign.serving.chat import DecodeOptions, conversation_prompt, stream_reply

    parrot = load_policy(parse_model_ref(str(chat_models["parrot"])))
    prompt = conversation_prompt([("hi", "hello")], "and now?")
    replies = list(stream_reply(parrot.model, parrot.tokenizer, prompt, DecodeOptions(max_new_tokens=12)))
    assert replies[-1].done and replies[-1].text == REPLY  # cut at <|eot_id|>: " and more" never shows
    assert all(REPLY.startswith(r.text) for r in replies)
    assert serving_protocol(parrot.tokenizer) == "template"
    opt = load_policy(parse_model_ref(str(tiny_models.policy)))
    assert serving_protocol(opt.tokenizer) == "chat"  # a base model keeps the evaluator's chat protocol
