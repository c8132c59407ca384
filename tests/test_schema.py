"""metrics.json as types: what the evaluator writes reads back through hhalign.eval.schema unchanged."""

import json

import pytest

from hhalign.errors import HHAlignError
from hhalign.eval.config import EvalConfig
from hhalign.eval.run import run
from hhalign.eval.schema import SCHEMA_VERSION, Metrics, load_metrics


def test_written_metrics_round_trip_with_version_and_provenance(study_responses, tmp_path):
    written = run(EvalConfig(from_responses=[str(study_responses)], out=str(tmp_path), n_bootstrap=200, plots=False))
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == written and on_disk["schema_version"] == SCHEMA_VERSION
    metrics = load_metrics(tmp_path / "metrics.json")
    assert metrics.to_dict() == on_disk
    assert list(metrics.models) == ["base", "sft", "dpo", "sft_dpo"]
    assert (metrics.models["sft_dpo"].HmR, metrics.models["sft_dpo"].HpR) == (44.0, 66.0)  # the study's Table 1
    assert metrics.settings.source == "from_responses" and metrics.settings.packages["numpy"]
    assert "git_commit" in on_disk["settings"] and on_disk["settings"]["hhalign_version"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"models": []}, "not an evaluator metrics.json"),
        ({"schema_version": SCHEMA_VERSION + 1, "models": {}}, "upgrade hhalign"),
        ({"models": {"a": {"HmR": 1.0}}}, "model 'a' is malformed"),
        ({"models": {}, "judge": ["deberta"]}, "'judge' must map judge names"),
    ],
)
def test_malformed_metrics_are_one_clear_error(data, message, tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(data))
    with pytest.raises(HHAlignError, match=message):
        load_metrics(path)


def test_unknown_keys_survive_a_rewrite():
    data = {"models": {}, "future_block": {"x": 1}, "settings": {"source": "generated", "new_setting": 2}}
    out = Metrics.from_dict(data).to_dict()
    assert out["future_block"] == {"x": 1} and out["settings"]["new_setting"] == 2 and out["schema_version"] == 1


def test_judge_block_is_typed_and_round_trips():
    judge = {"deberta": {"model": "OpenAssistant/reward-model-deberta-v3-large-v2", "revision": "abc",
                         "subsets": {"harmless-base": {"accuracy": 58.5, "ci95": [55.0, 62.0], "n": 500, "ties": 3}}}}
    metrics = Metrics.from_dict({"models": {}, "judge": judge})
    assert metrics.judge == judge and "judge" not in metrics.extra
    assert Metrics.from_dict(metrics.to_dict()).judge == judge
    assert "judge" not in Metrics.from_dict({"models": {}}).to_dict()  # files without a judge check stay unchanged
