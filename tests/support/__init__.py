"""What the tests share: the real daemon and CLI, test agents, services, clocks, PromQL checks.

Importable as ``support`` because pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in
pyproject.toml) and the harness puts it on the daemon's ``PYTHONPATH``.
"""
