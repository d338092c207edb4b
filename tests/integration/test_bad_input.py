"""Messages cworker cannot or must not run: each is logged, dropped (gone from
the queue and from the unacked bookkeeping), never crashes the worker, and the
next normal task still succeeds."""

import json

import pytest
from celery.exceptions import NotRegistered

from conftest import (capture_envelope, envelope_body, meta, queue_len, set_envelope_body,
                      unacked_count, wait_for)

ERROR_LINE = r"(?m)^\[[^\]]*(ERROR|CRITICAL)/"
ERROR_OR_WARNING_LINE = r"(?m)^\[[^\]]*(ERROR|CRITICAL|WARNING)/"


@pytest.fixture
def worker(redis_server, cworker_factory):
    return cworker_factory(["-c", "2"], redis=redis_server)


def assert_dropped_and_alive(w, redis_server, app, since, level=ERROR_LINE):
    c = redis_server.client()
    w.wait_log(level, timeout=10, since=since)
    wait_for(lambda: queue_len(c) == 0 and unacked_count(c) == 0, 10,
             what="bad message gone from the queue and from unacked/unacked_index")
    assert w.alive(), "worker died"
    assert app.send_task("cworker.add", args=[20, 22]).get(timeout=15) == 42
    assert w.alive()
    assert queue_len(c) == 0 and unacked_count(c) == 0


def test_unregistered_task(worker, redis_server, app):
    since = worker.log_size()
    r = app.send_task("no.such.task", args=[1, 2])
    with pytest.raises(NotRegistered):
        r.get(timeout=15)
    m = meta(redis_server.client(), r.id)
    assert m["status"] == "FAILURE" and m["result"]["exc_type"] == "NotRegistered", m
    lines = [l for l in worker.log_since(since).splitlines()
             if "Received unregistered task" in l]
    assert lines, "no 'Received unregistered task' line"
    assert len(lines) == 1, lines
    assert "ERROR" in lines[0], lines
    assert "Received unregistered task of type 'no.such.task'" in lines[0], lines
    assert f"(id {r.id}, queue celery)" in lines[0], lines
    assert_dropped_and_alive(worker, redis_server, app, since)


def test_unregistered_task_protocol1(worker, redis_server, app_factory):
    app1 = app_factory(redis_server, protocol=1)
    since = worker.log_size()
    with pytest.raises(NotRegistered):
        app1.send_task("no.such.v1task").get(timeout=15)
    assert_dropped_and_alive(worker, redis_server, app1, since)


def test_many_unregistered_do_not_loop(worker, redis_server, app):
    """Rejected without requeue: 50 unknown tasks are each handled once."""
    since = worker.log_size()
    rs = [app.send_task(f"no.such.task{i}") for i in range(50)]
    for r in rs:
        with pytest.raises(NotRegistered):
            r.get(timeout=20)
    assert_dropped_and_alive(worker, redis_server, app, since)
    n = sum(1 for l in worker.log_since(since).splitlines() if "Received unregistered task" in l)
    assert n == 50, f"{n} 'unregistered' lines for 50 messages (requeued and seen again?)"


@pytest.mark.parametrize("serializer", ["pickle", "yaml", "msgpack"])
def test_non_json_serializers_dropped(worker, redis_server, app, serializer):
    if serializer == "yaml":
        pytest.importorskip("yaml")
    if serializer == "msgpack":
        pytest.importorskip("msgpack")
    app.conf.accept_content = ["json", serializer]
    since = worker.log_size()
    r = app.send_task("cworker.echo", args=[{"x": 1}], serializer=serializer)
    assert_dropped_and_alive(worker, redis_server, app, since)
    m = meta(redis_server.client(), r.id)
    assert m is None, f"a {serializer} message left a state (Celery stores none): {m}"


GARBAGE = {
    "binary": b"\x00\xff\xfe garbage \x80\x81",
    "text": b"not json at all",
    "empty": b"",
    "json_null": b"null",
    "json_number": b"42",
    "json_array": b"[1, 2, 3]",
    "json_object_not_envelope": b'{"hello": "world"}',
    "truncated": b'{"body": "eyJ',
    "body_wrong_type": b'{"body": 12, "content-type": "application/json", "headers": {}, '
                       b'"properties": {"body_encoding": "base64", "delivery_tag": "t1"}}',
    "deep_nesting": b"[" * 100000 + b"]" * 100000,
    "huge_number": b"1" + b"0" * 100000,
}


