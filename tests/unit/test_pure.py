"""The pure functions, without a database or an app: statistics, buckets, windows, payload checks,
redaction, the cache's bound and keys, CSV cells, the deadline runner, schema validation."""

from __future__ import annotations

import random
import re
import threading
import time
import types
import typing as t
import weakref
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from flowpilot_analytics import activities, escalations, periods, replica, storage
from flowpilot_analytics.cache import ResponseCache, _MemoryBackend
from flowpilot_analytics.deadline import DeadlineExceeded, DeadlineRunner
from flowpilot_analytics.ratelimit import RouteLimits
from flowpilot_analytics.routes import neutralise
from flowpilot_analytics.schemas import (
    EscalationStats,
    HandoffsArgs,
    PsaMetricsArgs,
    TargetAttainment,
    flat_columns,
    flat_values,
)
from flowpilot_analytics.timeutil import Backend, as_utc, naive_utc

EDGES = (60.0, 300.0, 900.0, 3600.0, 14400.0)
NOW = datetime(2026, 11, 15, 12, tzinfo=timezone.utc)

# -- the escalation metric -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_percentile_is_numpys_linear_interpolation(seed: int) -> None:
    rng = random.Random(seed)
    values = sorted(rng.uniform(0, 10_000) for _ in range(rng.randint(1, 200)))
    for q in (0.0, 0.5, 0.9, 0.95, 1.0):
        assert escalations.percentile(values, q) == pytest.approx(
            float(np.percentile(values, q * 100))
        )


def test_buckets_are_half_open_and_the_last_is_unbounded() -> None:
    assert escalations.bucket_bounds(EDGES) == [
        (0.0, 60.0),
        (60.0, 300.0),
        (300.0, 900.0),
        (900.0, 3600.0),
        (3600.0, 14400.0),
        (14400.0, None),
    ]
    assert [escalations.bucket_index(d, EDGES) for d in (0, 59.999, 60, 14399, 14400, 10**9)] == [
        0,
        0,
        1,
        4,
        5,
        5,
    ]


def test_fold_counts_no_action_and_statistics() -> None:
    result = escalations.fold([30.0, 90.0, 600.0], claimed=5, edges=EDGES)
    assert EscalationStats().dump(result) == {
        "n_handoffs_claimed": 5,
        "n_handoffs_with_action": 3,
        "avg_seconds": 240.0,
        "median_seconds": 90.0,
        "p90_seconds": pytest.approx(498.0),
        "p95_seconds": pytest.approx(549.0),
        "target": None,
    }
    assert escalations.distribution(result, EDGES).no_action == 2
    assert [b.count for b in escalations.distribution(result, EDGES).buckets] == [1, 1, 1, 0, 0, 0]
    assert EscalationStats().dump(escalations.empty(EDGES))["median_seconds"] is None
    assert escalations.fold([], claimed=2, edges=EDGES).no_action == 2


def test_deltas_floor_at_zero_and_read_sqlite_text() -> None:
    assert (
        escalations.delta_seconds("2026-11-15 12:00:00.000000", "2026-11-15 12:01:30.500000")
        == 90.5
    )
    assert escalations.delta_seconds(NOW, NOW - timedelta(seconds=5)) == 0.0
    assert escalations.delta_seconds(NOW, None) is None


def test_engineers_sort_by_id_with_nobody_last() -> None:
    assert sorted([10, None, 7, 100], key=escalations.engineer_order) == [7, 10, 100, None]


def test_fold_rows_groups_by_engineer() -> None:
    rows = [
        (NOW, NOW + timedelta(seconds=10), 7),
        (NOW, None, 7),
        (NOW, NOW + timedelta(seconds=30), 9),
    ]
    groups = escalations.fold_rows(rows, EDGES, None)
    assert {k: (v.n_handoffs_claimed, v.n_handoffs_with_action) for k, v in groups.items()} == {
        7: (2, 1),
        9: (1, 1),
    }


