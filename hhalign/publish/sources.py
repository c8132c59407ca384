"""Where a checkpoint and its numbers came from, named the way Hub metadata wants: datasets (a Hub id, or a local
file or folder that is named as local and never passed off as a Hub id), the root base model and its licence.

A local dataset gets the model-index ``dataset.type`` ``local:<file or folder name>``: ``model-index`` requires a
string there, and a colon cannot occur in a Hub repo id, so the entry validates and is never read as a Hub dataset.
A local folder becomes ``Anthropic/hh-rlhf`` only when the evaluation declared it a copy
(``hhalign eval --dataset_hub_id``); its name then still says "local copy" and no Hub revision is claimed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..refs import is_hub_id, is_local

LOCAL_PREFIX = "local:"
HH_RLHF = "Anthropic/hh-rlhf"
# The HH-RLHF subset each rate's prompts come from in hhalign's named prompt sets (hhalign.data.build_prompt_set).
RATE_SUBSETS = {"HmR": ("harmless-base",), "HpR": ("helpful-base",), "CAS": ("harmless-base", "helpful-base")}
HH_PROMPT_SETS = ("paper", "harmful-all", "sample")
DEMO_PROMPTS = "hhalign/assets/demo_prompts.jsonl"
RUN_FILE = "hhalign_train.json"


@dataclass(frozen=True)
class DataSource:
    """One dataset as metadata names it."""

    type: str  # model-index dataset.type: a Hub id, or local:<name>
    name: str  # readable; says "local" when the data were read from disk
    hub_id: str | None = None  # the Hub dataset, when there is one
    local: str | None = None  # the file or folder read, when local
    hh_layout: bool = False  # HH-RLHF's subsets (harmless-base, helpful-base, ...) apply

    @property
    def url(self) -> str | None:
        return f"https://huggingface.co/datasets/{self.hub_id}" if self.hub_id else None


def data_source(dataset: str | None, hub_id: str | None = None, hh_layout: bool = True) -> DataSource:
    """A ``--dataset`` value as metadata names it; ``hub_id`` declares a local folder a copy of that Hub dataset."""
    dataset = str(dataset or "")
    if dataset and not is_local(dataset) and is_hub_id(dataset):
        return DataSource(dataset, dataset, dataset, None, hh_layout)
    name = Path(dataset).name or "data"
    if hub_id:
        return DataSource(hub_id, f"{hub_id} (local copy read from {dataset})", hub_id, dataset, hh_layout)
    return DataSource(f"{LOCAL_PREFIX}{name}", f"local {'folder' if hh_layout else 'file'} {dataset} (not a Hub "
                      "dataset)", None, dataset, hh_layout)


def prompt_source(prompt_set: dict) -> DataSource:
    """Where an evaluation's prompts came from, from ``settings.prompt_set`` of its metrics.json."""
    name = prompt_set.get("name")
    if name in HH_PROMPT_SETS:
        return data_source(prompt_set.get("dataset"), prompt_set.get("hub_id"))
    if name == "demo":
        return DataSource(f"{LOCAL_PREFIX}demo_prompts.jsonl", f"hhalign demo prompts ({DEMO_PROMPTS}, written for "
                          "the demo, not HH-RLHF)", local=DEMO_PROMPTS)
    if name:
        return data_source(name, hh_layout=False)
    return DataSource(f"{LOCAL_PREFIX}responses", "existing response records (no prompt set)")


# --- base model and licence ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Licence:
    """Model-card licence metadata (``license``, ``license_name``, ``license_link``) and a sentence for the text."""

    license: str
    name: str | None
    link: str | None
    text: str


_OPT = re.compile(r"^facebook/opt-\d")


def licence_for(root: str | None) -> Licence:
    """The licence a model derived from ``root`` inherits: OPT's own for Meta's OPT checkpoints, else the base's."""
    if root and _OPT.match(root):
        return Licence("other", "opt-175b-license", f"https://huggingface.co/{root}/blob/main/LICENSE.md",
                       f"Derived from `{root}`, which Meta released under the OPT-175B License Agreement (research, "
                       "non-commercial use; `license: other` on its model card): those terms apply to this model.")
    if is_hub_id(root):
        return Licence("other", "base-model-license", f"https://huggingface.co/{root}",
                       f"Derived from `{root}`: its licence applies to this model (hhalign does not know it; read "
                       "the base model's card before use).")
    return Licence("other", "base-model-license", None,
                   f"Derived from the local model `{root}`: its licence applies to this model (hhalign does not "
                   "know it).")


def _record(folder: str | Path) -> dict | None:
    path = Path(folder) / RUN_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def root_base(record: dict, max_depth: int = 8) -> str | None:
    """The model a chain of hhalign runs started from: a Hub id when one is known, else the local folder.

    SFT+DPO starts from a local SFT folder whose own run record names the real base, so the chain is followed.
    """
    model = record.get("model") or {}
    for _ in range(max_depth):
        start = model.get("name_or_path")
        parent = _record(start) if start and is_local(start) else None
        if parent is None:
            return model.get("base_model_hub_id") or start
        model = parent.get("model") or {}
    return model.get("name_or_path")
