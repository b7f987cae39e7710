"""The multi-host queue: a Redis Streams consumer group, with Lua scripts for each atomic step."""
