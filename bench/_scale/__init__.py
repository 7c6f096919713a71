"""The parts of bench/scale.py: `rows` (scenario (c)'s requests, their PAUSED flow runs, the capacity queue and a
full cluster), `measure` (a sweep, or a wake-up after a poll, with its CPU, SQL statements, Prefect calls and
resumes; its profile), `run` (one N on its own Prefect server and database) and `report` (the figures, their
ratios to the smallest N and the goals)."""
