"""The parts of bench/prefect_down.py: `run` (the stack and its phases), `web` (runserver and the POSTs),
`record` (what a run records of each phase) and `report` (the figures and goals)."""
