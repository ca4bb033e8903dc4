"""Response cache: TTL, ETag / 304, Cache-Control, rate limit still counted, hook invalidation,
Redis."""

from __future__ import annotations

import logging
import pathlib
import shutil
import subprocess
import time
import typing as t
import uuid

import pytest
import redis
from flask import Flask

from flowpilot_analytics import registration
from flowpilot_analytics.cache import PREFIX

from . import factories as f
from . import host
from .fake_psa import FakePsaService
from .helpers import ESCALATIONS, HANDOFFS, PSA, as_user, unavailable
from .host import db
from .services import free_port

CACHED = {"FLOWPILOT_ANALYTICS_CACHE_TTL": 60}
CACHE_URI = "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI"
LIMIT_URI = "FLOWPILOT_ANALYTICS_RATELIMIT_STORAGE_URI"


@pytest.mark.parametrize("app_config", [CACHED])
def test_repeated_call_is_served_from_cache_until_ttl(client: t.Any) -> None:
    f.escalation(1, f.at(days=1), 30)
    f.commit()
    first = client.get(ESCALATIONS, headers=as_user(1))
    assert (
        first.headers["Cache-Control"] == "private, no-cache"
    )  # the browser revalidates; the server caches
    f.escalation(1, f.at(days=1), 90)
    f.commit()
    second = client.get(ESCALATIONS, headers=as_user(1))
    assert second.get_data() == first.get_data()
    assert second.get_json()["n_handoffs_claimed"] == 1
    # other parameters and other accounts are other entries
    assert (
        client.get(ESCALATIONS + "?period=7d", headers=as_user(1)).get_json()["n_handoffs_claimed"]
        == 2
    )
    assert client.get(ESCALATIONS, headers=as_user(2)).get_json()["n_handoffs_claimed"] == 0


@pytest.mark.parametrize("app_config", [CACHED])
def test_etag_and_if_none_match(client: t.Any) -> None:
    first = client.get(ESCALATIONS, headers=as_user(1))
    etag = first.headers["ETag"]
    assert etag.startswith('"') and len(etag) > 10
    again = client.get(ESCALATIONS, headers={**as_user(1), "If-None-Match": etag})
    assert again.status_code == 304
    assert again.get_data() == b""
    other = client.get(ESCALATIONS, headers={**as_user(1), "If-None-Match": '"stale"'})
    assert other.status_code == 200 and other.headers["ETag"] == etag


@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_CACHE_TTL": 60}])
def test_browsers_must_revalidate_and_answers_vary_on_credentials(client: t.Any) -> None:
    f.escalation(1, f.at(days=1), 30)
    f.commit()
    mine = client.get(ESCALATIONS, headers=as_user(1))
    assert mine.headers["Cache-Control"] == "private, no-cache"
    assert {"Authorization", "Cookie"} <= {v.strip() for v in mine.headers["Vary"].split(",")}
    theirs = client.get(ESCALATIONS, headers={**as_user(2), "If-None-Match": mine.headers["ETag"]})
    assert theirs.status_code == 200 and theirs.get_json()["n_handoffs_claimed"] == 0
    assert (
        client.get(
            ESCALATIONS, headers={**as_user(1), "If-None-Match": mine.headers["ETag"]}
        ).status_code
        == 304
    )


@pytest.mark.parametrize(
    "app_config", [{"FLOWPILOT_ANALYTICS_VARY_HEADERS": ["X-Account", "X-User"]}]
)
def test_vary_names_the_headers_the_host_says_carry_credentials(client: t.Any) -> None:
    vary = {
        v.strip() for v in client.get(ESCALATIONS, headers=as_user(1)).headers["Vary"].split(",")
    }
    assert {"X-Account", "X-User"} <= vary and "Cookie" not in vary


@pytest.mark.parametrize("app_config", [CACHED])
def test_cached_calls_still_count_against_the_limit(client: t.Any) -> None:
    codes = [client.get(PSA, headers=as_user(1, "admin")).status_code for _ in range(16)]
    assert codes == [200] * 15 + [429]


@pytest.mark.parametrize("app_config", [CACHED])
def test_a_recorded_activity_invalidates_the_accounts_psa_entry(app: t.Any, client: t.Any) -> None:
    psa = app.extensions["test_analytics"].wrap_psa_service(FakePsaService())
    sess = f.session(1, f.at(days=1), ticket="T")
    other = f.session(2, f.at(days=1), ticket="T")
    f.commit()
    mine = client.get(PSA, headers=as_user(1, "admin")).get_json()
    theirs = client.get(PSA, headers=as_user(2, "admin")).get_data()
    psa.push_time_entry(sess, 30)
    f.commit()
    assert (
        client.get(PSA, headers=as_user(1, "admin")).get_json()["time_entries"]["count"]
        == mine["time_entries"]["count"] + 1
    )
    assert client.get(PSA, headers=as_user(2, "admin")).get_data() == theirs  # untouched
    assert other.id != sess.id


