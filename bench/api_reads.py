"""The API's read path at archive scale: latency, queries per request and bytes of every list and detail.

    .venv/bin/python bench/api_reads.py [--studies 100000 --runs 300000 --analyses 200000 --requests 20000]
                                        [--jobs 20000] [--samples 200] [--rebuild] [--database emgapi_bench_reads]

Builds its own database (`emgapi_bench_reads` on the server of DATABASE_URL; never the development one) once with
bulk SQL (generate_series) and reuses it while the sizes match; it is migrated on every start, so new migrations
are applied to a database full of rows as production's would be. One study has `--large` runs and analyses (the
"large detail"); the others have about three runs each. The bench user also has one running request over the
large study with `--jobs` ledger rows (four steps a run, as a 5,000-run study has 20,000). Then it starts gunicorn
(2 workers, production settings) on a free port, sends `--samples` requests per endpoint one at a time from one
client after a warm-up, and prints p50/p95/p99 in ms, the queries one request makes (counted in this process with
Django's test client on the same database: the server's settings are not touched) and the response's bytes. Last,
the admin page of the request with `--jobs` jobs, timed in this process (goal ≤ 500 ms).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import fmt, percentiles_ms, say, verdict
from bench._services import gunicorn
from bench._setup import admin_url, bench_parser, migrate, use_database

if TYPE_CHECKING:  # Django is set up by open_database(), after this module is imported
    from django.db.models import QuerySet

GUNICORN_TIMEOUT = 120
WARM_UP = 10
BENCH_USER = "bench-reader"
BENCH_TOKEN = "bench0reads0token0000000000000000000000a"  # 40 characters, as DRF's tokens are
WORDS = (
    "marine soil gut hydrothermal vent permafrost wastewater sediment rhizosphere lake river glacier compost "
    "biofilm coral sponge mangrove estuary aquifer hot spring desert peat bog seawater ocean arctic antarctic "
    "metagenome microbial community time series depth profile bioreactor digester plant root leaf skin oral"
).split()
BIOMES = [
    "root:Environmental:Aquatic:Marine",
    "root:Environmental:Aquatic:Marine:Hydrothermal vents",
    "root:Environmental:Aquatic:Freshwater",
    "root:Environmental:Aquatic:Freshwater:Lake",
    "root:Environmental:Terrestrial:Soil",
    "root:Environmental:Terrestrial:Soil:Permafrost",
    "root:Environmental:Terrestrial:Peat",
    "root:Host-associated:Human:Digestive system",
    "root:Host-associated:Human:Skin",
    "root:Host-associated:Plants:Rhizosphere",
    "root:Engineered:Wastewater",
    "root:Engineered:Bioreactor",
]


# --- the database -------------------------------------------------------------------------------------------------


def open_database(name: str, rebuild: bool) -> None:
    """Create database ``name`` if missing (or ``rebuild``), point this process at it and migrate it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and rebuild:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        if not exists or rebuild:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    os.environ["DJANGO_SETTINGS_MODULE"] = "emgapi.settings"
    os.environ.update({"DEBUG": "0", "SECURE_SSL_REDIRECT": "0", "ALLOWED_HOSTS": "127.0.0.1,testserver"})
    use_database(name)
    started = time.monotonic()
    migrate()
    say(f"migrated {name} in {time.monotonic() - started:.1f} s")


