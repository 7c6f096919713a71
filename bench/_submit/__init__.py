"""The parts of bench/submit.py: `phases` (the measured phases and what they share), `reconciler` (phases (d1)
and (d2): a pipeline of N one-step runs), `timing` (how a phase is timed), `baseline` (the ledger's history, the
machine's round trip), `report` (the figures and goals) and `profile` (--profile)."""
