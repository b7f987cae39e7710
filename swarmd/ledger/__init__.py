"""The ledger: an append-only, gap-free, hash-chained record of every outcome, and its stores."""