def populate(sizes: dict[str, int]) -> None:
    """Fill the archive with ``sizes`` rows unless it already holds exactly that (recorded in bench_reads_sizes)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_reads_sizes (name text PRIMARY KEY, value bigint)")
        cursor.execute("SELECT name, value FROM bench_reads_sizes")
        if dict(cursor.fetchall()) == sizes:
            say(f"reusing the database: {sizes}")
            return
    started = time.monotonic()
    n_studies, n_runs, n_analyses, n_requests, large = (
        sizes[key] for key in ("studies", "runs", "analyses", "requests", "large")
    )
    words = "ARRAY[" + ",".join(f"'{word}'" for word in WORDS) + "]"
    biomes = ",".join(f"('{lineage}', '{lineage.rsplit(':', 1)[-1]}')" for lineage in BIOMES)
    statements = [
        "TRUNCATE analyses_analysis, analyses_assembly_runs, analyses_assembly, analyses_run, analyses_sample, "
        "analyses_assemblyanalysisrequest, analyses_study, analyses_biome, analyses_accessioncounter, "
        "bench_reads_sizes RESTART IDENTITY CASCADE",
        f"INSERT INTO analyses_biome (lineage, name) VALUES {biomes}",
        # Studies: created one a minute back from now, titles of five words from a vocabulary (so a search term
        # matches about one study in eight, as a real word would), a biome each.
        f"""INSERT INTO analyses_study (accession, ena_accession, secondary_ena_accession, title, description,
                biome_id, created, updated, last_synced_with_ena)
            SELECT 'MGYS' || lpad(n::text, 8, '0'), 'PRJEB' || (100000 + n), 'ERP' || (100000 + n),
                   initcap(array_to_string(ARRAY(SELECT ({words})[1 + ((n * 7919 + k * 104729) % {len(WORDS)})]
                                                 FROM generate_series(1, 5) k), ' ')) || ' ' || n,
                   'A study of the bench.', 1 + n % {len(BIOMES)},
                   now() - make_interval(mins => {n_studies} - n), now() - make_interval(mins => {n_studies} - n),
                   NULL
            FROM generate_series(1, {n_studies}) n""",
        f"""INSERT INTO analyses_sample (accession, secondary_accession, study_id, title, created, updated)
            SELECT 'SAMEA' || (1000000 + n), '', n, '', now(), now() FROM generate_series(1, {n_studies}) n""",
        # Runs: the first `large` belong to the study in the middle; the rest go round the studies.
        f"""INSERT INTO analyses_run (accession, study_id, sample_id, instrument_platform, instrument_model,
                library_strategy, library_source, library_layout, fastq_urls, fastq_md5, read_count, base_count,
                qa_status, qa_reason, created, updated)
            SELECT 'ERR' || (1000000 + n), s, s, 'ILLUMINA', 'Illumina NovaSeq 6000', 'WGS', 'METAGENOMIC',
                   'PAIRED', '[]', '[]', 1000000 + n, 150000000 + n, 'passed', '', now(), now()
            FROM generate_series(1, {n_runs}) n,
                 LATERAL (SELECT CASE WHEN n <= {large} THEN {n_studies // 2} ELSE 1 + n % {n_studies} END s) x""",
        f"""INSERT INTO analyses_analysis (accession, study_id, run_id, pipeline_version, status,
                results_directory, summary, created, updated)
            SELECT 'MGYA' || lpad(n::text, 8, '0'), r.study_id, r.id, '1.0',
                   (ARRAY['completed','completed','completed','failed','running'])[1 + n % 5], '',
                   jsonb_build_object('n50', 1000 + n % 5000, 'contigs', n % 9000), now(), now()
            FROM generate_series(1, {n_analyses}) n JOIN analyses_run r ON r.id = n""",
        f"""INSERT INTO analyses_accessioncounter (prefix, last_number)
            VALUES ('MGYS', {n_studies}), ('MGYA', {n_analyses})""",
        f"""INSERT INTO auth_user (username, password, is_superuser, is_staff, is_active, first_name, last_name,
                email, date_joined)
            VALUES ('{BENCH_USER}', '!', false, false, true, '', '', '', now())
            ON CONFLICT (username) DO NOTHING""",
        f"""INSERT INTO authtoken_token (key, user_id, created)
            SELECT '{BENCH_TOKEN}', id, now() FROM auth_user WHERE username = '{BENCH_USER}'
            ON CONFLICT DO NOTHING""",
        # The bench user's requests, finished, one per study (the one-active rule is not in the way).
        f"""INSERT INTO analyses_assemblyanalysisrequest (requester_id, study_accession, study_id, status,
                status_detail, request_metadata, forced, created, updated)
            SELECT u.id, 'PRJEB' || (100000 + n), n, 'completed', '',
                   jsonb_build_object('succeeded_runs', jsonb_build_array('ERR' || (1000000 + n)),
                                      'failed_runs', '{{}}'::jsonb), false, now(), now()
            FROM generate_series(1, {n_requests}) n, auth_user u WHERE u.username = '{BENCH_USER}'""",
    ]
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    populate_jobs(sizes)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO bench_reads_sizes (name, value) VALUES "
            + ",".join(f"('{key}', {value})" for key, value in sizes.items())
        )
    connection.close()
    import psycopg

    # VACUUM cannot run in a transaction; the visibility map it writes is what makes COUNT(*) index-only.
    with psycopg.connect(
        urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(scheme="postgresql"))
    ) as conn:
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    say(f"built {sizes} in {time.monotonic() - started:.1f} s")