# -- windows and time ------------------------------------------------------------------------------


def test_windows_are_closed_and_the_previous_one_touches_nothing() -> None:
    window = periods.window_for("7d", NOW)
    assert (window.start, window.end) == (NOW - timedelta(days=7), NOW)
    before = periods.previous_window(window)
    assert before.end == window.start - timedelta(microseconds=1)
    assert before.end - before.start == window.end - window.start
    custom = periods.Span(None, NOW - timedelta(days=2), NOW).window(NOW)
    assert custom.period == "custom" and custom.end == NOW


def test_timestamps_read_as_utc() -> None:
    assert as_utc("2026-11-15T14:00:00+02:00") == NOW
    assert as_utc("2026-11-15T12:00:00Z") == NOW
    assert as_utc(datetime(2026, 11, 15, 12)) == NOW
    assert naive_utc("2026-11-15 12:00:00.000000") == datetime(2026, 11, 15, 12)
    assert (
        Backend.for_dialect("postgresql").aggregates_in_sql
        and Backend.for_dialect("sqlite").timestamps_as_text
    )


# -- activities ------------------------------------------------------------------------------------

GOOD = {"account_id": 1, "activity_type": "time_entry_posted", "minutes": "15", "created_at": NOW}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"account_id": None}, "account_id"),
        ({"activity_type": "ticket_closed"}, "unknown activity type"),
        ({"minutes": float("nan")}, "finite"),
        ({"minutes": float("inf")}, "finite"),
        ({"minutes": -1}, "finite"),
        ({"minutes": True}, "number"),
        ({"created_at": None}, "created_at"),
    ],
)
def test_payloads_are_checked_as_the_hook_and_the_replay_check_them(
    change: dict[str, t.Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        activities.validate_payload({**GOOD, **change})


def test_payloads_are_normalised_and_legacy_keys_are_stable() -> None:
    row = activities.validate_payload(GOOD).row()
    assert row["minutes"] == 15.0 and set(row) == set(activities.PAYLOAD_FIELDS)
    assert (
        activities.legacy_key(row)
        == activities.legacy_key(dict(row))
        != activities.legacy_key({**row, "minutes": 1})
    )


def test_a_legacy_key_ignores_the_fields_added_after_keys() -> None:
    """A dead letter from 0.1 keeps the key an earlier replay derived, whatever fields came
    later (the value pinned is what 0.2.0.dev0 before user_id and billable derived)."""
    old = dict(GOOD)
    key = activities.legacy_key(old)
    assert key == activities.legacy_key({**old, "user_id": "7", "billable": True})
    assert key == "ceb003b3-56a4-567b-aff7-9198afbbb34c"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"billable": "yes"}, "billable must be true, false or null"),
        ({"billable": 1}, "billable must be true, false or null"),
        ({"user_id": 7}, "user_id must be text"),
    ],
)
def test_a_replayed_attribution_must_be_as_the_hook_writes_it(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        activities.validate_payload({**GOOD, **change})


def test_log_lines_describe_ids_only() -> None:
    text = activities.describe({**GOOD, "note": "secret text", "result": {"token": "t"}})
    assert "secret" not in text and "token" not in text and '"account_id": 1' in text


# -- storage: redaction and back-off ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "logged"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:pw@h/0", "redis://user:***@h/0"),
        ("redis://:Tr0ub4dor@xyz@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
        ("rediss://h:6380/0", "rediss://h:6380/0"),
        ("memory://", "memory://"),
    ],
)
def test_storage_uris_are_logged_without_passwords(uri: str, logged: str) -> None:
    assert storage.redact_uri(uri) == logged
    secret = urlsplit(uri).password
    if secret:  # a client's error that repeats the password is cleaned too
        assert secret not in storage.redact(f"Error connecting to {uri} with {secret}", uri)