@pytest.mark.parametrize("key", sorted(GARBAGE))
def test_garbage_on_the_list(worker, redis_server, app, key):
    c = redis_server.client()
    since = worker.log_size()
    c.lpush("celery", GARBAGE[key])
    assert_dropped_and_alive(worker, redis_server, app, since, level=ERROR_OR_WARNING_LINE)


def _v2_body(env):
    return json.loads(envelope_body(env))


def mutate_body_not_base64(env):
    env["body"] = "!!!not base64 at all!!!"


def mutate_body_not_json(env):
    set_envelope_body(env, b"\x80not json{")


def mutate_v2_body_not_array(env):
    set_envelope_body(env, b'{"a": 1}')


def mutate_v2_args_not_list(env):
    args, kwargs, embed = _v2_body(env)
    set_envelope_body(env, json.dumps([1, kwargs, embed]).encode())


def mutate_v2_kwargs_not_dict(env):
    args, kwargs, embed = _v2_body(env)
    set_envelope_body(env, json.dumps([args, "kw", embed]).encode())


def mutate_v2_body_too_short(env):
    set_envelope_body(env, b"[[1]]")


def mutate_task_header_not_string(env):
    env["headers"]["task"] = 123


def mutate_content_type_unknown(env):
    env["content-type"] = "application/x-unknown"


def mutate_headers_not_object(env):
    env["headers"] = "task=cworker.echo"


def mutate_properties_missing(env):
    del env["properties"]


MUTATIONS_V2 = [mutate_body_not_base64, mutate_body_not_json, mutate_v2_body_not_array,
                mutate_v2_args_not_list, mutate_v2_kwargs_not_dict, mutate_v2_body_too_short,
                mutate_task_header_not_string, mutate_content_type_unknown,
                mutate_headers_not_object, mutate_properties_missing]


@pytest.mark.parametrize("mutate", MUTATIONS_V2, ids=lambda f: f.__name__[len("mutate_"):])
def test_broken_v2_envelope(worker, redis_server, app, mutate):
    c = redis_server.client()
    tid, env = capture_envelope(app, c, "cworker.echo", args=["payload"])
    mutate(env)
    since = worker.log_size()
    c.lpush("celery", json.dumps(env))
    assert_dropped_and_alive(worker, redis_server, app, since)
    m = meta(c, tid)
    assert m is None, f"a malformed message left a state (Celery stores none): {m}"


def mutate_v1_no_task(body):
    del body["task"]


def mutate_v1_args_not_list(body):
    body["args"] = "notalist"


def mutate_v1_kwargs_not_dict(body):
    body["kwargs"] = [1, 2]


def mutate_v1_id_missing(body):
    del body["id"]


@pytest.mark.parametrize("mutate", [mutate_v1_no_task, mutate_v1_args_not_list,
                                    mutate_v1_kwargs_not_dict, mutate_v1_id_missing],
                         ids=lambda f: f.__name__[len("mutate_"):])
def test_broken_v1_body(worker, redis_server, app_factory, mutate):
    app1 = app_factory(redis_server, protocol=1)
    c = redis_server.client()
    tid, env = capture_envelope(app1, c, "cworker.echo", args=["payload"])
    body = json.loads(envelope_body(env))
    assert body["task"] == "cworker.echo"       # really a v1 message
    mutate(body)
    set_envelope_body(env, json.dumps(body).encode())
    since = worker.log_size()
    c.lpush("celery", json.dumps(env))
    assert_dropped_and_alive(worker, redis_server, app1, since)
    m = meta(c, tid)
    assert m is None, f"a malformed message left a state (Celery stores none): {m}"


def test_unmodified_captured_envelope_runs(worker, redis_server, app):
    """Control for the mutation tests: the captured envelope itself is fine."""
    c = redis_server.client()
    tid, env = capture_envelope(app, c, "cworker.echo", args=["payload"])
    c.lpush("celery", json.dumps(env))
    wait_for(lambda: meta(c, tid), 15, what="result of the re-pushed envelope")
    assert meta(c, tid)["result"] == "payload"


def test_burst_of_garbage_then_work(worker, redis_server, app):
    c = redis_server.client()
    since = worker.log_size()
    good = [app.send_task("cworker.add", args=[i, i]) for i in range(20)]
    for i in range(200):
        c.lpush("celery", GARBAGE[sorted(GARBAGE)[i % len(GARBAGE)]])
    good += [app.send_task("cworker.add", args=[i, i]) for i in range(20, 40)]
    assert [r.get(timeout=30) for r in good] == [2 * i for i in range(40)]
    assert_dropped_and_alive(worker, redis_server, app, since, level=ERROR_OR_WARNING_LINE)
