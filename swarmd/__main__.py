"""``python -m swarmd``: the same as the ``swarmd`` command."""

import sys

from swarmd.cli import main

sys.exit(main())
