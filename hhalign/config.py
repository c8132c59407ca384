"""The one configuration path of every hhalign command: options are dataclass fields, parsed by
``transformers.HfArgumentParser``; ``--config`` names a YAML file or a shipped recipe (``paper/sft``) whose keys are
the same option names; flags on the command line override it. Every mistake is one :class:`HHAlignError` line that
names the option and how to fix it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import re
import shlex
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import HHAlignError

LOG_LEVELS = ("debug", "info", "warning", "error")
RECIPES_PACKAGE = "hhalign.recipes"
# A recipe key that sets environment variables (as TRL's parser allows), e.g. env: {HF_HUB_DISABLE_TELEMETRY: "1"}.
ENV_KEY = "env"


def recipes_root() -> Any:
    """The shipped recipes (``training/recipes`` in a checkout, package data in a wheel)."""
    return resources.files(RECIPES_PACKAGE)


def recipe_names() -> list[str]:
    """Names of the shipped YAML recipes, e.g. ``paper/sft``, ``improved/dpo``, ``accelerate/multi_gpu``."""
    names = []

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir() and not child.name.startswith(("_", ".")):
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".yaml"):
                names.append(prefix + child.name.removesuffix(".yaml"))

    walk(recipes_root(), "")
    return sorted(names)


def find_config(name: str, option: str = "--config") -> Path:
    """``--config`` (or another ``option`` naming a recipe) as a path: an existing file, else a shipped recipe name
    (``paper/sft``, ``paper/sft.yaml``)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise HHAlignError(f"{option} {name!r} is a folder: pass a YAML file or a recipe name such as paper/sft")
    stem = name.removesuffix(".yaml").removeprefix("training/recipes/")
    candidate = recipes_root().joinpath(*f"{stem}.yaml".split("/"))
    if candidate.is_file():
        return Path(str(candidate))
    names = recipe_names()
    close = difflib.get_close_matches(stem, names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise HHAlignError(f"{option} {name!r} is neither a file nor a shipped recipe: {hint}recipes are "
                       f"{', '.join(names)}")


DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(device: str, option: str = "--device") -> str:
    """A device name as torch takes it (auto, cpu, mps, cuda, cuda:N), refused otherwise before any work."""
    if not DEVICE.fullmatch(device):
        raise HHAlignError(f"{option} {device!r} is not a device: use auto, cpu, cuda or cuda:N")
    return device


def is_given(obj: Any, name: str) -> bool:
    """Whether option ``name`` of a config dataclass differs from its default (was set on the command line or in a
    config file)."""
    f = next(f for f in dataclasses.fields(obj) if f.name == name)
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return getattr(obj, name) != default


def refuse_unused(obj: Any, active: bool, mode: str, why: str, names: Sequence[str]) -> None:
    """While ``active`` (e.g. ``--from_responses`` is set), the options ``names`` do nothing: one given anyway is
    refused, since the user expects it to act. ``mode`` reads "with --from_responses" or "without --push_to_hub"."""
    given = [n for n in names if is_given(obj, n)] if active else []
    if given:
        raise HHAlignError(f"--{given[0]} does nothing {mode} ({why}): drop --{given[0]}")


def check_positive(obj: Any, units: dict[str, str]) -> None:
    """Refuse an option of ``obj`` below 1 (None is allowed: unset); ``units`` maps option names to what they count."""
    for name, unit in units.items():
        value = getattr(obj, name)
        if value is not None and value < 1:
            raise HHAlignError(f"--{name} must be a positive number of {unit}, got {value}")


def read_yaml_mapping(path: Path) -> dict:
    """A YAML file that must hold a mapping of option names to values."""
    import yaml

    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HHAlignError(f"--config {str(path)!r} cannot be read ({exc.strerror}): check the path") from None
    except UnicodeDecodeError:
        raise HHAlignError(f"--config {str(path)!r} is not UTF-8 text: pass a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise HHAlignError(f"--config {str(path)!r} is not valid YAML{where} ({problem}): fix that line") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise HHAlignError(f"--config {str(path)!r} must be a mapping of option names to values, got "
                           f"{type(values).__name__}")
    return values


def did_you_mean(names: Sequence[str], known: Sequence[str]) -> str:
    """``'x' (did you mean 'y'?)`` for each unknown name."""
    parts = []
    for name in names:
        # Short names are far apart by difflib's ratio after one typo ('ouf' vs 'out' is 0.67): one edit also counts.
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7) or [
            k for k in sorted(known) if _one_edit(name, k)][:1]
        parts.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return ", ".join(parts)


