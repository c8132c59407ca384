"""Loading what a :class:`~hhalign.refs.ModelRef` names: a causal LM (or base + PEFT adapter) for generation, a
one-logit reward model, their tokenizers, and a record of what was loaded for result files."""

from __future__ import annotations

import json
import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HHAlignError
from .files import read_json
from .refs import DEFAULT_REWARD_MODEL, ModelRef, check_ref, parse_model_ref

DTYPES = ("auto", "float32", "bfloat16", "float16")


@contextmanager
def quiet_peft() -> Iterator[None]:
    """PEFT 0.21 reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model, which warns on
    every adapter load; the warning is about PEFT's code, not the user's, so it is silenced where PEFT is called."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield

@dataclass
class LoadedModel:
    """A loaded model with its tokenizer and a record of what was loaded (for result files)."""

    model: Any
    tokenizer: Any
    info: dict = field(default_factory=dict)


def resolve_dtype(dtype: str, device: str) -> Any:
    """``auto`` is bfloat16 on CUDA GPUs that support it and float32 elsewhere."""
    import torch

    if dtype not in DTYPES:
        raise HHAlignError(f"unknown --dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HHAlignError(f"--device {device} asked for, but no CUDA GPU is visible: use --device cpu or auto")
    return device


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)



def find_model(ref: ModelRef) -> None:
    """Check, loading no weights, that ``ref`` can be loaded: a local folder with a readable config and intact
    weights, or (offline) a Hub id whose config is in the local cache; an adapter's base model is checked the same
    way. Online Hub ids are checked when they load."""
    check_ref(ref)
    if ref.is_local:
        problem = local_problem(Path(ref.path))
        if problem:
            raise HHAlignError(f"model folder {ref.ref!r} cannot be loaded: {problem}")
    elif _offline():
        if not _cached(ref):
            raise load_error(ref, OSError("offline"))
    else:
        _check_on_hub(ref)
        return
    adapter = adapter_config(ref)
    if adapter is not None:
        base_id = adapter.get("base_model_name_or_path")
        if not base_id:
            raise HHAlignError(f"adapter {ref.ref!r} names no base_model_name_or_path in adapter_config.json")
        try:
            find_model(parse_model_ref(base_id))
        except HHAlignError as exc:
            raise HHAlignError(f"base model {base_id!r} of adapter {ref.ref!r} cannot be found ({exc}); fix "
                               "base_model_name_or_path in adapter_config.json") from None


def _cached(ref: ModelRef) -> bool:
    """Whether the local Hugging Face cache holds ``ref``'s config (a model's or an adapter's)."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(ref.ref, name, revision=ref.revision), str)
               for name in ("config.json", "adapter_config.json"))


# Seconds to wait for the Hub when checking that a model exists (one metadata request, before anything is written).
HUB_CHECK_TIMEOUT = 10


