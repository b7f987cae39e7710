"""Helpers shared by the test suite and the bench: a real `swarmd serve` subprocess."""
