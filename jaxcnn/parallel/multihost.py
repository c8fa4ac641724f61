"""Several hosts (processes): ``jax.distributed.initialize`` with CPU collectives over gloo.

Call before any other JAX work. After it, ``jax.devices()`` lists the devices
of every process and ``DataParallel`` spans them all; each process feeds its
own slice of the global batch.

``initialize`` checks its arguments before touching JAX (a coordinator that is
not ``host:port``, a process id out of range, several processes without a
coordinator are one-line ``ValueError``s), says on stderr what it waits for,
and gives up after ``timeout_s`` (default ``JOIN_TIMEOUT_S``) with one line and
exit status 2. JAX's own wait ends by aborting the process with a C++ stack
trace, so a watchdog thread ends it first: ``jax.distributed.initialize``
gets ``timeout_s + JAX_TIMEOUT_MARGIN_S`` and the watchdog ``timeout_s``.
"""

from __future__ import annotations

import os
import sys
import threading

JOIN_TIMEOUT_S = 300          # how long every process waits for all of them to join
JAX_TIMEOUT_MARGIN_S = 30     # JAX's own deadline comes this much later than ours
EXIT_STATUS = 2               # the command line's status for a failed start


def parse_coordinator(coordinator: str) -> tuple[str, int]:
    """``host:port`` (``[v6addr]:port`` for IPv6) -> (host, port), or a one-line ``ValueError``."""
    host, sep, port = str(coordinator).rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator {coordinator!r} is not host:port (the address of process 0 and a free "
                         "port, e.g. 10.0.0.1:1234)")
    return host, int(port)


def check_arguments(coordinator: str | None, num_processes: int, process_id: int) -> bool:
    """Whether these arguments ask for a multi-process run (False: one process, nothing to join);
    a one-line ``ValueError`` for arguments that cannot make one."""
    if num_processes < 1:
        raise ValueError(f"--num-processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is not in [0, {num_processes}) (--num-processes {num_processes})")
    if coordinator is None:
        if num_processes > 1:
            raise ValueError(f"{num_processes} processes need --coordinator host:port (the address of process 0); "
                             "without it this process would train alone")
        return False
    parse_coordinator(coordinator)
    return True


def initialize(coordinator: str | None, num_processes: int, process_id: int, *,
               timeout_s: float = JOIN_TIMEOUT_S) -> None:
    """Joins a multi-process run (``coordinator`` is ``host:port`` of process 0); with ``coordinator=None``
    and one process, does nothing. Exits with status 2 and one line when the processes have not all joined
    within ``timeout_s`` seconds."""
    if not check_arguments(coordinator, num_processes, process_id):
        return
    if timeout_s <= 0:
        raise ValueError(f"the join timeout must be > 0 seconds, got {timeout_s}")
    import jax

    others = num_processes - 1
    if process_id == 0:
        waits = f"for the other {others} process(es) to connect to {coordinator}"
        hint = f"start processes 1..{others} with --coordinator {coordinator} --num-processes {num_processes}"
    else:
        waits = f"to reach process 0 at {coordinator} and for all {num_processes} processes to join"
        hint = (f"start process 0 on that host with --coordinator {coordinator} --num-processes {num_processes}, "
                "and check that the port is reachable")
    print(f"process {process_id} of {num_processes}: waiting up to {timeout_s:g} s {waits}", file=sys.stderr,
          flush=True)
    joined = threading.Event()

    def give_up() -> None:
        if not joined.is_set():
            print(f"jaxcnn: error: process {process_id} of {num_processes}: not all processes joined within "
                  f"{timeout_s:g} s; {hint}", file=sys.stderr, flush=True)
            os._exit(EXIT_STATUS)   # the wait is inside JAX's C++ client: no exception can end it

    watchdog = threading.Timer(timeout_s, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU-only runs; GPUs/TPUs ignore it
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id,
                                   initialization_timeout=int(timeout_s + JAX_TIMEOUT_MARGIN_S))
        joined.set()
    finally:
        watchdog.cancel()
