"""The local queue: one SQLite file (WAL) shared with the durable ledger."""
