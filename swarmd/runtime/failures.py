"""What a job's failure records of the exception that caused it: type, message and traceback.

The traceback is bounded (`MAX_TRACEBACK_BYTES`, the innermost frames kept: the end of a
formatted traceback is where the error was raised) and the formatting never raises, whatever
a hostile exception's ``__str__`` or frames do: the type name stands in for what failed.
"""

from __future__ import annotations

import asyncio
import traceback
from typing import Any, Final

from swarmd.errors import describe, type_name

#: Largest traceback kept with a failure, in bytes of UTF-8 (its end: the innermost frames).
MAX_TRACEBACK_BYTES: Final = 16 * 1024
#: Longest message kept with a failure, in characters.
MAX_MESSAGE_CHARS: Final = 2000
#: What starts a traceback cut to its end.
TRUNCATED: Final = "… (traceback truncated: innermost frames kept)\n"


def failure_info(exc: BaseException) -> dict[str, Any]:
    """``{"type", "message", "traceback"}`` of ``exc``; never raises (a part that cannot be
    formatted is replaced by the type name)."""
    return {
        "type": type_name(exc),
        "message": describe(exc, limit=MAX_MESSAGE_CHARS),
        "traceback": format_traceback(exc),
    }


def format_traceback(exc: BaseException, limit: int = MAX_TRACEBACK_BYTES) -> str:
    """The formatted traceback of ``exc``, cut to its last ``limit`` bytes at a line start."""
    try:
        text = "".join(traceback.format_exception(exc))
    except asyncio.CancelledError:
        raise
    except BaseException:  # a frame or a message that cannot be formatted: the type stands for it
        return type_name(exc) + "\n"
    return bounded(text, limit)


def bounded(text: str, limit: int = MAX_TRACEBACK_BYTES) -> str:
    """``text`` if it fits in ``limit`` UTF-8 bytes, else its end (from a line start) after
    the `TRUNCATED` marker, the whole within ``limit`` bytes."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    room = limit - len(TRUNCATED.encode())
    tail = data[len(data) - room :].decode("utf-8", "ignore")
    newline = tail.find("\n")
    if 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1 :]
    return TRUNCATED + tail
