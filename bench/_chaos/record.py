"""What a run of bench/chaos.py records: the requests it created and the kills it made."""

from __future__ import annotations

from dataclasses import dataclass, field

# Demo studies and the analyses each request of them ends with: two a run, by the assembly and by the analysis
# chained after it (PRJEB00002 has a run that data QA rejects).
STUDIES = {"PRJEB00001": 4, "PRJEB00002": 2}


@dataclass
class Kill:
    number: int
    at: float  # time.time()
    phases: dict[int, str]  # unfinished request -> its phase, read just before
    flow_processes: int
    aimed: bool = False
    orphans: dict[str, str] = field(default_factory=dict)  # submission key -> Slurm job id
    down: float = 0.0
    survivors: int = 0


@dataclass
class Posted:
    request_id: int
    study: str
    at: float
    finished_at: float | None = None
    status: str = "pending"
