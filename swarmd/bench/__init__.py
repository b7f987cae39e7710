"""`swarmd bench`: each scenario against the bare-asyncio floor measured in the same run."""
