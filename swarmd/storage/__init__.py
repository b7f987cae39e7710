"""The SQLite state file: connections, transactions, its schema and the migrations between schema
versions, below both the ledger and the queue."""
