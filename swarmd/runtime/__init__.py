"""The daemon: its life (start, drain, reload), the worker that pulls, runs and commits jobs, and its listeners."""
