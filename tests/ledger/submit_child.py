"""A separate process calling submit_once, as a crashed-and-rerun or a concurrent flow would.

Usage: python submit_child.py SPEC_JSON [START_FILE]. Prints the job id. With START_FILE, once Django is set up it
creates START_FILE.ready.<pid> and waits for START_FILE to exist, so that many children, started one after another
and slow to import, call submit_once at the same moment.
"""

import json
import os
import sys
import time
from pathlib import Path

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emgapi.settings")
    django.setup()
    from prefect_utils.job_spec import JobSpec
    from prefect_utils.submission import SlurmJobs
    from workflows.orchestration.ledger import DjangoJobLedger

    spec = JobSpec.from_canonical(json.loads(sys.argv[1]))
    if len(sys.argv) > 2:
        start = Path(sys.argv[2])
        start.with_name(f"{start.name}.ready.{os.getpid()}").touch()
        deadline = time.monotonic() + 60
        while not start.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    record = SlurmJobs(DjangoJobLedger()).submit_once(spec, {})
    print(record.job_id)


if __name__ == "__main__":
    main()
