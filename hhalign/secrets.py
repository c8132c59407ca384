"""Secrets never reach a file, a log line, a card or an upload: redaction of tokens in text and command lines."""

from __future__ import annotations

import re
from collections.abc import Sequence

# Hugging Face tokens ("hf_" + 30 or more letters and digits), and old "api_" org tokens.
TOKEN_PATTERN = re.compile(r"\b(hf_|api_org_)[A-Za-z0-9]{20,}\b")
# Options whose value is a secret, whatever it looks like.
SECRET_OPTIONS = ("hub_token", "token", "hf_token", "api_key", "password")
REDACTED = "<redacted>"


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
