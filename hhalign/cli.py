"""Shared plumbing of the entry scripts: argument parsing and one-line errors."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import HHAlignError


def parse_dataclass_args(config_cls: type, argv: Sequence[str] | None = None, description: str = "") -> Any:
    """Parse ``argv`` into ``config_cls``: ``--config file.yaml`` sets defaults, flags override them."""
    import dataclasses

    import yaml
    from transformers import HfArgumentParser

    # Raw description keeps the usage docstring's command lines as written.
    parser = HfArgumentParser(config_cls, description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    for action in parser._actions:
        if action.help:
            # argparse treats help as a %-format string: "95% CI" would crash --help.
            action.help = re.sub(r"%(?!\()", "%%", action.help)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise HHAlignError("--config needs a YAML file path")
        path, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
        try:
            values = yaml.safe_load(open(path, encoding="utf-8")) or {}
        except OSError as exc:
            raise HHAlignError(f"--config {path!r} cannot be read ({exc.strerror})") from None
        known = {f.name for f in dataclasses.fields(config_cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise HHAlignError(f"{path}: unknown key(s) {', '.join(unknown)}; see --help for the valid names")
        parser.set_defaults(**values)
    (cfg,) = parser.parse_args_into_dataclasses(args=argv)
    return cfg


def run_main(main: Callable[[Any], Any], config_cls: type, description: str = "",
             argv: Sequence[str] | None = None) -> int:
    """Parse, run ``main(cfg)``, and turn user errors into one line on stderr with exit status 2."""
    try:
        cfg = parse_dataclass_args(config_cls, argv, description)
        main(cfg)
    except HHAlignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: records written so far are kept; run the same command again to resume", file=sys.stderr)
        return 130
    return 0