def test_ttl_zero_turns_caching_off(client: t.Any) -> None:
    assert (
        client.get(ESCALATIONS, headers=as_user(1)).headers["Cache-Control"] == "private, no-cache"
    )
    f.escalation(1, f.at(days=1), 30)
    f.commit()
    assert client.get(ESCALATIONS, headers=as_user(1)).get_json()["n_handoffs_claimed"] == 1


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "FLOWPILOT_ANALYTICS_CACHE_TTL": 60,
            "FLOWPILOT_ANALYTICS_LIMITS": {"escalation_handoffs": "10000 per minute"},
        }
    ],
)
def test_the_in_process_cache_stays_within_its_byte_bound(
    app: Flask, client: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(60):
        f.escalation(1, f.at(minutes=10 + i), 30 + i)
    f.commit()
    cache = registration(app).cache
    cache.max_bytes = (
        64 * 1024
    )  # 32 MiB in production; the bound is made before the first answer is stored
    for limit in range(1, 201):  # 200 distinct answers of up to ~12 KB each
        assert client.get(f"{HANDOFFS}?limit={limit}", headers=as_user(1)).status_code == 200
    backend = cache.backend
    print(
        f"\n200 distinct drill-down pages: {len(backend)} entries, {backend.bytes} bytes kept "
        "(bound 65536)"
    )
    assert 0 < backend.bytes <= 64 * 1024
    assert len(backend) < 200
    # expired entries are freed by the next store, not only when read again
    later = time.monotonic() + 61
    monkeypatch.setattr("flowpilot_analytics.cache.time.monotonic", lambda: later)
    assert client.get(f"{HANDOFFS}?limit=1&period=7d", headers=as_user(1)).status_code == 200
    assert len(backend) == 1


def test_workers_share_the_cache_through_redis(make_app: t.Any, redis_url: str) -> None:
    config = {
        "FLOWPILOT_ANALYTICS_CACHE_TTL": 60,
        "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI": redis_url,
    }
    first, second = make_app(**config), make_app(**config)
    account = uuid.uuid4().int % 10**9  # no earlier run has cached answers for it
    with first.app_context():
        db.create_all(bind_key=None)
        f.escalation(account, f.at(days=1), 30)
        f.commit()
        body = first.test_client().get(ESCALATIONS, headers=as_user(account)).get_data()
        f.escalation(account, f.at(days=1), 90)
        f.commit()
    assert second.test_client().get(ESCALATIONS, headers=as_user(account)).get_data() == body
    client = redis.Redis.from_url(redis_url)
    keys = client.keys(f"flowpilot_analytics:cache:v4:*:{account}*")
    assert keys
    client.delete(*keys)
    client.close()


def test_two_apps_on_one_redis_never_share_cached_answers(
    make_app: t.Any, tmp_path: t.Any, redis_url: str
) -> None:
    config = {
        "FLOWPILOT_ANALYTICS_CACHE_TTL": 60,
        "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI": redis_url,
    }
    account = uuid.uuid4().int % 10**9
    full = make_app(host.create_app(f"sqlite:///{tmp_path / 'a.db'}", **config))
    empty = make_app(host.create_app(f"sqlite:///{tmp_path / 'b.db'}", **config))
    for app in (full, empty):
        with app.app_context():
            db.create_all(bind_key=None)
    with full.app_context():
        f.escalation(account, f.at(days=1), 60)
        f.commit()
        assert (
            full.test_client()
            .get(ESCALATIONS, headers=as_user(account))
            .get_json()["n_handoffs_claimed"]
            == 1
        )
        db.session.remove()
    assert (
        empty.test_client()
        .get(ESCALATIONS, headers=as_user(account))
        .get_json()["n_handoffs_claimed"]
        == 0
    )


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "FLOWPILOT_ANALYTICS_CACHE_TTL": 60,
            "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI": "redis://127.0.0.1:1/0",
        }
    ],
)
def test_unreachable_cache_answers_uncached(
    client: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flowpilot_analytics"):
        response = client.get(ESCALATIONS, headers=as_user(1))
    assert response.status_code == 200
    assert any("cache unavailable" in r.getMessage() for r in caplog.records)


# -- Redis Sentinel and Redis Cluster, for real ----------------------------------------------------

PASSWORD = "pw-7d1e"


class RedisProcesses:
    """Private ``redis-server`` processes (servers, a sentinel, cluster nodes) in one folder,
    stopped after."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, sentinel: str | None = None) -> int:
        """Start one on a free port (``sentinel``: that configuration, in sentinel mode); its port
        once it answers."""
        port = free_port()
        command = (
            ["redis-server", sentinel, "--sentinel"]
            if sentinel
            else ["redis-server", "--save", "", "--dir", str(self.root)]
        )
        command += ["--port", str(port), "--bind", "127.0.0.1", "--requirepass", PASSWORD, *args]
        with open(self.root / f"{port}.log", "wb") as log:
            self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        self.wait(lambda: self.client(port).ping(), f"redis-server on {port}")
        return port

    @staticmethod
    def client(port: int) -> redis.Redis:
        return redis.Redis(port=port, password=PASSWORD, socket_timeout=2)

    def wait(self, ready: t.Callable[[], t.Any], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                logs = {
                    p.name: p.read_text(errors="replace")[-1500:] for p in self.root.glob("*.log")
                }
                raise AssertionError(f"{what} not ready after {timeout} s: {logs}")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=10)


@pytest.fixture
def redis_processes(tmp_path: pathlib.Path) -> t.Iterator[RedisProcesses]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server", FileNotFoundError("redis-server"))
    processes = RedisProcesses(tmp_path)
    try:
        yield processes
    finally:
        processes.stop()


def _cache_keys(ports: t.Iterable[int], account: int) -> list[bytes]:
    return [
        key for port in ports for key in RedisProcesses.client(port).keys(f"{PREFIX}:*:{account}:*")
    ]


def _shared_storage_serves_two_workers(first: Flask, second: Flask, account: int) -> None:
    """One cache and one limit for both: an answer cached by one is served by the other, and 16
    calls split across them get exactly one 429 (15 per minute)."""
    f.escalation(account, f.at(days=1), 30)
    f.commit()
    body = first.test_client().get(ESCALATIONS, headers=as_user(account)).get_data()
    f.escalation(account, f.at(days=1), 90)
    f.commit()
    assert second.test_client().get(ESCALATIONS, headers=as_user(account)).get_data() == body
    codes = [
        worker.test_client().get(PSA, headers=as_user(account, "admin")).status_code
        for worker in [first, second] * 8
    ]
    assert sorted(codes) == [200] * 15 + [429], codes


def test_redis_sentinel_shares_the_cache_and_the_limit_and_follows_a_failover(
    app: Flask, make_app: t.Any, redis_processes: RedisProcesses
) -> None:
    master = redis_processes.start("--masterauth", PASSWORD)
    replica = redis_processes.start(
        "--masterauth", PASSWORD, "--replicaof", "127.0.0.1", str(master)
    )
    config = redis_processes.root / "sentinel.conf"
    config.write_text(
        f"sentinel monitor fpa 127.0.0.1 {master} 1\nsentinel auth-pass fpa {PASSWORD}\n"
        "sentinel down-after-milliseconds fpa 2000\nsentinel failover-timeout fpa 10000\n"
    )
    sentinel = redis_processes.start(sentinel=str(config))
    ask = RedisProcesses.client(sentinel)
    redis_processes.wait(
        lambda: ask.execute_command("SENTINEL", "REPLICAS", "fpa"),
        "the sentinel's view of the replica",
    )
    uri = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinel}/fpa"
    settings = {CACHE_URI: uri, LIMIT_URI: uri, "FLOWPILOT_ANALYTICS_CACHE_TTL": 60}
    first, second = make_app(**settings), make_app(**settings)
    _shared_storage_serves_two_workers(first, second, account=41)
    assert _cache_keys([master], 41) and not _cache_keys([master], 42)

    # refused (NOGOODSLAVE) until the sentinel has seen the replica in sync: asked again until it
    # starts
    redis_processes.wait(
        lambda: ask.execute_command("SENTINEL", "FAILOVER", "fpa"), "a failover to start"
    )
    redis_processes.wait(
        lambda: (
            int(ask.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "fpa")[1]) == replica
            and RedisProcesses.client(replica).info("replication")["role"] == "master"
            and RedisProcesses.client(master).info("replication")["role"] == "slave"
        ),
        "the failover",
    )
    registration(first).cache.backoff.interval = 0  # try again at once after a failure
    for _ in range(
        5
    ):  # a connection to the old master may fail once; the sentinel then names the new one
        assert first.test_client().get(ESCALATIONS, headers=as_user(42)).status_code == 200
        if _cache_keys([replica], 42):
            break
    assert _cache_keys([replica], 42), "no cache entry written to the new master"


def test_redis_cluster_shares_the_cache_and_the_limit(
    app: Flask, make_app: t.Any, redis_processes: RedisProcesses
) -> None:
    nodes = [
        redis_processes.start(
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(free_port()),
            "--masterauth",
            PASSWORD,
            "--cluster-config-file",
            f"nodes-{i}.conf",
        )
        for i in range(3)
    ]
    subprocess.run(
        [
            "redis-cli",
            "-a",
            PASSWORD,
            "--no-auth-warning",
            "--cluster",
            "create",
            *(f"127.0.0.1:{port}" for port in nodes),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=60,
    )
    for port in nodes:
        redis_processes.wait(
            lambda port=port: (
                b"cluster_state:ok"
                in RedisProcesses.client(port).execute_command("CLUSTER", "INFO")
            ),
            f"cluster node {port}",
        )
    uri = f"redis+cluster://:{PASSWORD}@127.0.0.1:{nodes[0]},127.0.0.1:{nodes[1]}"
    settings = {CACHE_URI: uri, LIMIT_URI: uri, "FLOWPILOT_ANALYTICS_CACHE_TTL": 60}
    _shared_storage_serves_two_workers(make_app(**settings), make_app(**settings), account=43)
    assert _cache_keys(nodes, 43)
