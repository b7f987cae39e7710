"""swarmd: run swarms of agents concurrently, durably, and in plain view of operators.

The public surface is what this module exports (`__all__`); everything else is internal.
"""

from __future__ import annotations

from swarmd.client import AsyncClient, Client, JobHandle, JobInfo, JobResult, Submitted, SwarmProgress
from swarmd.dispatcher import AgentTask, AsyncSwarmDispatcher, DispatchMetrics, TaskResult
from swarmd.errors import (
    ArchiveError,
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
from swarmd.ledger.chain import Anchor, AnchorFinding, Ledger, StoredEntry, VerifyReport
from swarmd.ledger.durable import DurableLedger
from swarmd.ledger.memory import SharedLedger
from swarmd.model import Job, JobState, Outcome
from swarmd.queue.archiving import ArchiveRun
from swarmd.registry import JobContext, agent
from swarmd.schedules import ScheduleInfo
from swarmd.version import __version__

__all__ = [
    "AgentTask",
    "Anchor",
    "AnchorFinding",
    "ArchiveError",
    "ArchiveRun",
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
