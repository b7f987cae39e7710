"""The `swarmd` command line, built on the public `Client` only."""

from swarmd.cli.commands import main

__all__ = ["main"]
