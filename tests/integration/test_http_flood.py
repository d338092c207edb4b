"""--http under connection floods (issue 20): with 1,000 slow clients holding
connections (each sent a partial request line), /health/live and /metrics
still answer 200 within a second, an oversized head still gets 431, every
slow connection is closed after the head timeout (and the master's sockets
go back to what they were), noop tasks flow meanwhile, and past the
connection cap the oldest connections make room for new ones."""

import http.client
import os
import resource
import socket
import time

import pytest

from conftest import SLOW, free_port, wait_for

FLOOD = 1000
CAP = 4096               # CW_HTTP_MAX_CONNS
HEAD_TIMEOUT = 2.0       # CW_HTTP_HEAD_TIMEOUT
PARTIAL = b"GET /metr"   # a request line that never completes


@pytest.fixture(autouse=True)
def enough_descriptors():
    """Room for the flood here and in the worker (it inherits our limit; the
    server caps its connections at half its soft limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 3 * CAP
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"the hard open files limit ({hard}) is below {want}")
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def get(port, path, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def timed_get(port, path):
    t0 = time.monotonic()
    status, body = get(port, path)
    return status, time.monotonic() - t0, body


def connect(port, data=PARTIAL):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        s.sendall(data)
    return s


def held(s):
    """True while the server neither answered nor closed s."""
    try:
        s.setblocking(False)
        return s.recv(1) == b"never"
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.setblocking(True)


def master_sockets(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def start(cworker_factory, redis, concurrency="1"):
    port = free_port()
    w = cworker_factory(["--http", f"127.0.0.1:{port}", "-c", concurrency], redis=redis)
    wait_for(lambda: get(port, "/health/live")[0] == 200, 10 * SLOW, what="live probe")
    return w, port


def close_all(socks):
    for s in socks:
        s.close()


def test_probes_answer_through_1000_slow_connections(redis_server, cworker_factory):
    w, port = start(cworker_factory, redis_server)
    flood = [connect(port) for _ in range(FLOOD)]
    try:
        wait_for(lambda: master_sockets(w.pid) >= FLOOD, 5 * SLOW,
                 what="the flood accepted")
        for path in ("/health/live", "/metrics", "/health/live"):
            status, took, body = timed_get(port, path)
            assert status == 200, (path, body)
            assert took < 1.0 * SLOW, (path, took)
            assert path != "/metrics" or "cworker_build_info" in body
        # the flood was held all along: the server neither answered nor dropped any
        assert sum(held(s) for s in flood) == FLOOD
    finally:
        close_all(flood)
    assert w.alive()


def test_oversized_head_gets_431_during_a_flood(redis_server, cworker_factory):
    w, port = start(cworker_factory, redis_server)
    flood = [connect(port) for _ in range(FLOOD)]
    try:
        huge = b"GET /metrics HTTP/1.1\r\nX-Junk: " + b"j" * 20000 + b"\r\n\r\n"
        s = connect(port, huge)
        t0 = time.monotonic()
        resp = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            resp += b
        s.close()
        assert resp.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), resp[:80]
        assert time.monotonic() - t0 < 1.0 * SLOW     # at once, not at a timeout
        assert sum(held(c) for c in flood) == FLOOD
    finally:
        close_all(flood)


def test_slow_connections_are_closed_after_the_head_timeout(redis_server, cworker_factory):
    w, port = start(cworker_factory, redis_server)
    before = master_sockets(w.pid)
    t0 = time.monotonic()
    flood = [connect(port) for _ in range(FLOOD)]
    opened = time.monotonic()
    try:
        for s in flood:
            s.settimeout(HEAD_TIMEOUT + 5 * SLOW)
        # every one of them ends in EOF (no response), none before its deadline
        assert flood[-1].recv(100) == b""
        assert time.monotonic() - opened > HEAD_TIMEOUT - 0.5
        assert all(s.recv(100) == b"" for s in flood)
        assert time.monotonic() - t0 < HEAD_TIMEOUT + 5 * SLOW
    finally:
        close_all(flood)
    # nothing leaked in the master
    wait_for(lambda: master_sockets(w.pid) <= before, 5 * SLOW, what="sockets released")
    assert get(port, "/health/live")[0] == 200


def test_noop_tasks_finish_during_a_flood(redis_server, cworker_factory, app):
    w, port = start(cworker_factory, redis_server, concurrency="2")
    flood = [connect(port) for _ in range(FLOOD)]
    try:
        results = [app.send_task("cworker.noop") for _ in range(200)]
        deadline = time.monotonic() + 30 * SLOW
        while not all(r.ready() for r in results):
            assert time.monotonic() < deadline, "tasks stalled during the flood"
            # keep the flood at full strength: replace what the head timeout closed
            for i, s in enumerate(flood):
                if not held(s):
                    s.close()
                    flood[i] = connect(port)
            time.sleep(0.05)
        assert all(r.successful() for r in results)
        assert sum(held(s) for s in flood) >= FLOOD - 50   # the flood still on at the end
        assert get(port, "/health/live")[0] == 200
    finally:
        close_all(flood)
    assert w.alive()


def test_past_the_cap_the_oldest_connections_make_room(redis_server, cworker_factory):
    w, port = start(cworker_factory, redis_server)
    before = master_sockets(w.pid)
    flood = []
    try:
        # idle ones (nothing sent) up to the cap, then more: none is refused
        for i in range(CAP + 200):
            flood.append(connect(port, b"" if i % 2 else PARTIAL))
        status, took, _ = timed_get(port, "/health/live")
        assert status == 200 and took < 1.0 * SLOW
        status, took, _ = timed_get(port, "/metrics")
        assert status == 200 and took < 1.0 * SLOW
        # the newest are held; the oldest went first; the count stayed bounded
        assert all(held(s) for s in flood[-100:])
        assert not any(held(s) for s in flood[:100])
        assert master_sockets(w.pid) <= before + CAP + 1
        assert "at the connection limit" in w.log()
    finally:
        close_all(flood)
    assert w.alive()