def _one_edit(a: str, b: str) -> bool:
    """Whether ``a`` becomes ``b`` by one substitution, insertion, deletion or swap of neighbours."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                  and a[diff[1]] == b[diff[0]])
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Usage docstrings keep their command lines as written; every option shows its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if action.default in (None, argparse.SUPPRESS, [], False) or "%(default)" in help_text:
            return help_text
        return help_text + " (default: %(default)s)"


class Parser:
    """Parses a command line into instances of ``types`` (dataclasses); see the module docstring.

    Besides the dataclass fields every command takes ``--config``, ``--log_level`` and ``--threads``; their values are
    in :attr:`common` after :meth:`parse`.
    """

    def __init__(self, types: Sequence[type], prog: str | None = None, description: str = "",
                 aliases: dict[str, str] | None = None):
        from transformers import HfArgumentParser

        outer = self

        class _Parser(HfArgumentParser):
            def error(self, message: str):  # argparse prints usage and exits; one line is enough
                raise HHAlignError(f"{outer._explain(message)}; see {outer.prog} --help")

        self.types = list(types)
        self.prog = prog or "this command"
        # Old option names still accepted (in YAML and on the command line): old -> new.
        self.aliases = dict(aliases or {})
        self.parser = _Parser(self.types, prog=prog, description=description, formatter_class=HelpFormatter,
                              allow_abbrev=False)
        self.fields = {f.name: f for t in self.types for f in dataclasses.fields(t) if f.init}
        for action in self.parser._actions:
            if action.help:
                # argparse formats help with %: a literal "95%" would break --help.
                action.help = action.help.replace("%", "%%").replace("%%(default)", "%(default)")
            longest = max(action.option_strings, key=len, default="")
            if longest.startswith("--no") and action.const is False and isinstance(action, argparse._StoreFalseAction):
                name = action.dest
                action.help = f"Turn --{name} off."
                action.default = argparse.SUPPRESS
        for old, new in self.aliases.items():
            action = next(a for a in self.parser._actions if a.dest == new)
            self.parser._option_string_actions[f"--{old}"] = action
        group = self.parser.add_argument_group("every hhalign command")
        group.add_argument("--config", metavar="YAML_OR_RECIPE", help="YAML file, or a shipped recipe name (e.g. "
                           "paper/sft), whose keys are the option names above; options on the command line override "
                           "it.")
        # TRL's configs bring their own --log_level (transformers' levels, "passive" by default): that one is used.
        if "log_level" not in self.fields:
            group.add_argument("--log_level", "--log-level", choices=LOG_LEVELS, default="info",
                               help="How much to log to stderr.")
        group.add_argument("--threads", type=int, default=None,
                           help="CPU threads for torch (default: torch's choice; 1 is often fastest for tiny models "
                                "on a busy machine).")
        self.common: dict[str, Any] = {}

    def _explain(self, message: str) -> str:
        # argparse: "argument --mode: invalid choice: 'x' (choose from 'a', 'b')" is already one clear line.
        return message.replace("argument ", "option ", 1)

    def format_help(self) -> str:
        return self.parser.format_help()

    def config_argv(self, path: Path) -> list[str]:
        """The recipe at ``path`` as command-line flags (so types, choices and errors are exactly the CLI's)."""
        values = read_yaml_mapping(path)
        env = values.pop(ENV_KEY, None)
        if env is not None:
            if not isinstance(env, dict):
                raise HHAlignError(f"{path}: '{ENV_KEY}' must map variable names to values")
            os.environ.update({str(k): str(v) for k, v in env.items()})
        unknown = [k for k in values if self.aliases.get(k, k) not in self.fields]
        if unknown:
            raise HHAlignError(f"{path}: unknown key(s) {did_you_mean(unknown, list(self.fields))}; keys are the "
                               f"option names of {self.prog} --help")
        argv: list[str] = []
        for key, value in values.items():
            name = self.aliases.get(key, key)
            argv += self._flag(path, name, value)
        return argv

    def _flag(self, path: Path, name: str, value: Any) -> list[str]:
        field = self.fields[name]
        if value is None:
            return []
        listy = getattr(field.type, "__origin__", None) is list or str(field.type).startswith("list")
        if isinstance(value, dict):
            return [f"--{name}", json.dumps(value)]
        if isinstance(value, list):
            if not listy:
                raise HHAlignError(f"{path}: '{name}' takes one value, got a list {value!r}")
            if not value:
                return []
            return [f"--{name}", *(_scalar(v) for v in value)]
        if listy and isinstance(value, str):
            # A string for a list option holds its values as the command line would: "a=1 b=2" is two values
            # (never one value per character); quotes keep spaces inside one.
            try:
                words = shlex.split(value)
            except ValueError as exc:
                raise HHAlignError(f"{path}: '{name}' {value!r} cannot be split into values ({exc})") from None
            return [f"--{name}", *words] if words else []
        return [f"--{name}", _scalar(value)]

    def parse(self, argv: Sequence[str]) -> tuple[Any, ...]:
        """Instances of the dataclasses, in the order of ``types``."""
        argv = list(argv)
        config_argv: list[str] = []
        for i, arg in enumerate(argv):
            if arg == "--config" or arg.startswith("--config="):
                value = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else None)
                if value is None or value.startswith("--"):
                    raise HHAlignError("--config needs a YAML file or a recipe name, e.g. --config paper/sft")
                del argv[i : i + (1 if "=" in arg else 2)]
                config_argv = self.config_argv(find_config(value))
                self.common["config"] = value
                break
        for i, arg in enumerate(argv):
            flag = arg.split("=", 1)[0]
            if flag.startswith("--") and flag[2:] in self.aliases:
                argv[i] = arg.replace(flag, f"--{self.aliases[flag[2:]]}", 1)
        try:
            *outputs, remaining = self.parser.parse_args_into_dataclasses(args=config_argv + argv,
                                                                           return_remaining_strings=True)
        except HHAlignError:
            raise
        except (ValueError, TypeError) as exc:  # a __post_init__ refused a combination of values
            raise HHAlignError(f"invalid options: {str(exc).splitlines()[0]}") from None
        if remaining:
            flags = [r[2:].split("=")[0] for r in remaining if r.startswith("--")]
            known = [*self.fields, "config", "log_level", "threads"]
            what = did_you_mean(flags, known) if flags else " ".join(remaining)
            raise HHAlignError(f"unknown option(s) {what}; see {self.prog} --help")
        # Options outside the dataclasses (--config, --log_level, --threads) come back as one extra namespace.
        instances = [o for o in outputs if not isinstance(o, argparse.Namespace)]
        extra = next((o for o in outputs if isinstance(o, argparse.Namespace)), argparse.Namespace())
        level = getattr(extra, "log_level", None)
        if level is None:  # TRL's own --log_level
            level = getattr(next((i for i in instances if hasattr(i, "log_level")), None), "log_level", "info")
        threads = getattr(extra, "threads", None)
        if threads is not None and threads < 1:
            raise HHAlignError(f"--threads must be at least 1, got {threads}")
        self.common.update(log_level=level if level in LOG_LEVELS else "info", threads=threads)
        return tuple(instances)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
