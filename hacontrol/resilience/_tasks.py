"""Cheap lookup of the task running on a loop."""

from __future__ import annotations

import asyncio
from asyncio import tasks as _tasks
from collections.abc import Callable
from typing import Any

# On CPython 3.11 asyncio.current_task() is a Python function that looks the loop up again
# (about 0.3 µs); the hot paths already hold the loop, so read the loop -> task map
# directly when this interpreter has it, and fall back to the public function otherwise.
_current: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = getattr(
    _tasks, "_current_tasks", None
)

task_on: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None] = (
    _current.get if isinstance(_current, dict) else asyncio.current_task
)

get_running_loop = asyncio.get_running_loop
