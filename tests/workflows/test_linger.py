"""How a flow run lingers: job ends of one request collapse into the passes of one process (issue 19).

The loop is driven by a clock of the test's own: a pass "takes" the time the test says, and news is what the test
says, so the figures asserted are the loop's decisions, not this machine's speed.
"""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from analyses.models import AssemblyAnalysisRequest
from analyses.services import cancel_assembly_analysis_request
from workflows.models import ClusterJob, RequestProgress
from workflows.orchestration.reconciler import PASS_PACING, PassResult, has_news, linger


class World:
    """A clock, passes that take `pass_seconds` of it, and job ends at the times of `ends`."""

    def __init__(
        self, ends: list[float], pass_seconds: float = 0.1, waiting_until: float = float("inf")
    ) -> None:
        self.now = 0.0
        self.ends = ends
        self.pass_seconds = pass_seconds
        self.waiting_until = waiting_until
        self.passes: list[float] = []  # when each pass started

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def pass_once(self) -> PassResult:
        self.passes.append(self.now)
        read_at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.now)
        self.now += self.pass_seconds
        submitted = [f"key-{len(self.passes)}-1"]  # each pass submits one job
        return PassResult(1, "running", self.now < self.waiting_until, read_at, submitted=submitted)

    def news_since(self, read_at: datetime) -> bool:
        since = (read_at - datetime(2026, 1, 1, tzinfo=UTC)).total_seconds()
        return any(since < end <= self.now for end in self.ends)

    def run(self, linger_seconds: float = 15, linger_max_seconds: float = 600) -> PassResult:
        return linger(
            self.pass_once,
            self.news_since,
            linger_seconds=linger_seconds,
            linger_max_seconds=linger_max_seconds,
            sleep=self.sleep,
            clock=self.clock,
        )


def test_a_steady_stream_of_job_ends_keeps_one_process_until_it_stops():
    # A job ends every second for 100 s: the old fixed 15 s window suspended at 15 s, and every later end cost a
    # resume (a process start). Now the run stays while ends come, and leaves 15 s after the last.
    world = World(ends=[float(t) for t in range(1, 101)])
    result = world.run()
    assert result.waiting
    assert world.passes[-1] >= 100
    assert 115 <= world.now < 117
    # What it did is what all its passes did ("waiting: submitted 1" after three submissions misled).
    assert len(result.submitted) == len(world.passes) > 1
    assert result.summary.startswith(f"waiting: submitted {len(world.passes)},")


def test_passes_are_paced_by_their_own_cost():
    # A pass of 2 s (a 20,000-step plan) with a job ending every second: one pass per 5 pass-lengths at most, each
    # taking the job ends of the wait together, rather than one pass per job end.
    world = World(ends=[float(t) for t in range(1, 121)], pass_seconds=2.0)
    world.run()
    gaps = [b - a for a, b in zip(world.passes, world.passes[1:], strict=False)]
    assert gaps and min(gaps) >= (1 + PASS_PACING) * 2.0
    assert len(world.passes) <= 120 / ((1 + PASS_PACING) * 2.0) + 2


def test_a_run_gives_its_process_back_after_the_maximum():
    world = World(ends=[t / 2 for t in range(1, 10_000)])
    assert world.run(linger_seconds=15, linger_max_seconds=60).waiting
    assert 60 <= world.now < 63


def test_a_request_that_needs_nothing_more_ends_the_linger_at_once():
    world = World(ends=[float(t) for t in range(1, 101)], waiting_until=10)
    assert not world.run().waiting
    assert world.now < 12


def test_quiet_means_suspend_after_the_linger_window():
    world = World(ends=[])
    world.run(linger_seconds=15)
    assert world.passes == [0.0] and 15 <= world.now < 16


@pytest.mark.django_db
def test_news_is_a_job_end_a_grant_or_a_cancellation_since_the_read():
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    read_at = timezone.now()
    assert not has_news(request.pk, read_at)

    job = ClusterJob.objects.create(
        request=request,
        key="k1",
        attempt=1,
        spec={},
        state="RUNNING",
        slurm_job_id="1",
        state_changed_at=read_at,
    )
    ClusterJob.objects.filter(pk=job.pk).update(state_changed_at=read_at + timedelta(seconds=1))
    assert not has_news(request.pk, read_at), "a job that merely started running gives a pass nothing to do"
    ClusterJob.objects.filter(pk=job.pk).update(state="COMPLETED")
    assert has_news(request.pk, read_at)
    assert not has_news(request.pk, read_at + timedelta(seconds=2))

    later = read_at + timedelta(seconds=2)
    RequestProgress.objects.create(
        request=request, capacity_granted=1, capacity_granted_at=later + timedelta(seconds=1)
    )
    assert has_news(request.pk, later)
    RequestProgress.objects.filter(pk=request.pk).update(capacity_granted_at=later - timedelta(seconds=1))
    assert not has_news(request.pk, later)

    cancel_assembly_analysis_request(request, by=None, reason="test")
    assert has_news(request.pk, later)