@pytest.mark.parametrize(
    ("uri", "logged"),
    [
        ("redis://h:6379/0?password=Pw-S3cret", "redis://h:6379/0?password=***"),
        ("redis://h/0?db=1&PassWord=Pw-S3cret&ssl=true", "redis://h/0?db=1&PassWord=***&ssl=true"),
        ("rediss://Tok-S3cret@h:6380/0", "rediss://***@h:6380/0"),
        ("redis://:Pw-S3cret@h", "redis://:***@h"),
        (
            "redis+unix:///run/r.sock?password=Pw-S3cret&db=2",
            "redis+unix:///run/r.sock?password=***&db=2",
        ),
        (
            "redis+sentinel://u:Pw-S3cret@h1:1,h2:2/svc?sentinel_password=Pw-S3cret",
            "redis+sentinel://u:***@h1:1,h2:2/svc?sentinel_password=***",
        ),
        (
            "mongodb://h/?authSource=admin&access_key=Pw-S3cret",
            "mongodb://h/?authSource=***&access_key=***",
        ),
        ("x?token=Pw-S3cret&pwd=Pw-S3cret&pass=Pw-S3cret".replace("x", "memcached://h:1"), None),
        (
            "s3://h/b?X-Amz-Signature=Pw-S3cret&X-Amz-Credential=Pw-S3cret&secret=Pw-S3cret&api_key=Pw-S3cret",
            None,
        ),
        ("redis://:Pw-S3cret?x@h/0", "redis://:***@h/0"),  # a password holding an unencoded "?"
        ("redis://h/0?client_name=ops@example", "redis://h/0?client_name=ops@example"),
        ("redis://:Pw%2FS3cret@h/0", "redis://:***@h/0"),
        ("redis://:Pw-S3cret@[::1/0", "redis://:***@[::1/0"),  # does not even parse
    ],
)
def test_every_credential_a_uri_can_carry_is_redacted(uri: str, logged: str | None) -> None:
    """Userinfo (``user:password@``, a bare ``token@``) and credential-like query parameters, in a
    URI alone or in a client's error that quotes it, the password also decoded."""
    if logged is not None:
        assert storage.redact_uri(uri) == logged
    assert "S3cret" not in storage.redact_uri(uri)
    for secret in re.findall(
        r"[\w-]+/?S3cret", unquote(uri)
    ):  # as a client might print it, decoded
        error = f"Error connecting to {uri} ({unquote(uri)}): AUTH {secret} failed"
        assert "S3cret" not in storage.redact(error, uri) and "AUTH *** failed" in storage.redact(
            error, uri
        )


@pytest.mark.parametrize(
    ("uri", "logged"),
    [
        ("redis://default:hunter two@127.0.0.1:1/0", "redis://default:***@127.0.0.1:1/0"),
        ("redis://hunter two@127.0.0.1:1/0", "redis://***@127.0.0.1:1/0"),
        ("redis://:hunter two@x@127.0.0.1:1/0?db=1", "redis://:***@127.0.0.1:1/0?db=1"),
        ("redis://h/0?client_name=ops two@example", "redis://h/0?client_name=ops two@example"),
    ],
)
def test_a_password_holding_a_space_is_redacted(uri: str, logged: str) -> None:
    """``_URI`` stops at white space; a text starting with a URI takes its userinfo up to the last
    ``@`` before the first ``/``, ``?`` or ``#``."""
    assert storage.redact_uri(uri) == logged
    secret = urlsplit(uri).password or urlsplit(uri).username
    if secret and "hunter" in secret:  # a client's error that repeats it is cleaned too
        error = f"Error connecting to {uri}: AUTH {secret} failed"
        assert "hunter" not in storage.redact(error, uri)


def test_backoff_says_down_until_the_interval_passes() -> None:
    backoff = storage.Backoff(interval=3600)
    assert not backoff.down
    assert backoff.failed() is True and backoff.failed() is False and backoff.down
    assert backoff.worked() is True and not backoff.down and backoff.worked() is False
    assert storage.is_redis("rediss://h") and not storage.is_redis("memory://")


