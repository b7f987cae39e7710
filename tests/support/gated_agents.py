"""An agent module whose import holds back all but the first process that imports it.

For a daemon with several workers (``--agents support.gated_agents``): the first worker to
import it (it creates ``$GATE_DIR/first`` and writes its pid there) goes on at once; every
other one waits, in its import, until ``$GATE_DIR/open`` exists. So a test can hold one
worker in its start for as long as it likes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_gate = Path(os.environ["GATE_DIR"])
try:
    _fd = os.open(_gate / "first", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
except FileExistsError:
    while not (_gate / "open").exists():
        time.sleep(0.01)
else:
    os.write(_fd, str(os.getpid()).encode())
    os.close(_fd)
