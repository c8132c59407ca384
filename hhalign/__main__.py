"""``python -m hhalign COMMAND``: the same as the ``hhalign`` console script."""

import sys

from hhalign.cli import main

sys.exit(main())
