"""Soak the hhalign Space on loopback: a few hundred bounded API requests from many sessions against
``space/app.py --demo``, with the server's resident memory sampled throughout and after an idle pause; or
(``--visitor long``) one visitor's long conversation, with the server's memory and the latency after every turn.

Usage:
    python batch/soak_space.py --requests 300 --warmup 60
    python batch/soak_space.py --requests 300 --server_env MALLOC_ARENA_MAX=2 --out soak.json
    python batch/soak_space.py --visitor long --turns 50 --message_chars 2000 --out long.json
"""

import sys

from hhalign.cli import run
from hhalign.serving.soak import SoakConfig, main

if __name__ == "__main__":
    sys.exit(run(main, [SoakConfig], sys.argv[1:], prog="batch/soak_space.py", description=__doc__))
