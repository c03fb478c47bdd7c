"""Kernels for the runner: a quiet shutdown and a filtered console.

jupyter_client interrupts every kernel before shutting it down, so an idle ipykernel logs "KeyboardInterrupt caught
in kernel" after each notebook; and a run stopped by SIGINT/SIGTERM gets the kernels' own tracebacks (ZMQError ...)
on its console. :func:`kernel_manager_class` gives papermill a kernel manager without either.
"""

from __future__ import annotations

import os
import re
import sys

from helpers.common.native_logs import NOISE

_KERNEL_MANAGER = None
#: The signal that interrupted this run (see :func:`mark_interrupted`), so a kernel error it causes reads as one.
signal_received: int | None = None


def mark_interrupted(signum: int) -> None:
    """Record that SIGINT/SIGTERM stopped this run: kernels are interrupted on shutdown and their console dropped."""
    global signal_received
    signal_received = signum
    # nbclient's cell task may still fail with DeadKernelError as the kernel goes down; asyncio would print that
    # never-retrieved exception as a traceback at exit, after the runner's one-line message
    import logging

    logging.getLogger("asyncio").disabled = True


#: Kernel console lines that say nothing to the user (the cells' own output is in the notebook).
KERNEL_NOISE = re.compile(r"^\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption")


def forward_stderr(fd: int) -> None:
    """Copy a kernel's console output to ours, without start-up noise, and nothing once this run is interrupted."""
    with os.fdopen(fd, "r", errors="replace") as stream:
        for line in stream:
            text = line.rstrip("\r\n")
            if signal_received is None and not NOISE.match(text) and not KERNEL_NOISE.match(text):
                sys.stderr.write(line)
                sys.stderr.flush()


def kernel_manager_class():
    """A kernel manager that does not interrupt an idle kernel before asking it to shut down, and filters its console.

    jupyter_client's ``shutdown_kernel`` sends SIGINT first; an idle ipykernel then logs "KeyboardInterrupt
    caught in kernel" on the runner's console after every notebook. The interrupt is still sent when this run
    was itself interrupted (a cell may be running); the kernel's tracebacks of that shutdown (ZMQError ...) are
    dropped, since the runner says in one line what happened.
    """
    global _KERNEL_MANAGER
    if _KERNEL_MANAGER is None:
        import threading

        from jupyter_client.manager import AsyncKernelManager

        class QuietShutdownKernelManager(AsyncKernelManager):
            async def _async_interrupt_kernel(self) -> None:
                if self.shutting_down and signal_received is None:
                    return
                await super()._async_interrupt_kernel()

            async def _async_launch_kernel(self, kernel_cmd, **kw) -> None:
                if kw.get("stderr") is not None:
                    return await super()._async_launch_kernel(kernel_cmd, **kw)
                read, write = os.pipe()
                try:
                    await super()._async_launch_kernel(kernel_cmd, stderr=write, **kw)
                except BaseException:
                    os.close(read)
                    raise
                finally:
                    os.close(write)
                threading.Thread(target=forward_stderr, args=(read,), daemon=True).start()

        _KERNEL_MANAGER = QuietShutdownKernelManager
    return _KERNEL_MANAGER
