"""Which flow runs have a process alive on this host, whatever state Prefect shows for them.

Prefect's runners and process workers start each flow run as a process whose environment carries
`PREFECT__FLOW_RUN_ID`. Between Pending and the flow's first line that process imports Prefect and the flow's
modules: seconds on an idle machine, a minute with eight of them starting on two cores. No lock is held and
Prefect's state does not move meanwhile, so only the process itself says the run is being started, not lost.

Only this host's processes (of users whose environment this process may read) can be seen: a run started on
another host is judged by its state's age alone.
"""

from __future__ import annotations

import os
from pathlib import Path

_VARIABLE = b"PREFECT__FLOW_RUN_ID="


def flow_runs_with_local_process(proc: Path = Path("/proc")) -> set[str]:
    """The flow-run ids carried by live processes of this host; empty where /proc is not Linux's.

    A process that has exited but is not yet reaped (a zombie) reads as an empty environment, so it is not live.
    """
    found: set[str] = set()
    if not (proc / "self" / "environ").exists():
        return found
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:  # gone meanwhile, or another user's
            continue
        if _VARIABLE not in environ:
            continue
        for variable in environ.split(b"\0"):
            if variable.startswith(_VARIABLE):
                found.add(variable[len(_VARIABLE) :].decode(errors="replace"))
    return found
