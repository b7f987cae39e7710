"""`swarmd bench`: each scenario against the bare-asyncio floor measured in the same run.

`runner` runs the scenarios and reports them; each scenario is a module of its own (`swarm`,
`e2e`, `throughput`, `scale`, `instrumentation`, `redis`, `soak`) and imports only what they
share, `helpers`.
"""
