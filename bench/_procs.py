"""What a benchmark reads of processes from /proc: their state, memory and threads, their children and process
groups, and which of serve_flows' children are flow runs. Importing this module changes nothing."""

from __future__ import annotations

from pathlib import Path


def proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def status_field(pid: int, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def children(pid: int) -> list[int]:
    pids: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return pids
    for task in tasks:
        try:
            pids += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return pids


def descendants(pid: int) -> list[int]:
    found, todo = [], children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children(child)
    return found


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`, wherever they were reparented."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def is_flow_process(pid: int) -> bool:
    """The runner starts each flow run as `python -m prefect.engine`; its other children (the poller's squeue and
    sacct, say) are not flow processes."""
    return "prefect.engine" in cmdline(pid)


def flow_processes(server_pid: int) -> list[int]:
    """Live (not zombie) flow-run processes of serve_flows."""
    return [
        pid for pid in children(server_pid) if proc_state(pid) not in (None, "Z") and is_flow_process(pid)
    ]
