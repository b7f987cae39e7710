"""``python -m swarmd``: the same as the ``swarmd`` command.

``python -m`` puts the working directory first on ``sys.path``; the ``swarmd`` command does not.
It is taken off again before anything is imported from it, so that agent modules are found only
where `swarmd.registry` looks (its own, checked, search path), whichever way swarmd was started.
"""

import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from swarmd.cli import main

sys.exit(main())
