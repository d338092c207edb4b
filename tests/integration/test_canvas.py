"""Canvas from stock Python producers, run by cworker: link callbacks and
errbacks, chains, groups and chords with the Redis backend (the embed of
protocol v2 and the backend's chord bookkeeping)."""

import json

import pytest

from conftest import meta, queue_len, wait_for



@pytest.fixture
def redis_server(broker):
    """Every test here runs on each broker (conftest `broker`: redis, amqp)."""
    return broker

def sig(app, name, *args, immutable=False, **opts):
    s = app.signature(name, args=args, immutable=immutable)
    return s.set(**opts) if opts else s


def test_chain_passes_each_result_on(redis_server, cworker_factory, app):
    cworker_factory(["-c", "2"], redis=redis_server)
    from celery import chain
    res = chain(sig(app, "cworker.echo", 1), sig(app, "cworker.add", 2),
                sig(app, "cworker.add", 3)).apply_async()
    assert res.get(timeout=20) == 6
    # every step's result is stored, and the steps know their parents
    assert res.parent.get(timeout=5) == 3
    assert res.parent.parent.get(timeout=5) == 1
    c = redis_server.client()
    last, mid = meta(c, res.id), meta(c, res.parent.id)
    assert mid["parent_id"] == res.parent.parent.id
    assert last["parent_id"] == res.parent.id


def test_chain_of_immutable_signatures_ignores_results(redis_server, cworker_factory, app):
    cworker_factory(["-c", "1"], redis=redis_server)
    from celery import chain
    res = chain(sig(app, "cworker.add", 1, 1), sig(app, "cworker.echo", "x", immutable=True),
                sig(app, "cworker.echo", immutable=False)).apply_async()
    assert res.get(timeout=20) == "x"


def test_chain_stops_at_a_failure(redis_server, cworker_factory, app):
    cworker_factory(["-c", "1"], redis=redis_server)
    from celery import chain
    res = chain(sig(app, "cworker.echo", 1),
                sig(app, "cworker.fail", "ValueError", "stop", immutable=True),
                sig(app, "cworker.add", 100)).apply_async()
    with pytest.raises(ValueError):
        res.parent.get(timeout=20)
    # the step after the failure never runs
    assert app.AsyncResult(res.id).state == "PENDING"
    assert redis_server.queue_len() == 0


def test_link_and_link_error(redis_server, cworker_factory, app):
    cworker_factory(["-c", "1"], redis=redis_server)
    cb_id, eb_id = "cb-" + "1" * 8, "eb-" + "2" * 8
    ok = app.send_task("cworker.add", args=[2, 3],
                       link=sig(app, "cworker.echo", task_id=cb_id))
    assert ok.get(timeout=20) == 5
    assert app.AsyncResult(cb_id).get(timeout=20) == 5
    bad = app.send_task("cworker.fail", args=["KeyError", "nope"],
                        link_error=sig(app, "cworker.echo", task_id=eb_id))
    with pytest.raises(KeyError):
        bad.get(timeout=20)
    # Celery's old-style errback call: errback(task_id)
    assert app.AsyncResult(eb_id).get(timeout=20) == bad.id


def test_several_links_share_a_group(redis_server, cworker_factory, app):
    cworker_factory(["-c", "2"], redis=redis_server)
    ids = ["cbA-0001", "cbB-0002"]
    r = app.send_task("cworker.add", args=[1, 1],
                      link=[sig(app, "cworker.echo", task_id=i) for i in ids])
    assert r.get(timeout=20) == 2
    assert [app.AsyncResult(i).get(timeout=20) for i in ids] == [2, 2]
    c = redis_server.client()
    gids = {meta(c, i)["group_id"] for i in ids}
    assert len(gids) == 1 and None not in gids


def test_group_results(redis_server, cworker_factory, app):
    cworker_factory(["-c", "2"], redis=redis_server)
    from celery import group
    res = group(sig(app, "cworker.add", i, i) for i in range(6)).apply_async()
    assert res.get(timeout=30) == [0, 2, 4, 6, 8, 10]


