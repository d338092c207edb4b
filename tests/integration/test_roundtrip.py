"""Values survive producer -> cworker -> result backend -> AsyncResult.get()
exactly, with task protocol v1 and v2; failures arrive as the right exception
types; the stored meta has the right shape, TTL and (extended) fields."""

import datetime
import json
import random
import time

import pytest

from conftest import (AmqpBroker, CWorker, RedisServer, _default_args, CWORKER_EXE, clean_env, close_app,
                      make_app, meta, need_cworker, proc_ppid, queue_len, unacked_count,
                      wait_for)


def deep(n):
    v = "bottom"
    for i in range(n):
        v = [v] if i % 2 else {"k": v}
    return v


ONE_MB = "x" * (1 << 20)
ONE_MB_UNICODE = ("é😀" * (1 << 17))       # ~1.1 MB in UTF-8, astral chars throughout

VALUES = {
    "none": None, "true": True, "false": False,
    "zero": 0, "minus_one": -1, "int32": 2**31, "int53": 2**53 + 1,
    "int63": 2**63 - 1, "min_int64": -2**63,
    "uint64": 2**64 - 1, "int70": 2**70, "neg_int100": -2**100, "int100": 2**100,
    "float_0.1": 0.1, "float_1e-300": 1e-300, "float_max": 1.7976931348623157e308,
    "float_denormal": 5e-324, "float_pi": 3.141592653589793, "float_neg": -2.5e-7,
    "float_big_integral": 1e22,
    "empty_str": "", "ascii": "hello", "latin1": "héllo wörld",
    "cjk": "日本語のテキスト", "astral": "𝄞 music 😀 emoji 🇫🇷 flag",
    "escapes": "quote\" backslash\\ slash/ \n\t\r\b\f", "line_seps": "\u2028\u2029",
    "controls": "\x01\x1f\x7f", "lone_surrogate_free": "\U0010ffff",
    "empty_list": [], "empty_dict": {},
    "nested_list": [1, [2, [3, [4, []]]]],
    "nested_dict": {"a": {"b": {"c": [None, True, 1.25, "x", {"d": -0.5}]}}},
    "unicode_keys": {"ключ": "значение", "𝄞": ["😀"], "": "empty key"},
    "deep_100": deep(100),
    "dict_1000_keys": {f"k{i}": i for i in range(1000)},
    "list_10000_ints": list(range(-5000, 5000)),
    "mixed_list": [1, "two", 3.0, None, False, {"six": [7]}, 2**70],
}
# NUL inside a string is valid JSON ("\u0000") and valid Python.
VALUES["nul_in_string"] = "a\x00b"
BIG = {"one_mb": ONE_MB, "one_mb_unicode": ONE_MB_UNICODE}


# --- one redis + one cworker (-c 2, prefork) for the whole module ---------------

@pytest.fixture(scope="module", params=["redis", "amqp"])
def env(request, tmp_path_factory):
    """One broker + one cworker (-c 2) per module and broker: redis-server, or a
    vhost of the session's rabbitmq-server with results in a redis-server."""
    need_cworker()
    d = tmp_path_factory.mktemp("roundtrip")
    results = RedisServer(str(d / "redis"))
    srv = results if request.param == "redis" else \
        AmqpBroker(request.getfixturevalue("rabbit_session"), results)
    w = CWorker("cworker-roundtrip", [CWORKER_EXE] + _default_args(["-c", "2"], srv, True),
                str(d / "cworker.log"), env=clean_env())
    apps = {}
    try:
        w.ready()
        apps = {p: make_app(srv.url(), srv.result_url(), protocol=p) for p in (1, 2)}
        yield srv, w, apps
    finally:
        for a in apps.values():
            close_app(a)
        w.stop()
        results.stop()


@pytest.fixture(params=[2, 1], ids=["proto2", "proto1"])
def proto(request, env):
    srv, w, apps = env
    return apps[request.param]


@pytest.mark.parametrize("key", sorted(VALUES))
def test_echo_value(proto, key):
    v = VALUES[key]
    got = proto.send_task("cworker.echo", args=[v]).get(timeout=30)
    assert got == v and type(got) is type(v), f"{key}: sent {v!r:.200}, got {got!r:.200}"


@pytest.mark.parametrize("key", sorted(BIG))
def test_echo_one_megabyte(proto, key):
    v = BIG[key]
    got = proto.send_task("cworker.echo", args=[v]).get(timeout=60)
    assert got == v, f"{key}: len sent {len(v)}, got {len(got) if isinstance(got, str) else got!r:.100}"


