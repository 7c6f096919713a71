"""Which flow runs have a live process on this host: real processes, as Prefect's runners start them."""

import os
import subprocess
import sys
import uuid

from prefect_utils.flow_processes import flow_runs_with_local_process


def start(flow_run_id: str, code: str) -> subprocess.Popen:
    env = {**os.environ, "PREFECT__FLOW_RUN_ID": flow_run_id}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE)


def test_a_live_process_names_its_run_and_a_zombie_does_not():
    alive, exited = str(uuid.uuid4()), str(uuid.uuid4())
    sleeper = start(alive, "import sys; sys.stdin.read()")
    zombie = start(exited, "pass")
    try:
        # Until it is reaped, an exited child stays in /proc as a zombie that still carries its environment.
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)
        found = flow_runs_with_local_process()
        assert alive in found
        assert exited not in found
    finally:
        sleeper.kill()
        sleeper.wait()
        zombie.wait()
    assert alive not in flow_runs_with_local_process()
