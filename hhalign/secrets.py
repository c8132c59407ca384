"""Secrets never reach a file, a log line, a card or an upload: redaction of tokens in text and command lines."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import HHAlignError

# Hugging Face tokens ("hf_" + 30 or more letters and digits), and old "api_" org tokens.
TOKEN_PATTERN = re.compile(r"\b(hf_|api_org_)[A-Za-z0-9]{20,}\b")
# Options whose value is a secret, whatever it looks like.
SECRET_OPTIONS = ("hub_token", "token", "hf_token", "api_key", "password")
REDACTED = "<redacted>"
# In files, without word boundaries: in binary data the byte before a token may be anything.
_TOKEN_BYTES = re.compile(rb"(hf_|api_org_)[A-Za-z0-9]{20,}")
# Environment variables that hold a Hugging Face token (huggingface_hub reads both).
TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# A known secret shorter than this is not searched for: it would match ordinary text.
MIN_SECRET_LENGTH = 8
_CHUNK = 8 << 20  # bytes read at a time when scanning a file (weights can be gigabytes)


def _secret_flag(arg: str) -> bool:
    name = arg.lstrip("-").split("=", 1)[0].replace("-", "_").lower()
    return arg.startswith("--") and name in SECRET_OPTIONS


def redact_text(text: str) -> str:
    """``text`` with anything shaped like a Hugging Face token replaced."""
    return TOKEN_PATTERN.sub(REDACTED, text)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line with the values of secret options (``--hub_token X``, ``--token=X``) and token-shaped words
    replaced, safe to record."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
        elif _secret_flag(arg):
            if "=" in arg:
                out.append(arg.split("=", 1)[0] + "=" + REDACTED)
            else:
                out.append(arg)
                hide_next = True
        else:
            out.append(redact_text(arg))
    return out


def find_secrets(text: str) -> list[str]:
    """Token-shaped strings in ``text`` (for a last check of files before an upload)."""
    return [m.group(0) for m in TOKEN_PATTERN.finditer(text)]


def known_tokens(*extra: str | None) -> list[str]:
    """Secret values in use here: ``extra`` (e.g. a --token value), the token environment variables and the token
    saved by ``hf auth login``."""
    from huggingface_hub import get_token

    values = [*extra, *(os.environ.get(name) for name in TOKEN_ENV), get_token()]
    return list(dict.fromkeys(v for v in values if v and len(v) >= MIN_SECRET_LENGTH))


def file_has_secret(path: str | Path, known: Sequence[str] = ()) -> bool:
    """Whether the file holds a token-shaped string or one of the ``known`` secret values (read in chunks)."""
    needles = [k.encode() for k in known if len(k) >= MIN_SECRET_LENGTH]
    overlap = max([64, *(len(n) for n in needles)])
    tail = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            window = tail + chunk
            if _TOKEN_BYTES.search(window) or any(n in window for n in needles):
                return True
            tail = window[-overlap:]
    return False


def check_no_secrets(files: Iterable[Path], root: str | Path, known: Sequence[str] = ()) -> None:
    """Refuse an upload when a staged file under ``root`` holds a token (a last check: redaction should have caught
    it when the file was written)."""
    for path in files:
        if file_has_secret(path, known):
            name = Path(path).relative_to(root) if Path(path).is_relative_to(root) else path
            raise HHAlignError(f"refusing to upload: {str(name)!r} contains a Hugging Face token (or a string shaped "
                               f"like one); remove it from that file, revoke the token if it was ever shared, and "
                               "try again")