def test_echo_kwargs_and_add_kwargs(proto):
    assert proto.send_task("cworker.echo", kwargs={"value": {"k": [1]}}).get(timeout=30) == {"k": [1]}
    assert proto.send_task("cworker.add", kwargs={"a": 2, "b": 40}).get(timeout=30) == 42
    assert proto.send_task("cworker.add", args=[2], kwargs={"b": 5}).get(timeout=30) == 7


@pytest.mark.parametrize("a,b,expected", [
    (2, 3, 5), (-7, 7, 0), (2**40, 2**40, 2**41), (1.5, 2.25, 3.75), (1, 0.5, 1.5),
    ("ab", "cd", "abcd"), ([1], [2, 3], [1, 2, 3]),
])
def test_add(proto, a, b, expected):
    got = proto.send_task("cworker.add", args=[a, b]).get(timeout=30)
    assert got == expected and type(got) is type(expected), got


def test_noop_returns_none(proto):
    assert proto.send_task("cworker.noop").get(timeout=30) is None


def _bulk_plan(seed):
    rnd = random.Random(seed)
    keys = sorted(VALUES)
    plan = []
    for i in range(1000):
        if i in (100, 500, 900):
            plan.append(("cworker.echo", [BIG["one_mb_unicode" if i == 500 else "one_mb"]], None))
        elif i % 3 == 0:
            a, b = rnd.randint(-10**12, 10**12), rnd.randint(-10**12, 10**12)
            plan.append(("cworker.add", [a, b], a + b))
        else:
            v = VALUES[keys[rnd.randrange(len(keys))]]
            plan.append(("cworker.echo", [v], None))
    return plan


@pytest.mark.slow
def test_bulk_1000_mixed_tasks(proto, env):
    srv = env[0]
    plan = _bulk_plan(proto.conf.task_protocol)
    results = [proto.send_task(name, args=args) for name, args, _ in plan]
    bad = []
    for (name, args, expected), r in zip(plan, results):
        want = args[0] if expected is None else expected
        try:
            got = r.get(timeout=120)
        except Exception as e:       # report every failure, not only the first
            bad.append(f"{name}{str(args)[:60]}: raised {type(e).__name__}: {str(e)[:100]}")
            continue
        if got != want or type(got) is not type(want):
            bad.append(f"{name}{str(args)[:60]}: got {got!r:.80}")
    assert not bad, f"{len(bad)} of 1000 tasks wrong, e.g.:\n" + "\n".join(bad[:15])
    wait_for(lambda: srv.drained(), 10, what="queue drained, nothing unacked")


# --- failures ------------------------------------------------------------------

def test_fail_value_error(proto):
    with pytest.raises(ValueError) as ei:
        proto.send_task("cworker.fail", args=["ValueError", "boom"]).get(timeout=30)
    assert ei.value.args == ("boom",)


def test_fail_key_error(proto):
    r = proto.send_task("cworker.fail", args=["KeyError", "missing"])
    with pytest.raises(KeyError) as ei:
        r.get(timeout=30)
    assert ei.value.args == ("missing",)
    assert r.state == "FAILURE"


@pytest.mark.parametrize("exc", ["TypeError", "RuntimeError", "ZeroDivisionError"])
def test_fail_other_builtins(proto, exc):
    import builtins
    with pytest.raises(getattr(builtins, exc)):
        proto.send_task("cworker.fail", args=[exc, "x"]).get(timeout=30)


def test_fail_custom_exception_name(proto, env):
    r = proto.send_task("cworker.fail", args=["DocumentTooLarge", "too big: 12 MB"])
    with pytest.raises(Exception) as ei:
        r.get(timeout=30)
    assert type(ei.value).__name__ == "DocumentTooLarge"
    assert "too big: 12 MB" in str(ei.value)
    m = meta(env[0].client(), r.id)
    assert m["status"] == "FAILURE"
    assert m["result"]["exc_type"] == "DocumentTooLarge"
    assert m["result"]["exc_message"] == ["too big: 12 MB"], m   # args, as Celery 5 stores
    assert isinstance(m.get("traceback"), (str, type(None)))


# --- stored meta ---------------------------------------------------------------