def populate_jobs(sizes: dict[str, int]) -> None:
    """The bench user's running request over the large study: a plan of `jobs` steps (four per run) and one
    ledger row per step, mostly COMPLETED, one in 50 FAILED with a log tail, the last 100 RUNNING.

    Through the ORM (bulk_create), so that a column added to the ledger later gets its default.
    """
    from django.contrib.auth.models import User
    from django.db import transaction
    from django.utils import timezone

    from analyses.models import AssemblyAnalysisRequest, Study
    from workflows.models import ClusterJob, Plan, PlanStep

    steps = ("fetch_reads", "read_qc", "assembly", "assembly_stats")
    n_jobs = sizes["jobs"]
    study = Study.objects.get(pk=sizes["studies"] // 2)
    now = timezone.now()
    with transaction.atomic():
        request = AssemblyAnalysisRequest.objects.create(
            study_accession=study.ena_accession,
            study=study,
            requester=User.objects.get(username=BENCH_USER),
            status=AssemblyAnalysisRequest.Status.RUNNING,
        )
        plan = Plan.objects.create(
            request=request, pipeline="assembly", pipeline_version="1.0", uid="bench0jobs"
        )
        keys = [f"{n:064x}" for n in range(n_jobs)]
        PlanStep.objects.bulk_create(
            (
                PlanStep(
                    plan=plan,
                    run_accession=f"ERR{1000001 + n // 4}",
                    step=steps[n % 4],
                    position=n % 4,
                    spec={},
                    key=keys[n],
                )
                for n in range(n_jobs)
            ),
            batch_size=2000,
        )
        jobs = []
        for n in range(n_jobs):
            running = n >= n_jobs - 100
            failed = not running and n % 50 == 49
            state = "RUNNING" if running else "FAILED" if failed else "COMPLETED"
            started = now - timedelta(seconds=2 * (n_jobs - n))
            jobs.append(
                ClusterJob(
                    key=keys[n],
                    name=f"emgapi-{steps[n % 4]}-ERR{1000001 + n // 4}",
                    spec={},
                    slurm_job_id=str(500000 + n),
                    state=state,
                    slurm_state=state,
                    exit_code=None if running else 1 if failed else 0,
                    log_tail="line 1\nline 2\nexit 1" if failed else "",
                    request=request,
                    submitted_at=started,
                    started_at=started,
                    ended_at=None if running else started + timedelta(seconds=1),
                )
            )
        ClusterJob.objects.bulk_create(jobs, batch_size=2000)
    say(f"the jobs request: {request.pk}, {n_jobs} jobs")


# --- the endpoints ------------------------------------------------------------------------------------------------


def endpoints(sizes: dict[str, int]) -> list[tuple[str, str, bool]]:
    """(label, path, authenticated) of what a client reads; the accessions follow populate()'s layout.

    Page numbers reach the first API_MAX_PAGE_DEPTH results; deeper pages are read as a client reaches them, by
    the cursor of a `next` link (made here as the API makes it, from the row before the page).
    """
    from django.conf import settings

    from analyses.models import Study
    from workflows.selectors import request_jobs

    large = f"MGYS{sizes['studies'] // 2:08d}"
    small = f"MGYS{sizes['studies'] // 3:08d}"
    deepest = max(1, -(-settings.API_MAX_PAGE_DEPTH // 25))  # the last page a number reaches, 25 to a page
    deep = max(1, sizes["studies"] * 3 // 4)  # three quarters of the way through
    request_id = jobs_request_id()
    jobs = f"/api/assembly-analysis-requests/{request_id}/jobs/"
    last_jobs = max(1, sizes["jobs"] - 25)  # the last 25 jobs
    return [
        ("studies: list", "/api/studies/", False),
        (f"studies: page {deepest} (deepest numbered)", f"/api/studies/?page={deepest}", False),
        (
            f"studies: deep page (rows {deep:,}+, cursor)",
            f"/api/studies/?cursor={cursor_after(Study.objects.order_by('-created', '-id'), deep)}",
            False,
        ),
        ("studies: search title", "/api/studies/?search=permafrost", False),
        # "TER" is in five of the vocabulary's words (wastewater, seawater, series, ...): about 36 % of the studies.
        ("studies: broad search", "/api/studies/?search=ter", False),
        ("studies: filter biome", "/api/studies/?biome=root:Environmental:Aquatic", False),
        (
            "studies: filter ENA acc.",
            f"/api/studies/?ena_accession=ERP{100000 + sizes['studies'] // 3}",
            False,
        ),
        ("study detail, small", f"/api/studies/{small}/", False),
        ("study detail, large", f"/api/studies/{large}/", False),
        ("study runs, large", f"/api/studies/{large}/runs/", False),
        ("study analyses, large", f"/api/studies/{large}/analyses/", False),
        ("analyses: list", "/api/analyses/", False),
        ("analyses: filter study", f"/api/analyses/?study={large}", False),
        ("analyses: filter status", "/api/analyses/?status=failed", False),
        ("requests: list (own)", "/api/assembly-analysis-requests/", True),
        ("requests: filter status", "/api/assembly-analysis-requests/?status=completed", True),
        (f"request jobs ({sizes['jobs']})", jobs, True),
        (
            f"request jobs: last 25 (rows {last_jobs:,}+, cursor)",
            f"{jobs}?cursor={cursor_after(request_jobs(request_id), last_jobs)}",
            True,
        ),
        ("request jobs: page_size=100", f"{jobs}?page_size=100&page=3", True),
    ]


def cursor_after(queryset: QuerySet[Any], rows: int) -> str:
    """The cursor of a `next` link to the page that starts after the first `rows` rows of `queryset` (ordered as
    its list orders it)."""
    from urllib.parse import quote

    from analyses.pagination import encode_cursor, total_order

    order = total_order(queryset)
    return quote(encode_cursor(order, queryset[rows - 1], forward=True))


def jobs_request_id() -> int:
    """The request populate_jobs made: the only one running."""
    from analyses.models import AssemblyAnalysisRequest

    return AssemblyAnalysisRequest.objects.get(status=AssemblyAnalysisRequest.Status.RUNNING).pk


def admin_request_page(samples: int) -> tuple[list[float], int, int]:
    """The jobs request's admin page, timed in this process (Django's test client, a superuser's session): the
    timings in ms, its SQL statements and its bytes. The goal is for the page, not for a server's overhead."""
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    admin, _ = User.objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(admin)
    url = reverse("admin:analyses_assemblyanalysisrequest_change", args=[jobs_request_id()])
    client.get(url)
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    with CaptureQueriesContext(connection) as queries:
        size = len(client.get(url).content)
    return timings, len(queries), size


def queries_per_request(path: str, authenticated: bool) -> tuple[int, int]:
    """The SQL statements one request makes, and its status, in this process (a warm second request)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    headers = {"Authorization": f"Token {BENCH_TOKEN}"} if authenticated else {}
    client = Client(headers=headers)
    client.get(path)
    with CaptureQueriesContext(connection) as queries:
        status = client.get(path).status_code
    return len(queries), status


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=300_000)
    parser.add_argument("--analyses", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=20_000, help="the bench user's requests")
    parser.add_argument("--large", type=int, default=5_000, help="runs of the large study")
    parser.add_argument(
        "--jobs", type=int, default=20_000, help="ledger rows of the bench user's running request"
    )
    parser.add_argument("--samples", type=int, default=200, help="timed requests per endpoint")
    parser.add_argument(
        "--max-seconds", type=float, default=60, help="per endpoint: fewer samples if slower than this"
    )
    parser.add_argument("--min-samples", type=int, default=20, help="however slow the endpoint")
    parser.add_argument("--database", default="emgapi_bench_reads")
    parser.add_argument("--rebuild", action="store_true", help="drop and build the database again")
    args = parser.parse_args()
    if args.analyses > args.runs or args.large > args.runs or args.requests > args.studies:
        parser.error("--analyses, --large ≤ --runs and --requests ≤ --studies")
    sizes = {
        "studies": args.studies,
        "runs": args.runs,
        "analyses": args.analyses,
        "requests": args.requests,
        "large": args.large,
        "jobs": args.jobs,
    }

    open_database(args.database, args.rebuild)
    populate(sizes)
    import httpx

    rows: list[tuple] = []  # label, p50, p95, p99, queries, bytes, statuses, requests answered
    headers = {"Authorization": f"Token {BENCH_TOKEN}"}
    with gunicorn(dict(os.environ), timeout=60) as client:
        for label, path, authenticated in endpoints(sizes):
            auth = headers if authenticated else None
            timings: list[float] = []
            statuses: set[int | str] = set()
            size = 0
            # Warm-up: until both workers have served this endpoint (their first request imports and
            # connects), at most WARM_UP requests or 5 s; then the samples, at least --min-samples.
            warm_until = time.monotonic() + 5
            warm = 0
            while warm < WARM_UP and (warm < 2 or time.monotonic() < warm_until):
                try:
                    client.get(path, headers=auth)
                except httpx.TransportError:
                    break
                warm += 1
            budget = time.monotonic() + args.max_seconds
            for i in range(args.samples):
                if i >= args.min_samples and time.monotonic() > budget:
                    break
                started = time.perf_counter()
                try:
                    response = client.get(path, headers=auth)
                except httpx.TransportError:  # gunicorn killed the worker at its timeout
                    statuses.add(f"no answer in {GUNICORN_TIMEOUT} s")
                    continue
                timings.append((time.perf_counter() - started) * 1000)
                statuses.add(response.status_code)
                size = len(response.content)
            if not timings:
                rows.append((label, None, None, None, None, None, sorted(map(str, statuses)), 0))
                say(f"  {label}: {statuses}")
                continue
            queries, _ = queries_per_request(path, authenticated)
            p50, p95, p99 = percentiles_ms(timings)
            rows.append((label, p50, p95, p99, queries, size, sorted(map(str, statuses)), len(timings)))
            say(f"  {label}: p99 {p99:.1f} ms ({len(timings)} requests)")

    say("")
    say(
        f"{sizes['studies']} studies, {sizes['runs']} runs, {sizes['analyses']} analyses, "
        f"{sizes['requests']} requests; {args.samples} requests per endpoint, gunicorn -w 2, one client"
    )
    say("")
    say("| endpoint | p50 ms | p95 ms | p99 ms | queries | bytes | status | n |")
    say("|---|---:|---:|---:|---:|---:|---|---:|")
    for label, p50, p95, p99, queries, size, answers, n in rows:
        status = ",".join(answers)
        if p50 is None:
            say(f"| {label} | n/a | n/a | n/a | n/a | n/a | {status} | 0 |")
        else:
            say(f"| {label} | {p50:.1f} | {p95:.1f} | {p99:.1f} | {queries} | {size} | {status} | {n} |")
    timings, queries, size = admin_request_page(max(5, min(args.samples, 20)))
    page_p50 = statistics.median(timings)
    say("")
    say(
        f"admin request page at {sizes['jobs']} jobs (in process, {len(timings)} requests): p50 {page_p50:.1f} ms, "
        f"max {max(timings):.1f} ms, {queries} queries, {size} bytes; goal ≤ 500 ms: {verdict(max(timings) <= 500)}"
    )
    answered = [row for row in rows if row[6] == ["200"]]
    slowest = max(answered, key=lambda row: row[3])
    met = verdict(slowest[3] <= 50 and len(answered) == len(rows))
    say("")
    say(
        f"goal p99 ≤ 50 ms on every endpoint: {met} (slowest answered: {slowest[0]}, {slowest[3]:.1f} ms; "
        f"{len(rows) - len(answered)} endpoints not all 200)"
    )
    jobs = [row for row in rows if row[0].startswith("request jobs")]
    worst = max(jobs, key=lambda row: row[3] if row[3] is not None else float("inf"))
    say(
        f"goal API jobs page p99 ≤ 50 ms at {sizes['jobs']} jobs: "
        f"{verdict(all(row[6] == ['200'] and row[3] <= 50 for row in jobs))} "
        f"(slowest: {worst[0]}, p50 {fmt(worst[1])} ms, p99 {fmt(worst[3])} ms)"
    )


if __name__ == "__main__":
    main()
