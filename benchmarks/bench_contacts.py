"""Contact lists at scale: the API list (filters, cursor paging) and the admin changelist.

Both are timed through the real stack (django.test.Client with a logged-in session: middleware,
authentication, permissions, filters, pagination, serializer or template). Every scenario's
first page is compared with hand-written SQL, so a fast wrong page cannot pass. A naive figure
beside them pages the same API with LIMIT/OFFSET (what `?page=N` does) to show why cursors.

Data are generated inside PostgreSQL: two teams (the benchmark user's holds 90 %), a name,
organisation, e-mail for every contact and a phone number for every second one, one of ten
tags each and a rare `vip` tag on 1 %.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.pagination import Cursor, LimitOffsetPagination
from rest_framework.test import APIRequestFactory, force_authenticate

from benchmarks.harness import Figure, median
from crm import roles
from crm.api.pagination import DefaultCursorPagination
from crm.api.views import ContactViewSet
from crm.models import Contact, Tag, Team
from crm.search import SEARCH_DOCUMENTS_SQL
from crm.services import roles_sync, team_member_add

API_P50_MS = 25.0
API_P99_MS = 80.0
ADMIN_P50_MS = 150.0
ADMIN_MAX_QUERIES = 15
API_URL = "/api/v1/contacts/"
ADMIN_URL = "/admin/crm/contact/"
HOST = "localhost"
# Each timed scenario runs this many times per benchmark run, so p99 has samples to stand on.
REPEATS = 5
NAIVE_RUNS = 3

FIRST_NAMES = [
    *("Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hannah", "Ida", "Jonas"),
    *("Klara", "Leon", "Lina", "Lukas", "Marie", "Max", "Mia", "Noah", "Paul", "Sophie"),
]
LAST_NAMES = [
    *("Mueller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker"),
    *("Schulz", "Hoffmann", "Koch", "Richter", "Klein", "Wolf", "Schroeder", "Neumann"),
    *("Schwarz", "Zimmermann", "Braun", "Krueger", "Hofmann", "Hartmann", "Lange", "Werner"),
    *("Krause", "Meier", "Lehmann", "Schulze", "Koehler", "Herrmann", "Koenig", "Walter"),
    *("Huber", "Kaiser", "Fuchs", "Peters", "Lang", "Scholz", "Moeller", "Weiss", "Jung"),
    *("Hahn", "Schubert", "Vogel", "Friedrich", "Keller", "Guenther", "Frank", "Berger"),
]
LANGUAGES = ["de"] * 6 + ["en", "en", "fr", "it", "es", "tr", "pl"]
TAGS = [f"interest-{n}" for n in range(10)]
RARE_TAG = "vip"
EPOCH = "2026-01-01 00:00:00+00"


def _populate(size: int) -> tuple[Team, Team]:
    team_a = Team.objects.create(name="Bench A", slug="bench-a")
    team_b = Team.objects.create(name="Bench B", slug="bench-b")
    Tag.objects.bulk_create(
        Tag(team=team, name=name) for team in (team_a, team_b) for name in [*TAGS, RARE_TAG]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO crm_contact (team_id, salutation, first_name, last_name, language,
                time_zone, organisation, profession, preferred_channel, attributes, external_id,
                is_restricted, erased_at, created_at, updated_at)
            SELECT CASE WHEN g %% 10 = 0 THEN %(b)s ELSE %(a)s END, '',
                   (%(first)s::text[])[1 + g %% cardinality(%(first)s::text[])],
                   (%(last)s::text[])[1 + (g / 7) %% cardinality(%(last)s::text[])],
                   (%(languages)s::text[])[1 + (g / 3) %% cardinality(%(languages)s::text[])],
                   'Europe/Berlin',
                   CASE WHEN g %% 5 = 0 THEN 'Praxis ' || (g %% 997) ELSE '' END, '', 'email',
                   '{}'::jsonb, 'EXT' || g, false, NULL,
                   %(epoch)s::timestamptz - make_interval(secs => g * 30),
                   %(epoch)s::timestamptz
            FROM generate_series(1, %(size)s) AS g
            """,
            {
                "a": team_a.pk,
                "b": team_b.pk,
                "first": FIRST_NAMES,
                "last": LAST_NAMES,
                "languages": LANGUAGES,
                "epoch": EPOCH,
                "size": size,
            },
        )
        cursor.execute(
            """
            INSERT INTO crm_contactpoint (contact_id, team_id, channel, address, address_hash,
                                          is_primary, created_at, updated_at)
            SELECT id, team_id, 'email', address,
                   encode(sha256(convert_to(address, 'UTF8')), 'hex'), true, created_at, created_at
            FROM (SELECT id, team_id, created_at,
                         lower(first_name || '.' || last_name || '.' || id) || '@example.org'
                         AS address
                  FROM crm_contact) AS contact
            UNION ALL
            SELECT id, team_id, 'sms', '+49151' || lpad(id::text, 8, '0'),
                   encode(sha256(convert_to('+49151' || lpad(id::text, 8, '0'), 'UTF8')), 'hex'),
                   true, created_at, created_at
            FROM crm_contact WHERE id % 2 = 0
            """
        )
        cursor.execute(
            """
            INSERT INTO crm_contact_tags (contact_id, tag_id)
            SELECT c.id, t.id FROM crm_contact c
            JOIN crm_tag t ON t.team_id = c.team_id
             AND (t.name = 'interest-' || (c.id %% 10) OR (t.name = %s AND c.id %% 100 = 42))
            """,
            [RARE_TAG],
        )
        # The documents need the addresses, which need the contacts' ids: filled afterwards,
        # then the table is rewritten so the update's dead rows do not stay in every scan.
        cursor.execute(SEARCH_DOCUMENTS_SQL)
        cursor.execute("VACUUM FULL crm_contact")
        # What autovacuum does to a live table: statistics, and the visibility map that lets
        # counts read only an index.
        cursor.execute("VACUUM ANALYZE crm_contact, crm_contactpoint, crm_contact_tags, crm_tag")
    return team_a, team_b