def test_meta_shape_and_default_ttl(proto, env):
    srv = env[0]
    r = proto.send_task("cworker.add", args=[20, 22])
    assert r.get(timeout=30) == 42
    m = meta(srv.client(), r.id)
    assert m["status"] == "SUCCESS" and m["result"] == 42 and m["task_id"] == r.id, m
    assert "traceback" in m and m["traceback"] is None, m
    assert m.get("children") == [], m
    done = r.date_done
    assert isinstance(done, datetime.datetime), m["date_done"]
    now = datetime.datetime.utcnow()
    if done.tzinfo is not None:
        done = done.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    assert abs((now - done).total_seconds()) < 60, f"date_done {m['date_done']} is not UTC now"
    ttl = srv.client().ttl(f"celery-task-meta-{r.id}")
    assert 86400 - 60 <= ttl <= 86400, f"TTL {ttl}, expected ~86400 (result_expires default)"


def test_result_is_published(env):
    srv, w, apps = env
    import uuid
    tid = str(uuid.uuid4())
    ps = srv.client().pubsub()
    ps.subscribe(f"celery-task-meta-{tid}")
    ps.get_message(timeout=2)           # subscribe confirmation
    apps[2].send_task("cworker.echo", args=["pub"], task_id=tid)
    deadline = time.monotonic() + 20
    msg = None
    while time.monotonic() < deadline:
        msg = ps.get_message(timeout=1)
        if msg and msg["type"] == "message":
            break
    ps.close()
    assert msg and msg["type"] == "message", "no PUBLISH on celery-task-meta-<id>"
    assert json.loads(msg["data"])["result"] == "pub"
    assert srv.client().get(f"celery-task-meta-{tid}") is not None, "PUBLISH without SET"


def test_getpid_prefork_returns_children(env):
    srv, w, apps = env
    pids = [apps[2].send_task("cworker.getpid") for _ in range(30)]
    got = {r.get(timeout=30) for r in pids}
    assert w.pid not in got, "prefork task ran in the master"
    assert 1 <= len(got) <= 2, f"-c 2 but tasks ran in {len(got)} processes: {got}"
    for pid in got:
        assert proc_ppid(pid) == w.pid, f"pid {pid} is not a child of the worker {w.pid}"


# --- workers with other settings ------------------------------------------------

def test_getpid_solo_returns_worker_pid(redis_server, cworker_factory, app):
    w = cworker_factory(["-P", "solo"], redis=redis_server)
    assert app.send_task("cworker.getpid").get(timeout=30) == w.pid
    assert w.children() == [], "solo pool forked children"


def test_result_expires_custom(redis_server, cworker_factory, app):
    cworker_factory(["-c", "1", "--result-expires", "120"], redis=redis_server)
    r = app.send_task("cworker.noop")
    r.get(timeout=30)
    ttl = redis_server.client().ttl(f"celery-task-meta-{r.id}")
    assert 100 <= ttl <= 120, f"TTL {ttl}, expected ~120"


def test_result_expires_zero_keeps_forever(redis_server, cworker_factory, app):
    cworker_factory(["-c", "1", "--result-expires", "0"], redis=redis_server)
    r = app.send_task("cworker.noop")
    r.get(timeout=30)
    assert redis_server.client().ttl(f"celery-task-meta-{r.id}") == -1


def test_no_backend_stores_nothing(redis_server, cworker_factory, app):
    cworker_factory(["-c", "1"], redis=redis_server, backend=False)
    app.send_task("cworker.add", args=[1, 1])
    c = redis_server.client()
    wait_for(lambda: queue_len(c) == 0 and unacked_count(c) == 0, 10, what="task consumed")
    time.sleep(0.5)
    assert c.keys("celery-task-meta-*") == []


def test_result_extended(redis_server, cworker_factory, app):
    cworker_factory(["-c", "1", "--result-extended", "-n", "ext@%h", "-Q", "celery,docs"],
                    redis=redis_server)
    r = app.send_task("cworker.add", args=[2], kwargs={"b": 3}, queue="docs")
    assert r.get(timeout=30) == 5
    m = meta(redis_server.client(), r.id)
    assert m["name"] == "cworker.add", m
    assert m["args"] == [2], m
    assert m["kwargs"] == {"b": 3}, m
    assert m["worker"].startswith("ext@"), m
    assert m["retries"] == 0, m
    assert m["queue"] == "docs", m
    # Python reads them through AsyncResult
    assert r.name == "cworker.add" and r.queue == "docs" and r.kwargs == {"b": 3}