def test_chord_runs_the_body_once_with_ordered_results(redis_server, cworker_factory, app):
    cworker_factory(["-c", "2"], redis=redis_server)
    from celery import chord
    header = [sig(app, "cworker.sleep", 0.3 if i % 2 == 0 else 0, i) for i in range(5)]
    res = chord(header)(sig(app, "cworker.echo"))
    # sleep(seconds, value) returns value; results come in header order, not finish order
    assert res.get(timeout=30) == [0, 1, 2, 3, 4]
    c = redis_server.client()
    # the chord's bookkeeping keys are gone once the body was sent
    assert not [k for k in c.keys("celery-taskset-meta-*")]
    assert redis_server.queue_len() == 0


def test_chord_with_python_and_c_workers_sharing_the_queue(redis_server, cworker_factory,
                                                           pyworker_factory, app):
    cworker_factory(["-c", "1"], redis=redis_server)
    pyworker_factory(redis_server, concurrency=1)
    from celery import chord
    res = chord(sig(app, "cworker.add", i, 1) for i in range(8))(sig(app, "cworker.echo"))
    assert res.get(timeout=40) == [i + 1 for i in range(8)]


def test_chord_with_a_failing_header_fails_the_body_with_chorderror(redis_server,
                                                                     cworker_factory, app,
                                                                     app_factory):
    cworker_factory(["-c", "1"], redis=redis_server)
    from celery import chord
    from celery.exceptions import ChordError
    eb_id = "chord-eb-0001"
    header = [sig(app, "cworker.add", 1, 1), sig(app, "cworker.fail", "ValueError", "bad")]
    body = sig(app, "cworker.echo", link_error=sig(app, "cworker.echo", task_id=eb_id))
    res = chord(header)(body)
    # through the chord's result the header's own error surfaces first (as with Celery)
    with pytest.raises(ValueError):
        res.get(timeout=30)
    # a second client (one app keeps one pending result per id) sees the body's own error
    other = app_factory(redis_server)
    with pytest.raises(ChordError) as ei:
        other.AsyncResult(res.id).get(timeout=30)
    assert "ValueError('bad')" in str(ei.value)
    m = meta(redis_server.client(), res.id)
    assert m["status"] == "FAILURE" and m["result"]["exc_type"] == "ChordError"
    # the body's errback is called with the body's id
    assert app.AsyncResult(eb_id).get(timeout=20) == res.id


def test_callback_routed_by_its_options(redis_server, cworker_factory, app):
    """A signature with options.queue goes to that queue, not the default."""
    cworker_factory(["-c", "1", "-Q", "celery"], redis=redis_server)
    r = app.send_task("cworker.add", args=[1, 2],
                      link=sig(app, "cworker.echo", task_id="routed-cb-1", queue="elsewhere"))
    assert r.get(timeout=20) == 3
    wait_for(lambda: redis_server.queue_len("elsewhere") == 1, 10,
             what="callback on queue 'elsewhere'")
    if redis_server.kind != "redis":
        return
    c = redis_server.client()
    env = json.loads(c.lindex("elsewhere", 0))
    assert env["headers"]["task"] == "cworker.echo" and env["headers"]["id"] == "routed-cb-1"
    assert env["headers"]["parent_id"] == r.id and env["headers"]["root_id"] == r.id
    assert env["properties"]["delivery_info"]["routing_key"] == "elsewhere"


def test_callbacks_published_by_cworker_run_on_a_python_worker(redis_server, cworker_factory,
                                                              pyworker_factory, app):
    """The messages cworker builds are ones stock Celery accepts."""
    cworker_factory(["-c", "1", "-Q", "cq"], redis=redis_server)
    pyworker_factory(redis_server, queues="pyq")
    from celery import chain
    res = chain(sig(app, "cworker.add", 2, 2, queue="cq"), sig(app, "cworker.echo", queue="pyq"),
                sig(app, "cworker.add", 10, queue="cq")).apply_async()
    assert res.get(timeout=30) == 14
