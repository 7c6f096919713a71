"""The parts of bench/chaos.py: `run` (the stack, its requests and its kills), `record` (what a run records),
`phases` (where each request is at a kill), `slurm` (the benchmark's jobs as Slurm sees them), `report` (the
figures and goals) and `evidence` (evidence.txt of a finding)."""
