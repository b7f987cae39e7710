"""Where the repository is, for tests that read its files or run its code from its root."""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: The repository root: pyproject.toml, swarmd/, deploy/, grafana/, tests/.
REPO: Final = Path(__file__).resolve().parents[2]
