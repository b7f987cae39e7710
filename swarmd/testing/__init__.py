"""Helpers shared by the test suite, the bench and `swarmd demo`: a real `swarmd serve`
subprocess (`daemon`) and waiting for a condition with a deadline (`polling`)."""