def _bench_user(team: Team) -> Any:
    roles_sync()
    user = get_user_model().objects.create_user(username="bench-marketing", is_staff=True)
    user.groups.add(Group.objects.get(name=roles.MARKETING))
    team_member_add(team=team, user=user)
    return user


def _check(condition: object, problem: object) -> None:
    """Stop the benchmark when an answer is wrong: a fast wrong page must not be reported."""
    if not condition:
        raise SystemExit(f"wrong result: {problem}")


def _sql_ids(where: str, params: list[Any], *, limit: int, offset: int = 0) -> list[int]:
    """The expected page, written by hand: newest first, ties by id."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.id FROM crm_contact c WHERE {where} "  # noqa: S608 - fixed fragments
            "ORDER BY c.created_at DESC, c.id DESC LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        return [row[0] for row in cursor.fetchall()]


def _sql_count(where: str, params: list[Any]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM crm_contact c WHERE {where}", params)  # noqa: S608
        return cursor.fetchone()[0]


SEARCH_SQL = (
    "(c.first_name ILIKE %s OR c.last_name ILIKE %s OR c.organisation ILIKE %s "
    "OR c.external_id = %s OR EXISTS (SELECT 1 FROM crm_contactpoint p "
    "WHERE p.contact_id = c.id AND p.address ILIKE %s))"
)
TAG_SQL = (
    "EXISTS (SELECT 1 FROM crm_contact_tags ct JOIN crm_tag t ON t.id = ct.tag_id "
    "WHERE ct.contact_id = c.id AND t.name = %s)"
)


def _search_params(term: str) -> list[Any]:
    pattern = f"%{term}%"
    return [pattern, pattern, pattern, term, pattern]


@dataclass
class Scenario:
    """One list request and the SQL condition (on `c`, the team's contacts) it must match."""

    label: str
    params: dict[str, str]
    where: str = "TRUE"
    where_params: list[Any] = field(default_factory=list)


def _scenarios(sample: Contact, deep_position: str) -> list[Scenario]:
    """The sample contact is found by its e-mail and by its language, tag and name together;
    the two hours before it are a created range."""
    sample_email = sample.points.get(channel="email").address.split("@")[0] + "@"
    window_end = sample.created_at
    window_start = window_end - timedelta(hours=2)
    day_start, day_end = window_start.isoformat(), window_end.isoformat()
    # Combined filters that the sample contact meets, so they match at any scale.
    tag = sample.tags.order_by("name").first().name
    return [
        Scenario("page 1", {}),
        Scenario("deep page (cursor)", {"cursor": deep_position}, "c.created_at < %s", []),
        Scenario("search name", {"search": "Schmidt"}, SEARCH_SQL, _search_params("Schmidt")),
        Scenario(
            "search e-mail", {"search": sample_email}, SEARCH_SQL, _search_params(sample_email)
        ),
        Scenario("language", {"language": "pl"}, "c.language = %s", ["pl"]),
        Scenario("rare tag", {"tag": RARE_TAG}, TAG_SQL, [RARE_TAG]),
        Scenario(
            "created range",
            {"created_after": day_start, "created_before": day_end},
            "c.created_at >= %s AND c.created_at < %s",
            [day_start, day_end],
        ),
        Scenario(
            "language + tag + search",
            {"language": sample.language, "tag": tag, "search": sample.last_name},
            f"c.language = %s AND {TAG_SQL} AND {SEARCH_SQL}",
            [sample.language, tag, *_search_params(sample.last_name)],
        ),
    ]


def _deep_cursor(team: Team, offset: int) -> tuple[str, Any]:
    """The cursor DRF would hand out after paging `offset` rows down, and its position."""
    created_at = (
        Contact.objects.filter(team=team)
        .order_by("-created_at", "-id")
        .values_list("created_at", flat=True)[offset]
    )
    paginator = DefaultCursorPagination()
    paginator.base_url = API_URL
    encoded = paginator.encode_cursor(Cursor(offset=0, reverse=False, position=str(created_at)))
    return parse_qs(urlsplit(encoded).query)["cursor"][0], created_at


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Timed:
    """One request: wall and Python CPU milliseconds, the response and its SQL query count.

    On a shared machine the wall time includes waiting for a core; the CPU time does not
    (SQL runs in PostgreSQL), so both are reported.
    """

    wall_ms: float
    cpu_ms: float
    response: Any
    queries: int


def _timed(request: Callable[[], Any]) -> Timed:
    with CaptureQueriesContext(connection) as queries:
        cpu_started = time.process_time()
        started = time.perf_counter()
        response = request()
        wall_ms = (time.perf_counter() - started) * 1000
        cpu_ms = (time.process_time() - cpu_started) * 1000
    return Timed(wall_ms, cpu_ms, response, len(queries.captured_queries))


def _repeat(request: Callable[[], Any], times: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of `times` runs of `request`.

    Each response is dropped before the next request, as a server drops it once sent: kept,
    the test client's responses (request, context, rendered pages) piled up in the heap
    the garbage collector walks, and its full collections became the p99.
    """
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(times):
        timed = _timed(request)
        wall.append(timed.wall_ms)
        cpu.append(timed.cpu_ms)
    return wall, cpu


def _api_figures(size: int, runs: int, user: Any, team: Team) -> list[Figure]:
    client = Client(HTTP_HOST=HOST)
    client.force_login(user)
    team_where = "c.team_id = %s"
    sample = Contact.objects.filter(team=team).order_by("id")[Contact.objects.count() // 3]
    team_rows = Contact.objects.filter(team=team).count()
    deep_cursor, deep_position = _deep_cursor(team, team_rows // 2)
    scenarios = _scenarios(sample, deep_cursor)
    scenarios[1].where_params = [deep_position]
    client.get(API_URL)  # content types and the like, which a live server has cached

    samples: list[float] = []
    cpu: list[float] = []
    per_scenario: dict[str, float] = {}
    # The slowest request of each scenario: which one makes the p99.
    per_scenario_max: dict[str, float] = {}
    query_counts: dict[str, int] = {}
    checked_rows = 0
    for scenario in scenarios:
        expected = _sql_ids(
            f"{team_where} AND {scenario.where}", [team.pk, *scenario.where_params], limit=50
        )
        first = _timed(lambda s=scenario: client.get(API_URL, s.params))
        response = first.response
        _check(response.status_code == 200, (scenario.label, response.content[:500]))
        got = [row["id"] for row in response.json()["results"]]
        _check(got == expected, f"{scenario.label}: API page differs from SQL")
        _check(expected, f"{scenario.label}: the scenario matches no contact")
        checked_rows += len(got)
        query_counts[scenario.label] = first.queries
        wall, cpu_ms = _repeat(lambda s=scenario: client.get(API_URL, s.params), runs * REPEATS)
        per_scenario[scenario.label] = round(median(wall), 2)
        per_scenario_max[scenario.label] = round(max(wall), 2)
        samples.extend(wall)
        cpu.extend(cpu_ms)

    # Follow the deep page's own `next` link: a cursor the API made, not one built here.
    deep = client.get(API_URL, {"cursor": deep_cursor}).json()
    following = _sql_ids(
        f"{team_where} AND (c.created_at, c.id) < (%s, %s)",
        [
            team.pk,
            *Contact.objects.filter(pk=deep["results"][-1]["id"])
            .values_list("created_at", "id")
            .get(),
        ],
        limit=50,
    )
    following_page = _timed(lambda: client.get(deep["next"]))
    got = [row["id"] for row in following_page.response.json()["results"]]
    _check(got == following, "next page")
    query_counts["deep page + 1 (next link)"] = following_page.queries
    # A search's own next link: the cursor must narrow every part of the search alike.
    search = next(s for s in scenarios if s.label == "search name")
    searched = client.get(API_URL, search.params).json()
    if searched["next"]:  # not at the smoke size
        last_seen = Contact.objects.get(pk=searched["results"][-1]["id"]).created_at
        search_following = _sql_ids(
            f"{team_where} AND {search.where} AND c.created_at < %s",
            [team.pk, *search.where_params, last_seen],
            limit=50,
        )
        search_next = _timed(lambda: client.get(searched["next"]))
        got = [row["id"] for row in search_next.response.json()["results"]]
        _check(got == search_following, "search name: next page")
        query_counts["search name + 1 (next link)"] = search_next.queries
    _check(len(set(query_counts.values())) == 1, f"query count varies: {query_counts}")

    notes = {
        "scenarios": per_scenario,
        "scenarios_max": per_scenario_max,
        "queries_per_request": query_counts,
        "constant_query_count": True,
        "rows_checked_against_sql": checked_rows,
        "team_rows": team_rows,
        "deep_page_offset": team_rows // 2,
        "samples": len(samples),
        "python_cpu_ms_p50": round(median(cpu), 2),
        "not_covered": "consent condition / segment: the contact list API has no such filter",
    }
    p50, p99 = median(samples), _percentile(samples, 0.99)
    return [
        Figure(
            "API contact list p50 (filters, cursor)",
            size,
            "ms",
            p50,
            API_P50_MS,
            False,
            samples,
            notes=notes,
        ),
        Figure(
            "API contact list p99 (filters, cursor)",
            size,
            "ms",
            p99,
            API_P99_MS,
            False,
            samples,
            notes=notes,
        ),
        _naive_offset_figure(size, user, team, team_rows),
    ]


def _naive_offset_figure(size: int, user: Any, team: Team, team_rows: int) -> Figure:
    """The same view with LimitOffsetPagination at half depth: COUNT(*) plus an OFFSET scan."""
    view = ContactViewSet.as_view({"get": "list"}, pagination_class=LimitOffsetPagination)
    offset = team_rows // 2
    factory = APIRequestFactory()

    def request() -> Any:
        http_request = factory.get(API_URL, {"limit": 50, "offset": offset}, HTTP_HOST=HOST)
        force_authenticate(http_request, user=user)
        return view(http_request)

    expected = _sql_ids("c.team_id = %s", [team.pk], limit=50, offset=offset)
    first = _timed(request)
    _check([row["id"] for row in first.response.data["results"]] == expected, "offset page")
    _check(first.response.data["count"] == team_rows, "offset count")
    timings, cpu = _repeat(request, NAIVE_RUNS)
    return Figure(
        "naive API contact list, offset paging",
        size,
        "ms",
        median(timings),
        API_P50_MS,
        False,
        timings,
        notes={
            "offset": offset,
            "queries_per_request": first.queries,
            "runs": NAIVE_RUNS,
            "python_cpu_ms_p50": round(median(cpu), 2),
        },
    )


def _admin_figure(size: int, runs: int, user: Any, team: Team) -> Figure:
    client = Client(HTTP_HOST=HOST)
    client.force_login(user)
    vip = Tag.objects.get(team=team, name=RARE_TAG)
    team_where = "c.team_id = %s"
    scenarios = [
        Scenario("unfiltered", {}),
        Scenario("language", {"language__exact": "en"}, "c.language = %s", ["en"]),
        Scenario("rare tag", {"tag": str(vip.pk)}, TAG_SQL, [RARE_TAG]),
        Scenario("search", {"q": "Schmidt"}, SEARCH_SQL, _search_params("Schmidt")),
    ]
    client.get(ADMIN_URL)  # content types and the like, which a live server has cached
    samples: list[float] = []
    cpu: list[float] = []
    per_scenario: dict[str, float] = {}
    query_counts: dict[str, int] = {}
    counts: dict[str, dict[str, int]] = {}
    for scenario in scenarios:
        where, params = f"{team_where} AND {scenario.where}", [team.pk, *scenario.where_params]
        first = _timed(lambda s=scenario: client.get(ADMIN_URL, s.params))
        _check(first.response.status_code == 200, scenario.label)
        changelist = first.response.context_data["cl"]
        page = [contact.pk for contact in changelist.result_list]
        _check(page == _sql_ids(where, params, limit=100), f"admin {scenario.label}")
        exact = _sql_count(where, params)
        shown = changelist.result_count
        if scenario.params:
            _check(shown == exact, (scenario.label, shown, exact))
        else:
            # Unfiltered, the admin shows PostgreSQL's estimate instead of counting every row.
            _check(abs(shown - exact) <= max(50, exact // 10), (shown, exact))
        counts[scenario.label] = {"shown": shown, "exact": exact}
        query_counts[scenario.label] = first.queries
        _check(first.queries <= ADMIN_MAX_QUERIES, (scenario.label, first.queries))
        wall, cpu_ms = _repeat(lambda s=scenario: client.get(ADMIN_URL, s.params), runs * REPEATS)
        per_scenario[scenario.label] = round(median(wall), 2)
        samples.extend(wall)
        cpu.extend(cpu_ms)
    return Figure(
        "admin contact changelist p50",
        size,
        "ms",
        median(samples),
        ADMIN_P50_MS,
        False,
        samples,
        notes={
            "scenarios": per_scenario,
            "queries_per_request": query_counts,
            "max_queries": ADMIN_MAX_QUERIES,
            "result_counts": counts,
            "p99_ms": round(_percentile(samples, 0.99), 2),
            "python_cpu_ms_p50": round(median(cpu), 2),
        },
    )


def run(size: int, runs: int) -> list[Figure]:
    team_a, _team_b = _populate(size)
    user = _bench_user(team_a)
    # Time requests as a server worker serves them: config.wsgi freezes what startup loaded,
    # so full collections walk only what requests leave behind, not this process's setup.
    gc.collect()
    gc.freeze()
    return [*_api_figures(size, runs, user, team_a), _admin_figure(size, runs, user, team_a)]
