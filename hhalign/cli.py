"""The ``hhalign`` command and :func:`run`, the wrapper behind every entry script.

``hhalign eval|bench|sft|dpo|pipeline|push|space|deploy|tiny [options]``; ``batch/eval.py``, ``training/*.py`` and
``space/*.py`` are the same commands as scripts. :func:`run` parses with :class:`hhalign.config.Parser`, sets up
logging and threads, runs the command, and turns a user error into one line on stderr with exit status 2.
"""

from __future__ import annotations

import contextvars
import errno
import importlib
import logging
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import HHAlignError
from .secrets import redact_argv, redact_text

logger = logging.getLogger("hhalign")
_COMMAND: contextvars.ContextVar[str | None] = contextvars.ContextVar("hhalign_command", default=None)


@dataclass(frozen=True)
class Command:
    """A subcommand: where its option types and its main function live (imported only when it runs)."""

    summary: str
    types: str  # "module:function" returning the option dataclasses, or "module:Class" for one dataclass
    main: str  # "module:function" taking one instance of each type
    aliases: dict[str, str] = field(default_factory=dict)


COMMANDS: dict[str, Command] = {
    "eval": Command("Evaluate checkpoints: generate, score with the reward model, write metrics, plots and a report.",
                    "hhalign.eval.config:EvalConfig", "hhalign.eval.run:main", {"output_path": "out"}),
    "bench": Command("Time the study's loop against hhalign's engine (and peers) on OPT-350M/DeBERTa shapes.",
                     "hhalign.bench.config:BenchConfig", "hhalign.bench.run:main"),
    "sft": Command("Supervised fine-tuning on HH-RLHF (TRL's SFTTrainer).", "hhalign.training.run:sft_types",
                   "hhalign.training.run:sft_main", {"dataset": "dataset_name", "split": "dataset_train_split"}),
    "dpo": Command("DPO (LoRA) on HH-RLHF preference pairs (TRL's DPOTrainer).", "hhalign.training.run:dpo_types",
                   "hhalign.training.run:dpo_main", {"dataset": "dataset_name", "split": "dataset_train_split"}),
    "pipeline": Command("base -> SFT -> DPO, SFT -> SFT+DPO, evaluation, and publishing, resumable.",
                        "hhalign.training.pipeline:PipelineConfig", "hhalign.training.pipeline:main"),
    "push": Command("Publish a trained checkpoint with hhalign's model card.", "hhalign.publish.hub:PushConfig",
                    "hhalign.publish.hub:main"),
    "space": Command("Serve the Gradio app (chat, compare, arena, results).", "hhalign.serving.config:SpaceConfig",
                     "hhalign.serving.app:main_from_config"),
    "deploy": Command("Stage the Space and upload it to the Hugging Face Hub.", "hhalign.serving.deploy:DeployConfig",
                      "hhalign.serving.deploy:main"),
    "tiny": Command("Build the tiny offline stand-ins of the policy and the reward model.",
                    "hhalign.testing.tiny:TinyConfig", "hhalign.testing.tiny:main"),
}


def _load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def current_command() -> str | None:
    """The command line being run (secrets redacted), for run records; None outside :func:`run`."""
    return _COMMAND.get()


def configure_logging(level: str = "info") -> None:
    """hhalign's messages to stderr at ``level``; the libraries underneath only report errors unless debugging."""

    class Format(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            text = redact_text(super().format(record))  # a token that slipped into a message is not shown
            return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Format("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    if level != "debug":
        for name in ("transformers", "datasets", "huggingface_hub", "accelerate", "peft", "trl", "httpx"):
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft|accelerate)\b")


def run(main: Callable[..., Any], types: Sequence[type] | Callable[[], Sequence[type]],
        argv: Sequence[str] | None = None, prog: str | None = None, description: str = "",
        aliases: dict[str, str] | None = None) -> int:
    """Parse ``argv`` into ``types``, run ``main(*instances)``; user errors become one line on stderr (exit 2)."""
    from .config import Parser
    from .env import set_threads

    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or (sys.argv[0] if sys.argv else "hhalign")
    # "hhalign eval" is two words of the command, not one quoted name.
    words = prog.split(" ") if prog.startswith("hhalign ") else [prog]
    token = _COMMAND.set(shlex.join(redact_argv([*words, *argv])))
    try:
        parser = Parser(types() if callable(types) else types, prog=prog, description=description, aliases=aliases)
        instances = parser.parse(argv)
        configure_logging(parser.common["log_level"])
        set_threads(parser.common["threads"])
        main(*instances)
    except HHAlignError as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: work finished so far is kept; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {exc.filename!r}" if exc.filename else ""
            print(f"error: the disk is full{where}: free space and run the same command again; finished work is kept",
                  file=sys.stderr)
        elif exc.filename:  # the machine refused a path (permissions, read-only disk, a file where a folder should be)
            print(f"error: cannot use {exc.filename!r} ({exc.strerror}): check the path and its permissions",
                  file=sys.stderr)
        else:
            raise
        return 2
    finally:
        _COMMAND.reset(token)
    return 0


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: hhalign COMMAND [options]   (hhalign COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``hhalign`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name in ("-V", "--version"):
        from .env import package_versions

        print(f"hhalign {package_versions()['hhalign']}")
        return 0
    if name not in COMMANDS:
        from .config import did_you_mean

        print(f"error: unknown command {did_you_mean([name], list(COMMANDS))}; commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    command = COMMANDS[name]
    entry = _load(command.main)
    types = _load(command.types)
    return run(entry, types if not isinstance(types, type) else [types], rest, prog=f"hhalign {name}",
               description=entry.__doc__ or command.summary, aliases=command.aliases)


if __name__ == "__main__":
    sys.exit(main())
