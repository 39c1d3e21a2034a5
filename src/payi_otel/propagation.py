"""Carry contextvars (and so the OpenTelemetry Context and the business context) into threads.

contextvars do not flow into ``threading.Thread`` or ``ThreadPoolExecutor.submit`` by
themselves. ``install()`` patches (with wrapt):

* ``threading.Thread.start``: snapshots the starting thread's context
  (``contextvars.copy_context()``) onto the thread object;
* ``threading.Thread.run``: runs the target inside that snapshot;
* ``concurrent.futures.ThreadPoolExecutor.submit``: runs the submitted callable inside a snapshot
  of the submitting thread's context (also covers ``loop.run_in_executor``).

For a thread subclass with its own ``run()`` (``threading.Timer``, user subclasses) the
started thread's ``run`` attribute is set to run that method in the snapshot. ``install()`` is idempotent and
cheap to call again; ``uninstall()`` removes the patches.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

__all__ = ["INSTALLED", "install", "uninstall"]

INSTALLED = False  # read on every context entry: a plain module flag keeps that check cheap
_LOCK = threading.Lock()
_SNAPSHOT_ATTR = "_payi_otel_context"


def _overrides_run(thread: threading.Thread) -> bool:
    for klass in type(thread).__mro__:
        if klass is threading.Thread:
            return False
        if "run" in vars(klass):
            return True
    return False


def _start(wrapped: Any, instance: threading.Thread, args: Any, kwargs: Any) -> Any:
    snapshot = contextvars.copy_context()
    if _overrides_run(instance) and "run" not in vars(instance):
        # A subclass's own run() (threading.Timer, user subclasses) never reaches Thread.run:
        # run it in the snapshot through an instance attribute, for this thread only.
        instance.run = functools.partial(snapshot.run, instance.run)  # type: ignore[method-assign]
    else:
        setattr(instance, _SNAPSHOT_ATTR, snapshot)
    return wrapped(*args, **kwargs)


def _run(wrapped: Any, instance: threading.Thread, args: Any, kwargs: Any) -> Any:
    snapshot = instance.__dict__.pop(_SNAPSHOT_ATTR, None)
    if snapshot is None:
        return wrapped(*args, **kwargs)
    return snapshot.run(wrapped, *args, **kwargs)


def _submit(wrapped: Any, instance: ThreadPoolExecutor, args: Any, kwargs: Any) -> Any:
    if not args:  # let the executor raise its own TypeError for a missing callable
        return wrapped(*args, **kwargs)
    return wrapped(contextvars.copy_context().run, *args, **kwargs)


def install() -> None:
    """Patch Thread.start/run and ThreadPoolExecutor.submit (no-op when already patched)."""
    global INSTALLED
    with _LOCK:
        if INSTALLED:
            return
        wrap_function_wrapper(threading, "Thread.start", _start)
        wrap_function_wrapper(threading, "Thread.run", _run)
        wrap_function_wrapper(ThreadPoolExecutor, "submit", _submit)
        INSTALLED = True


def uninstall() -> None:
    """Remove the patches (no-op when not installed)."""
    global INSTALLED
    with _LOCK:
        if not INSTALLED:
            return
        unwrap(threading.Thread, "start")
        unwrap(threading.Thread, "run")
        unwrap(ThreadPoolExecutor, "submit")
        INSTALLED = False
