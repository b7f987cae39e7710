"""Helpers shared by the test suite, the bench and `swarmd demo`: a real `swarmd serve`
subprocess (`daemon`), waiting for a condition with a deadline (`polling`), and finishing
reserved jobs as succeeded without running them (`finishes`)."""
