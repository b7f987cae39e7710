"""swarmd: run swarms of agents concurrently, durably, and in plain view of operators.

The public surface is what this module exports (`__all__`); everything else is internal.
"""

from __future__ import annotations

from swarmd.client import AsyncClient, Client, JobHandle, JobInfo, JobResult, Submitted, SwarmProgress
from swarmd.dispatcher import AgentTask, AsyncSwarmDispatcher, DispatchMetrics, TaskResult
from swarmd.errors import (
    BackendUnavailable,
    ConfigError,
    DaemonAlreadyRunning,
    JobFailed,
    JobNotFound,
    JobValidationError,
    LedgerEntryError,
    LedgerError,
    Permanent,
    ResultTooLarge,
    StateDirError,
    SwarmdError,
    TracingConfigError,
    UnknownAgentError,
    WaitTimeout,
    WorkflowError,
)
from swarmd.identity import get_gid
from swarmd.ledger.chain import Ledger, StoredEntry, VerifyReport
from swarmd.ledger.durable import DurableLedger
from swarmd.ledger.memory import SharedLedger
from swarmd.model import Job, JobState, Outcome
from swarmd.registry import JobContext, agent
from swarmd.schedules import ScheduleInfo
from swarmd.version import __version__

__all__ = [
    "AgentTask",
    "AsyncClient",
    "AsyncSwarmDispatcher",
    "BackendUnavailable",
    "Client",
    "ConfigError",
    "DaemonAlreadyRunning",
    "DispatchMetrics",
    "DurableLedger",
    "Job",
    "JobContext",
    "JobFailed",
    "JobHandle",
    "JobInfo",
    "JobNotFound",
    "JobResult",
    "JobState",
    "JobValidationError",
    "Ledger",
    "LedgerEntryError",
    "LedgerError",
    "Outcome",
    "Permanent",
    "ResultTooLarge",
    "ScheduleInfo",
    "SharedLedger",
    "StateDirError",
    "StoredEntry",
    "Submitted",
    "SwarmProgress",
    "SwarmdError",
    "TaskResult",
    "TracingConfigError",
    "UnknownAgentError",
    "VerifyReport",
    "WaitTimeout",
    "WorkflowError",
    "__version__",
    "agent",
    "get_gid",
]
