"""The SQLite state file: connections, transactions and its schema, below both the ledger and the queue."""
