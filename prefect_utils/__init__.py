"""Everything about Slurm, one concept a module: states, job_spec, keys, errors, parsing, slurm_client (the
scheduler client), ledger (the storage protocol), submission (idempotent batches, cancel), poller (the shared
status poller), policy (resubmission), slurm_flow (the Prefect suspend helper), flow_processes (which flow runs
have a live process on this host)."""