# -- the in-process cache --------------------------------------------------------------------------


def test_the_memory_cache_stays_within_its_bytes_and_frees_expired_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = _MemoryBackend(max_bytes=20_000)
    for i in range(200):
        backend.set(f"key-{i}", b"x" * 500, ttl=60)
    assert 0 < backend.bytes <= 20_000 and len(backend) < 200
    assert (
        backend.get("key-199") == b"x" * 500 and backend.get("key-0") is None
    )  # the oldest went first
    kept = len(backend)
    backend.set("huge", b"x" * 50_000, ttl=60)  # could never fit: nothing is evicted for it
    assert len(backend) == kept and backend.get("huge") is None
    later = time.monotonic() + 61
    monkeypatch.setattr("flowpilot_analytics.cache.time.monotonic", lambda: later)
    backend.set("fresh", b"y", ttl=60)
    assert len(backend) == 1 and backend.bytes < 1000


def test_cache_keys_separate_accounts_whatever_their_ids() -> None:
    cache = ResponseCache(60, "memory://", namespace="ns")
    keys = {
        cache.key("escalations", account, {"period": "7d"})
        for account in ("a:1", "a", "a%3A1", "a/1")
    }
    assert len(keys) == 4


def test_rate_limit_keys_never_collide() -> None:
    ids = RouteLimits._identifiers
    assert ids("psa_metrics", "a/b", "c") != ids("psa_metrics", "a", "b/c")


# -- CSV cells -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_are_neutralised(cell: str) -> None:
    assert neutralise(cell) == "'" + cell


def test_plain_cells_and_numbers_stay() -> None:
    assert [neutralise(c) for c in ("abc", -5, 3.5, "", None)] == ["abc", -5, 3.5, "", None]


# -- the deadline runner ---------------------------------------------------------------------------


def test_the_runner_returns_results_and_raises_errors() -> None:
    runner = DeadlineRunner()
    assert runner.run(lambda: 42, timeout=5) == 42
    with pytest.raises(ZeroDivisionError):
        runner.run(lambda: 1 / 0, timeout=5)


def test_a_call_past_the_deadline_is_left_running_and_a_queued_one_is_cancelled() -> None:
    runner = DeadlineRunner(max_threads=1, name="fpa-unit-deadline")
    release = threading.Event()
    with pytest.raises(DeadlineExceeded) as first:
        runner.run(lambda: release.wait(30), timeout=0.05)
    ran: list[int] = []
    with pytest.raises(DeadlineExceeded) as second:
        runner.run(lambda: ran.append(1), timeout=0.05)  # the only thread is busy
    assert second.value.future.cancelled()
    release.set()
    assert first.value.future.result(timeout=30) is True  # it finished later, on its thread
    assert runner.run(lambda: "next", timeout=5) == "next"
    assert ran == []  # the cancelled call never ran


def test_idle_helper_threads_end_and_hold_nothing() -> None:
    runner = DeadlineRunner(name="fpa-unit-idle")
    runner.idle_seconds = 0.05

    class Job:
        def __call__(self) -> str:
            return "done"

    job = Job()
    alive = weakref.ref(job)
    assert runner.run(job, timeout=5) == "done"
    del job
    for thread in [th for th in threading.enumerate() if th.name.startswith("fpa-unit-idle")]:
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert alive() is None


# -- query schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", ["9" * 4400, "6", "-1", "1.0", "٣", "no-action"])
def test_bucket_values_outside_the_buckets_are_refused(bucket: str) -> None:
    errors = HandoffsArgs(bucket_count=6).validate({"bucket": bucket})
    assert "bucket" in errors


def test_bucket_and_limit_values_load() -> None:
    schema = HandoffsArgs(bucket_count=6)
    assert schema.load({"bucket": "5"}).bucket == 5
    assert schema.load({"bucket": "no_action"}).bucket == "no_action"
    assert schema.load({}).limit == 50


