"""Queue backends behind one protocol (`queue.base.QueueBackend`): the local SQLite file and Redis Streams."""
