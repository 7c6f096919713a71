"""The parts of bench/poll.py: `pools` (the real Slurm jobs the ledger is filled with) and `measure` (the polls of
one scenario at one N, and their profile)."""