def test_cursors_are_decoded_by_the_apps_codec() -> None:
    def decode(text: str) -> tuple[str, str]:
        if text != "good":
            raise ValueError("Not a cursor this API returned.")
        return ("k", "1")

    schema = HandoffsArgs(decode_cursor=decode)
    assert schema.load({"cursor": "good"}).cursor == ("k", "1")
    assert "cursor" in schema.validate({"cursor": "edited"})
    assert "cursor" in schema.validate({"cursor": "x" * 2000})


def test_zones_and_ranges() -> None:
    schema = PsaMetricsArgs()
    assert schema.load({"tz": "Asia/Kolkata"}).tz == "Asia/Kolkata"
    assert "tz" in schema.validate({"tz": "localtime"})
    assert "until" in schema.validate(
        {"since": "2026-01-01T00:00:00", "until": "2027-01-03T00:00:00"}
    )
    assert schema.validate({"since": "2026-01-01T00:00:00", "until": "2027-01-02T00:00:00"}) == {}
    assert "period" in schema.validate(
        {"period": "7d", "since": "2026-01-01", "until": "2026-01-02"}
    )


def test_the_required_replica_position_only_moves_forward() -> None:
    backend = _MemoryBackend(max_bytes=10_000)
    backend.bump("gen", 0x3000200)
    backend.bump("gen", 0x3000100)  # an older announcement arriving late
    assert backend.position("gen") == 0x3000200


class _Standby:
    """A connection whose server has replayed up to ``position`` (``None``: a primary)."""

    def __init__(self, position: str | None, dialect: str = "postgresql") -> None:
        self.dialect = types.SimpleNamespace(name=dialect)
        self.position = position

    def exec_driver_sql(self, statement: str) -> t.Any:
        assert "pg_last_wal_replay_lsn" in statement
        return types.SimpleNamespace(scalar=lambda: self.position)


def test_a_report_is_fresh_only_if_its_oldest_read_saw_the_required_position() -> None:
    assert replica.wal_position("16/B374D848") == (0x16 << 32) + 0xB374D848
    reads = replica.Reads()
    assert reads.caught_up(None) and reads.caught_up(
        10**12
    )  # no read on a standby: nothing to wait for
    for position in (
        "3/200",
        "3/100",
        None,
        "3/300",
    ):  # the oldest standby position bounds the report
        reads.observe(t.cast(t.Any, _Standby(position)))
    assert reads.oldest == replica.wal_position("3/100")
    assert reads.caught_up(replica.wal_position("3/100")) and not reads.caught_up(
        replica.wal_position("3/101")
    )
    assert reads.caught_up(None)  # nothing recorded since the cache was filled
    on_sqlite = replica.Reads()
    on_sqlite.observe(t.cast(t.Any, _Standby("9/0", dialect="sqlite")))
    assert on_sqlite.oldest is None


def test_a_target_judges_claims_to_the_microsecond() -> None:
    target = escalations.Target.at(300.0000004, NOW)
    exactly = (NOW - timedelta(seconds=300)).replace(tzinfo=None)
    assert target.judge(exactly, None) == "pending"  # younger than 300.0000004 s
    whole = escalations.Target.at(300, NOW)
    assert whole.judge(exactly, None) == "breached" and whole.judge(exactly, 300.0) == "within"
    assert whole.judge(exactly + timedelta(microseconds=1), None) == "pending"


