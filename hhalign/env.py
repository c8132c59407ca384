"""What a result was produced with: package versions, the project's git commit, the machine; and thread control."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("hhalign", "torch", "transformers", "tokenizers", "peft", "trl", "datasets", "huggingface_hub",
            "accelerate", "numpy", "matplotlib")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape results (None when absent), and Python's."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


@functools.cache
def git_commit() -> str | None:
    """The commit of the hhalign checkout this code runs from ("+dirty" with local changes); None when installed from
    a wheel or git is unavailable."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def provenance() -> dict:
    """Package versions plus the hhalign version and git commit: recorded in every result's settings."""
    return {"hhalign_version": package_versions()["hhalign"], "git_commit": git_commit(),
            "packages": package_versions()}


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch (None or 0: torch's default). On a busy machine fewer threads can be much
    faster for small models: their synchronisation costs more than the work they share."""
    if not threads:
        return
    import torch

    torch.set_num_threads(threads)