def _check_on_hub(ref: ModelRef) -> None:
    """Online: one metadata request proves ``ref`` (and its revision) exists, so an unknown id is named at once
    instead of after the dataset, the folder and the judge check; with no network, a cached copy is accepted."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().model_info(ref.ref, revision=ref.revision, timeout=HUB_CHECK_TIMEOUT)
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise load_error(ref, exc) from None
    except Exception as exc:  # noqa: BLE001 - network errors come in many types; the cache may still serve
        if not _cached(ref):
            raise load_error(ref, OSError(f"offline: {type(exc).__name__}")) from None


def offline_reason() -> str:
    """Why the Hub is not reached, as it is: the variable that is set (and how to undo it), or the network."""
    set_vars = [f"{name}={os.environ[name]}" for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
                if os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}]
    if set_vars:
        verb = "are set: unset them" if len(set_vars) > 1 else "is set: unset it"
        return f"{' and '.join(set_vars)} {verb} to download it once"
    if _offline():
        return "huggingface_hub's offline mode is on: turn it off to download it once"
    return "the Hub cannot be reached (no network?): download it once with network"


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is unusable (bad header, cut off), or None; reads only its header."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{path.name} is cut off (no header)"
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 << 20):
                return f"{path.name} has a bad header (length {n})"
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"{path.name} has a bad header ({type(exc).__name__})"
    if not isinstance(header, dict):
        return f"{path.name} has a bad header"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)
               and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2), default=0)
    if size < 8 + n + end:
        return f"{path.name} is cut off ({size} of {8 + n + end} bytes)"
    return None




def _json_problem(path: Path) -> str | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return f"{path.name} cannot be read ({exc.strerror})"
    except (ValueError, UnicodeDecodeError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        return f"{path.name} is not valid JSON{where}"
    return None if isinstance(obj, dict) else f"{path.name} is not a JSON object"


def local_problem(folder: Path) -> str | None:
    """What is broken in a local model or adapter folder (config, weights), or None; reads no weights."""
    adapter = (folder / "adapter_config.json").is_file()
    config = folder / ("adapter_config.json" if adapter else "config.json")
    problem = _json_problem(config)
    if problem:
        return problem + ": re-save the model (save_pretrained) or restore the file"
    if not adapter and "model_type" not in json.loads(config.read_text(encoding="utf-8")):
        return "config.json has no model_type: re-save the model with save_pretrained"
    names = ("adapter_model.safetensors", "adapter_model.bin") if adapter else (
        "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    found = [folder / n for n in names if (folder / n).is_file()]
    if not found:
        return f"no weights file ({' or '.join(names[:2])}): copy the weights into it or re-save the model"
    for path in found:
        problem = None
        if path.name.endswith(".index.json"):
            problem = _json_problem(path)
            index = {} if problem else json.loads(path.read_text(encoding="utf-8"))
            shards = sorted(set((index.get("weight_map") or {}).values()))
            missing = [s for s in shards if not (folder / s).is_file()]
            problem = problem or (f"weight shard {missing[0]} is missing" if missing else None)
            problem = problem or next((q for s in shards if s.endswith(".safetensors")
                                       and (q := safetensors_problem(folder / s))), None)
        elif path.suffix == ".safetensors":
            problem = safetensors_problem(path)
        if problem:
            return problem + ": the weights are damaged (a copy or download cut short?); copy or re-save them"
    return None


def adapter_config(ref: ModelRef) -> dict | None:
    """The PEFT ``adapter_config.json`` of ``ref`` if it is an adapter, else None."""
    if ref.is_local:
        path = Path(ref.path) / "adapter_config.json"
        return read_json(path, "adapter config", "restore it or re-save the adapter") if path.exists() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        path = hf_hub_download(ref.ref, "adapter_config.json", revision=ref.revision)
    except EntryNotFoundError:
        return None
    except LocalEntryNotFoundError:
        # Offline: only a cached adapter_config.json proves an adapter; otherwise let the loader report.
        return None
    except Exception as exc:  # noqa: BLE001
        raise load_error(ref, exc) from None
    return json.loads(Path(path).read_text())


def load_error(ref: ModelRef, exc: BaseException) -> HHAlignError:
    """One line for a model that failed to load: what is broken in a local folder, else what the Hub said."""
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    low = str(exc).lower()
    if ref.is_local:
        problem = local_problem(Path(ref.path)) if Path(ref.path).is_dir() else "the folder does not exist"
        return HHAlignError(f"model folder {ref.ref!r} cannot be loaded: {problem or f'{type(exc).__name__}: {msg}'}")
    if _offline() or "offline" in low or "couldn't connect" in low or "cannot find the requested files" in low:
        return HHAlignError(f"model {ref.ref!r} is not in the local Hugging Face cache and {offline_reason()}, or "
                            "pass a local folder")
    if "not a valid model identifier" in low or "repository not found" in low or "404" in low:
        return HHAlignError(f"model {ref.ref!r} was not found on the Hub: check the id (and --revision / @rev), "
                            "log in for private models, or pass a local folder")
    return HHAlignError(f"cannot load model {ref.ref!r}: {type(exc).__name__}: {msg}")


def _fingerprint(path: str) -> str:
    """Cheap identity of a local checkpoint: sha256 over config and weight-file names and sizes."""
    import hashlib

    digest = hashlib.sha256()
    for p in sorted(Path(path).iterdir()):
        if p.is_file() and p.suffix in {".json", ".safetensors", ".bin", ".model"}:
            digest.update(p.name.encode())
            digest.update(str(p.stat().st_size).encode())
            if p.suffix == ".json":
                digest.update(p.read_bytes())
    return "local-" + digest.hexdigest()[:16]


def _describe(ref: ModelRef, model: Any, extra: dict | None = None) -> dict:
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    info = {
        "name": ref.name,
        "ref": ref.ref,
        "requested_revision": ref.revision,
        "revision": (_fingerprint(ref.path) if ref.is_local else commit or ref.revision or "main"),
        "local": ref.is_local,
    }
    if extra:
        info.update(extra)
    return info


def load_policy(ref: ModelRef, device: str = "cpu", dtype: str = "float32", merge_adapter: bool = True) -> LoadedModel:
    """Load a causal LM (or base + PEFT adapter) and its tokenizer for left-padded batched generation."""
    check_ref(ref)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype, device)
    adapter = adapter_config(ref)
    extra: dict = {"adapter": adapter is not None}
    try:
        if adapter is not None:
            base_id = adapter.get("base_model_name_or_path")
            if not base_id:
                raise HHAlignError(f"adapter {ref.ref!r} names no base_model_name_or_path in adapter_config.json")
            base_ref = parse_model_ref(base_id)
            try:
                check_ref(base_ref)
                base = AutoModelForCausalLM.from_pretrained(base_ref.path, revision=base_ref.revision,
                                                            dtype=torch_dtype, trust_remote_code=False)
            except HHAlignError as exc:
                raise HHAlignError(f"base model {base_id!r} of adapter {ref.ref!r} cannot be found ({exc}); "
                                   "fix base_model_name_or_path in adapter_config.json") from None
            except Exception as exc:  # noqa: BLE001
                raise HHAlignError(f"base model {base_id!r} of adapter {ref.ref!r} cannot be loaded "
                                   f"({load_error(base_ref, exc)}); fix base_model_name_or_path") from None
            from peft import PeftModel

            with quiet_peft():
                model = PeftModel.from_pretrained(base, ref.path, revision=ref.revision)
            if merge_adapter:
                # Merged weights give the same logits and skip the LoRA matmuls at every step.
                model = model.merge_and_unload()
            extra.update(base_model=base_id, base_revision=_describe(base_ref, base)["revision"],
                         merged=merge_adapter)
            tok_source = ref.path if has_tokenizer(ref) else base_ref.path
            tok_revision = ref.revision if has_tokenizer(ref) else base_ref.revision
        else:
            model = AutoModelForCausalLM.from_pretrained(ref.path, revision=ref.revision, dtype=torch_dtype,
                                                         trust_remote_code=False)
            tok_source, tok_revision = ref.path, ref.revision
        tokenizer = AutoTokenizer.from_pretrained(tok_source, revision=tok_revision, trust_remote_code=False)
    except HHAlignError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise load_error(ref, exc) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.to(device).eval()
    extra["dtype"] = str(torch_dtype).removeprefix("torch.")
    return LoadedModel(model, tokenizer, _describe(ref, model, extra))


def load_policy_tokenizer(ref: ModelRef) -> Any:
    """The tokenizer :func:`load_policy` would load for ``ref`` (an adapter's own, else its base's), without the
    weights: cheap checks of a model's tokenizer (its chat template) before any work."""
    check_ref(ref)
    from transformers import AutoTokenizer

    adapter = adapter_config(ref)
    source = ref
    if adapter is not None and not has_tokenizer(ref) and adapter.get("base_model_name_or_path"):
        source = parse_model_ref(adapter["base_model_name_or_path"])
    try:
        return AutoTokenizer.from_pretrained(source.path, revision=source.revision, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001
        raise load_error(source, exc) from None


def has_tokenizer(ref: ModelRef) -> bool:
    if ref.is_local:
        return any((Path(ref.path) / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(ref.ref, "tokenizer_config.json", revision=ref.revision)
        return True
    except Exception:  # noqa: BLE001 - absent or unreachable: fall back to the base model's tokenizer
        return False


def load_reward_model(ref: ModelRef | str = DEFAULT_REWARD_MODEL, device: str = "cpu",
                      dtype: str = "float32") -> LoadedModel:
    """Load a one-logit sequence classifier (the reward model) and its tokenizer."""
    ref = parse_model_ref(ref) if isinstance(ref, str) else ref
    check_ref(ref)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch_dtype = resolve_dtype(dtype, device)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(ref.path, revision=ref.revision, dtype=torch_dtype,
                                                                   trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(ref.path, revision=ref.revision, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001
        raise load_error(ref, exc) from None
    if model.config.num_labels != 1:
        raise HHAlignError(f"reward model {ref.ref!r} has {model.config.num_labels} labels; it must output one "
                           "score (e.g. OpenAssistant/reward-model-deberta-v3-large-v2)")
    from .engine.reward import is_decoder_only, pad_with_eos

    if is_decoder_only(model):
        pad_with_eos(model, tokenizer)
    model.to(device).eval()
    return LoadedModel(model, tokenizer, _describe(ref, model, {"dtype": str(torch_dtype).removeprefix("torch.")}))
