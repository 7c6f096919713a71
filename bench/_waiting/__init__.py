"""The parts of bench/waiting.py: `run` (the stack, its waiting requests and the job ends it times), `holdings`
(what waiting requests hold: processes, threads, memory, connections), `slurm` (the hold filter, and squeue and
sacct of the held jobs) and `report` (the figures and goals)."""