def test_overdue_is_the_open_part_of_breached() -> None:
    target = escalations.Target.at(300, NOW)
    claims = [
        (NOW - timedelta(seconds=100), None),  # pending
        (NOW - timedelta(seconds=400), None),  # breached, overdue
        (NOW - timedelta(seconds=300), None),  # breached (exactly the target old), overdue
        (NOW - timedelta(seconds=5000), 200.0),  # within
        (NOW - timedelta(seconds=5000), 301.0),  # breached, acted on
    ]
    handoffs = [(claimed.replace(tzinfo=None), delta) for claimed, delta in claims]
    result = escalations.fold_handoffs(handoffs, EDGES, target).target
    assert result is not None
    dumped = TargetAttainment().dump(result)
    assert {k: v for k, v in dumped.items() if k != "attainment_interval"} == {
        "seconds": 300.0,
        "n_within": 1,
        "n_breached": 3,
        "n_pending": 1,
        "n_overdue": 2,
        "attainment": 0.25,
    }
    assert dumped["attainment_interval"] == pytest.approx(list(escalations.wilson_interval(1, 4)))
    assert TargetAttainment().dump(escalations.empty(EDGES, target).target) == {
        "seconds": 300.0,
        "n_within": 0,
        "n_breached": 0,
        "n_pending": 0,
        "n_overdue": 0,
        "attainment": None,
        "attainment_interval": None,
    }


def test_a_fixed_size_list_flattens_into_named_columns() -> None:
    columns = flat_columns(TargetAttainment())
    assert columns[-2:] == ["attainment_interval_low", "attainment_interval_high"]
    target = escalations.TargetResult(60.0, 8, 2, 0, 1)
    values = flat_values(TargetAttainment(), TargetAttainment().dump(target))
    assert values[-2:] == pytest.approx(list(escalations.wilson_interval(8, 10)))
    nothing = escalations.TargetResult(60.0, 0, 0, 3, 0)
    assert flat_values(TargetAttainment(), TargetAttainment().dump(nothing))[-2:] == [None, None]


def test_wilson_interval_known_values() -> None:
    # 8 of 10 at 95 %: the textbook (0.4902, 0.9433)
    low, high = escalations.wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.490162, abs=1e-6), pytest.approx(0.943318, abs=1e-6))
    # the roots of (p_hat - p)^2 = z^2 p (1 - p) / n, for every count of a few sizes
    z = 1.959963984540054
    for n in (1, 2, 7, 30, 199):
        for k in range(n + 1):
            p_hat, z2 = k / n, z * z
            roots = sorted(np.real(np.roots([1 + z2 / n, -(2 * p_hat + z2 / n), p_hat**2])))
            assert escalations.wilson_interval(k, n) == (
                pytest.approx(max(0.0, roots[0]), abs=1e-9),
                pytest.approx(min(1.0, roots[1]), abs=1e-9),
            ), (k, n)
    assert escalations.wilson_interval(0, 5)[0] == 0.0
    assert escalations.wilson_interval(5, 5)[1] == 1.0
    assert escalations.wilson_interval(0, 1) == pytest.approx((0.0, z * z / (1 + z * z)))
    # z = 0 shrinks to the point estimate; a wider z widens the interval
    assert escalations.wilson_interval(3, 4, z=0.0) == (0.75, 0.75)
    wide = escalations.wilson_interval(8, 10, z=2.575829)
    assert wide[0] < low and wide[1] > high
    for bad in ((1, 0), (-1, 3), (4, 3)):
        with pytest.raises(ValueError):
            escalations.wilson_interval(*bad)


@pytest.mark.parametrize(
    ("p", "n"),
    [(0.1, 50), (0.1, 200), (0.5, 5), (0.5, 30), (0.8, 20), (0.9, 100), (0.95, 40), (0.95, 200)],
)
def test_wilson_interval_covers_the_true_share_about_95_percent_of_the_time(
    p: float, n: int
) -> None:
    rng = np.random.default_rng(int(p * 1000) * 1000 + n)
    trials = 2000
    successes = rng.binomial(n, p, size=trials)
    covered = 0
    for k in successes:
        low, high = escalations.wilson_interval(int(k), n)
        assert 0.0 <= low <= k / n <= high <= 1.0
        covered += low <= p <= high
    coverage = covered / trials
    print(f"wilson coverage p={p} n={n}: {coverage:.4f}")
    assert 0.90 <= coverage <= 0.99, (p, n, coverage)
