"""--http: Prometheus metrics and health probes served from the master's
event loop, --log-format json and --print-config, against a real
redis-server and a stock Python producer.  Metrics are parsed with Debian's
prometheus_client (text format 0.0.4); every metric is shown to move when its
event happens; hostile HTTP clients are refused while tasks keep running."""

import datetime
import http.client
import json
import os
import socket
import time
import uuid

import pytest

from conftest import SLOW, free_port, run_cworker, wait_for

parser = pytest.importorskip("prometheus_client.parser")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def get(port, path, method="GET", timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read().decode()
    finally:
        c.close()


def scrape(port):
    """{(name, frozenset(labels.items())): value} for every sample of /metrics."""
    status, ctype, body = get(port, "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    out = {}
    for fam in parser.text_string_to_metric_families(body):
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def val(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def task_count(samples, task, state):
    return val(samples, "cworker_tasks_total", task=task, state=state)


def wait_metric(port, pred, timeout=15, what="metric"):
    last = {}

    def check():
        last["m"] = scrape(port)
        return pred(last["m"])
    wait_for(check, timeout * SLOW, what=what)
    return last["m"]


def start_http_worker(cworker_factory, redis, args=(), **kw):
    port = free_port()
    w = cworker_factory(["--http", f"127.0.0.1:{port}", "--diagnostic-tasks"] + list(args),
                        redis=redis, **kw)
    w.http_port = port
    wait_for(lambda: get(port, "/health/ready")[0] == 200, 10 * SLOW, what="ready probe")
    return w


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------

def test_task_counters_histogram_and_gauges_move(redis_server, cworker_factory, app):
    w = start_http_worker(cworker_factory, redis_server, ["-c", "2"])
    port = w.http_port
    m0 = scrape(port)
    assert val(m0, "cworker_build_info", version="0.1.0",
               features=next(dict(k[1])["features"] for k in m0
                             if k[0] == "cworker_build_info")) == 1
    assert val(m0, "cworker_children", state="idle") == 2
    assert val(m0, "cworker_children", state="busy") == 0
    assert val(m0, "cworker_broker_up") == 1 and val(m0, "cworker_backend_up") == 1
    assert val(m0, "cworker_master_rss_bytes") > 0
    rss = [v for k, v in m0.items() if k[0] == "cworker_child_rss_bytes"]
    assert len(rss) == 2 and all(v > 0 for v in rss)
    assert val(m0, "cworker_children_rss_bytes") == sum(rss)

    # succeeded, failed, retried
    assert app.send_task("cworker.add", args=[2, 3]).get(timeout=10 * SLOW) == 5
    with pytest.raises(Exception):
        app.send_task("cworker.fail", args=["ValueError", "no"]).get(timeout=10 * SLOW)
    assert app.send_task("cworker.retry_until", args=[1]).get(timeout=10 * SLOW) == 1
    # a child stores the result before its outcome reaches the master: wait for the count
    m = wait_metric(port, lambda m: task_count(m, "cworker.retry_until", "succeeded") == 1 and
                    task_count(m, "cworker.add", "succeeded") == 1 and
                    task_count(m, "cworker.fail", "failed") == 1, what="outcomes")
    assert task_count(m, "cworker.add", "received") == 1
    assert task_count(m, "cworker.add", "started") == 1
    assert task_count(m, "cworker.add", "succeeded") == 1
    assert task_count(m, "cworker.fail", "failed") == 1
    assert task_count(m, "cworker.retry_until", "retried") == 1
    assert task_count(m, "cworker.retry_until", "succeeded") == 1
    assert val(m, "cworker_task_runtime_seconds_count", task="cworker.add") == 1
    assert val(m, "cworker_task_runtime_seconds_bucket", task="cworker.add", le="+Inf") == 1
    assert val(m, "cworker_task_runtime_seconds_bucket", task="cworker.add", le="0.1") == 1

    # sleep tasks: runtime lands in its bucket; busy children and reserved messages show
    rs = [app.send_task("cworker.sleep", args=[1.5 * SLOW]) for _ in range(5)]
    m = wait_metric(port, lambda m: val(m, "cworker_children", state="busy") == 2 and
                    val(m, "cworker_reserved_messages") == 3, what="2 busy, 3 reserved")
    assert val(m, "cworker_children", state="idle") == 0
    for r in rs:
        r.get(timeout=30 * SLOW)
    m = wait_metric(port, lambda m: val(m, "cworker_task_runtime_seconds_count",
                                        task="cworker.sleep") == 5, what="5 sleeps")
    assert val(m, "cworker_task_runtime_seconds_bucket", task="cworker.sleep", le="1") == 0
    assert val(m, "cworker_task_runtime_seconds_bucket", task="cworker.sleep", le="10") == 5
    assert val(m, "cworker_reserved_messages") == 0

    # ETA-held messages
    later = app.send_task("cworker.add", args=[1, 1], countdown=30)
    wait_metric(port, lambda m: val(m, "cworker_eta_messages") == 1, what="eta gauge")
    app.control.revoke(later.id)

    # revoked (expired before it ran)
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=30)
    app.send_task("cworker.echo", args=[1], expires=past)
    wait_metric(port, lambda m: task_count(m, "cworker.echo", "revoked") == 1, what="revoked")

    # rejected: a task this worker does not know
    app.send_task("no.such.task", args=[1])
    wait_metric(port, lambda m: task_count(m, "no.such.task", "rejected") == 1, what="rejected")


def test_time_limits_and_child_recycles(redis_server, cworker_factory, app):
    w = start_http_worker(cworker_factory, redis_server, ["-c", "1"])
    port = w.http_port
    with pytest.raises(Exception):
        app.send_task("cworker.sleep", args=[10], soft_time_limit=0.5).get(timeout=10 * SLOW)
    m = wait_metric(port, lambda m: task_count(m, "cworker.sleep", "failed") == 1, what="failed")
    assert val(m, "cworker_task_time_limit_hits_total", task="cworker.sleep", limit="soft") == 1
    assert val(m, "cworker_task_time_limit_hits_total", task="cworker.sleep", limit="hard") == 0
    assert task_count(m, "cworker.sleep", "failed") == 1

    with pytest.raises(Exception):
        app.send_task("cworker.spin", args=[10], time_limit=0.5).get(timeout=10 * SLOW)
    m = wait_metric(port, lambda m: val(m, "cworker_child_recycles_total",
                                        reason="time_limit") == 1, what="time_limit recycle")
    assert val(m, "cworker_task_time_limit_hits_total", task="cworker.spin", limit="hard") == 1
    assert task_count(m, "cworker.spin", "failed") == 1

    pids_before = {k for k in m if k[0] == "cworker_child_rss_bytes"}
    with pytest.raises(Exception):
        app.send_task("cworker.crash").get(timeout=10 * SLOW)
    m = wait_metric(port, lambda m: val(m, "cworker_child_recycles_total", reason="crash") == 1
                    and val(m, "cworker_children", state="idle") == 1, what="crash recycle")
    assert task_count(m, "cworker.crash", "failed") == 1
    assert {k for k in m if k[0] == "cworker_child_rss_bytes"} != pids_before  # a new pid

    # revoke(terminate=True) kills the child: revoked, recycled as "terminated"
    r = app.send_task("cworker.sleep", args=[30])
    wait_metric(port, lambda m: val(m, "cworker_children", state="busy") == 1, what="busy")
    app.control.revoke(r.id, terminate=True)
    m = wait_metric(port, lambda m: val(m, "cworker_child_recycles_total",
                                        reason="terminated") == 1, what="terminated recycle")
    assert task_count(m, "cworker.sleep", "revoked") == 1
    assert val(m, "cworker_child_recycles_total", reason="crash") == 1


def test_recycles_by_max_tasks_and_max_memory(redis_server, cworker_factory, app):
    w1 = start_http_worker(cworker_factory, redis_server,
                           ["-c", "1", "--max-tasks-per-child", "2", "-n", "a@%h"])
    for i in range(4):
        assert app.send_task("cworker.add", args=[i, 1]).get(timeout=10 * SLOW) == i + 1
    wait_metric(w1.http_port, lambda m: val(m, "cworker_child_recycles_total",
                                             reason="max_tasks") == 2, what="max_tasks")
    w1.stop()
    w2 = start_http_worker(cworker_factory, redis_server,
                           ["-c", "1", "--max-memory-per-child", "1", "-n", "b@%h"])
    assert app.send_task("cworker.add", args=[1, 1]).get(timeout=10 * SLOW) == 2
    m = wait_metric(w2.http_port, lambda m: val(m, "cworker_child_recycles_total",
                                                 reason="max_memory") == 1, what="max_memory")
    assert val(m, "cworker_child_recycles_total", reason="max_tasks") == 0


@pytest.mark.slow
def test_queue_depth_is_sampled(redis_server, cworker_factory, app):
    w = start_http_worker(cworker_factory, redis_server,
                          ["-c", "1", "--prefetch-multiplier", "1", "-Q", "celery,other"])
    port = w.http_port
    wait_metric(port, lambda m: ("cworker_queue_depth", frozenset({("queue", "other")})) in m,
                what="depth of both queues")
    rs = [app.send_task("cworker.sleep", args=[2.0 * SLOW]) for _ in range(6)]
    # one runs, one is reserved (unacknowledged: prefetch 1), the rest wait in the list
    m = wait_metric(port, lambda m: val(m, "cworker_queue_depth", queue="celery") == 4,
                    what="queue depth 4")
    assert val(m, "cworker_queue_depth", queue="other") == 0
    for r in rs:
        r.get(timeout=40 * SLOW)
    wait_metric(port, lambda m: val(m, "cworker_queue_depth", queue="celery") == 0,
                what="queue drained")


def test_docconv_pages_are_counted(redis_server, cworker_factory, app, tmp_path):
    fitz = pytest.importorskip("fitz")
    if "docconv.convert" not in run_cworker(["--list-tasks"]).stdout:
        pytest.skip("cworker built without docconv")
    doc = fitz.open()
    for text in ("first page", "second page", "third page"):
        doc.new_page().insert_text((72, 72), text, fontsize=12)
    pdf = tmp_path / "three.pdf"
    doc.save(str(pdf))
    w = start_http_worker(cworker_factory, redis_server,
                          ["-c", "1", "--docconv-roots", str(tmp_path)])
    r = app.send_task("docconv.convert", args=[str(pdf)], kwargs={"format": "text",
                                                                  "ocr": "never"})
    assert r.get(timeout=60 * SLOW)["pages"] == 3
    m = wait_metric(w.http_port, lambda m: task_count(m, "docconv.convert", "succeeded") == 1,
                    what="first conversion")
    assert val(m, "cworker_docconv_pages_total", task="docconv.convert") == 3
    assert val(m, "cworker_docconv_ocr_pages_total", task="docconv.convert") == 0
    r = app.send_task("docconv.convert", args=[str(pdf)], kwargs={"format": "text",
                                                                  "ocr": "always",
                                                                  "pages": [2]})
    assert r.get(timeout=120 * SLOW)["pages"] == 1
    m = wait_metric(w.http_port, lambda m: task_count(m, "docconv.convert", "succeeded") == 2,
                    what="second conversion")
    assert val(m, "cworker_docconv_pages_total", task="docconv.convert") == 4
    assert val(m, "cworker_docconv_ocr_pages_total", task="docconv.convert") == 1
    # a failed conversion counts no pages
    with pytest.raises(Exception):
        app.send_task("docconv.convert", args=[str(tmp_path / "missing.pdf")]).get(
            timeout=60 * SLOW)
    m = wait_metric(w.http_port, lambda m: task_count(m, "docconv.convert", "failed") == 1,
                    what="failed conversion")
    assert val(m, "cworker_docconv_pages_total", task="docconv.convert") == 4
    assert task_count(m, "docconv.convert", "failed") == 1


def test_task_labels_are_capped(redis_server, cworker_factory, app):
    w = start_http_worker(cworker_factory, redis_server, ["-c", "1"])
    for i in range(1100):
        app.send_task(f"unknown.task_{i:04d}")
    app.send_task("bad\u2028name")  # fine UTF-8: its own label while under the cap
    m = wait_metric(w.http_port, lambda m: sum(
        v for k, v in m.items() if k[0] == "cworker_tasks_total" and
        dict(k[1])["state"] == "rejected") == 1101, timeout=60, what="1101 rejected")
    names = {dict(k[1])["task"] for k in m if k[0] == "cworker_tasks_total"}
    assert len(names) == 1001 and "other" in names
    assert val(m, "cworker_task_labels") == 1001
    assert task_count(m, "other", "rejected") == 101


# ---------------------------------------------------------------------------
# health probes
# ---------------------------------------------------------------------------

def test_readiness_follows_redis(redis_server, cworker_factory, app):
    w = start_http_worker(cworker_factory, redis_server, ["-c", "1"])
    port = w.http_port
    status, ctype, body = get(port, "/health/ready")
    assert status == 200 and ctype == "application/json"
    doc = json.loads(body)
    assert doc["status"] == "ready" and doc["down"] == []
    assert doc["broker"] == "up" and doc["backend"] == "up"
    assert doc["children"] == {"busy": 0, "idle": 1}

    redis_server.stop()
    wait_for(lambda: get(port, "/health/ready")[0] == 503, 10 * SLOW, what="503 when down")
    wait_for(lambda: "backend" in json.loads(get(port, "/health/ready")[2])["down"],
             10 * SLOW, what="backend probe notices")
    doc = json.loads(get(port, "/health/ready")[2])
    assert doc["status"] == "unavailable"
    assert "broker" in doc["down"] and doc["broker"] == "down"
    assert get(port, "/health/live")[0] == 200   # the loop still turns
    m = scrape(port)
    assert val(m, "cworker_broker_up") == 0 and val(m, "cworker_backend_up") == 0

    redis_server.start()
    wait_for(lambda: get(port, "/health/ready")[0] == 200, 20 * SLOW, what="ready again")
    m = scrape(port)
    assert val(m, "cworker_broker_reconnects_total") == 1
    assert val(m, "cworker_broker_up") == 1
    assert app.send_task("cworker.add", args=[1, 2]).get(timeout=10 * SLOW) == 3


def test_dead_backend_makes_worker_unready(redis_server, cworker_factory):
    port, dead = free_port(), free_port()
    cworker_factory(["--http", f"127.0.0.1:{port}"], redis=redis_server,
                    backend=f"redis://:pw@127.0.0.1:{dead}/1")
    wait_for(lambda: get(port, "/health/ready")[0] == 503, 10 * SLOW, what="503")
    doc = json.loads(get(port, "/health/ready")[2])
    assert doc["down"] == ["backend"] and doc["broker"] == "up"
    assert val(scrape(port), "cworker_backend_up") == 0


def test_ipv6_loopback(redis_server, cworker_factory):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    port = free_port()
    cworker_factory(["--http", f"[::1]:{port}"], redis=redis_server, backend=False)
    c = http.client.HTTPConnection("::1", port, timeout=5)
    c.request("GET", "/health/live")
    assert c.getresponse().status == 200
    c.close()


def test_without_backend_readiness_ignores_it(redis_server, cworker_factory):
    port = free_port()
    cworker_factory(["--http", f"127.0.0.1:{port}"], redis=redis_server, backend=False)
    status, _, body = get(port, "/health/ready")
    assert status == 200 and json.loads(body)["backend"] == "none"


# ---------------------------------------------------------------------------
# hostile clients
# ---------------------------------------------------------------------------

def raw(port, data, timeout=5, wait_close=True):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
            if not wait_close:
                break
        return b"".join(chunks)
    finally:
        s.close()


def status_of(resp):
    return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/1.1 ") else None


def test_bad_requests_are_refused_fast(redis_server, cworker_factory, app):
    w = start_http_worker(cworker_factory, redis_server, ["-c", "1"])
    port = w.http_port
    assert get(port, "/nope")[0] == 404
    assert get(port, "/metrics", method="POST")[0] == 405
    assert get(port, "/metrics", method="DELETE")[0] == 405
    status, _, body = get(port, "/health/live", method="HEAD")
    assert status == 200 and body == ""
    t0 = time.monotonic()
    assert status_of(raw(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64))) == 400
    assert status_of(raw(port, b"GET /metrics HTTP/1.1\r\nbroken header\r\n\r\n")) == 400
    assert status_of(raw(port, b"GET / HTTP/3.0\r\n\r\n")) == 505
    assert status_of(raw(port, b"GET /" + b"a" * 1000 + b" HTTP/1.1\r\n\r\n")) == 414
    huge = b"GET /metrics HTTP/1.1\r\n" + b"X-Junk: " + b"j" * 20000 + b"\r\n\r\n"
    assert status_of(raw(port, huge)) == 431
    post = b"POST /metrics HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"p" * 100000
    assert status_of(raw(port, post)) == 405
    assert time.monotonic() - t0 < 2 * SLOW   # none of these waited for a timeout
    for _ in range(50):
        try:
            raw(port, os.urandom(300), timeout=3)
        except OSError:
            pass
    assert w.alive()
    assert app.send_task("cworker.add", args=[4, 4]).get(timeout=10 * SLOW) == 8
    assert get(port, "/health/live")[0] == 200


def test_slowloris_and_connection_flood(redis_server, cworker_factory, app):
    w = start_http_worker(cworker_factory, redis_server, ["-c", "1"])
    port = w.http_port
    # a head that never completes is closed after the short header timeout
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /metrics HTTP/1.1\r\nX-A: 1\r\n")
    t0 = time.monotonic()
    assert s.recv(100) == b""
    took = time.monotonic() - t0
    assert 1.0 < took < 5 * SLOW
    s.close()

    # 40 slow clients (the old cap was 32): the liveness probe still answers
    # (tests/integration/test_http_flood.py floods with 1,000 and past the cap)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
    for c in idle:
        c.sendall(b"GET /metr")
    time.sleep(0.3)
    assert get(port, "/health/live")[0] == 200
    # tasks keep running during the attack
    assert app.send_task("cworker.add", args=[1, 1]).get(timeout=10 * SLOW) == 2
    # the idle ones are dropped by the header timeout; probes work again
    wait_for(lambda: all(c.recv(10) == b"" for c in idle), 10 * SLOW, what="idle closed")
    for c in idle:
        c.close()
    assert get(port, "/health/live")[0] == 200
    assert w.alive()


# ---------------------------------------------------------------------------
# --log-format json, --print-config
# ---------------------------------------------------------------------------

def test_json_log_lines(redis_server, cworker_factory, app):
    w = cworker_factory(["--log-format", "json", "--diagnostic-tasks", "-c", "1"],
                        redis=redis_server)
    r = app.send_task("cworker.add", args=[1, 2])
    assert r.get(timeout=10 * SLOW) == 3
    r2 = app.send_task("cworker.fail", args=["KeyError", "k"])
    with pytest.raises(Exception):
        r2.get(timeout=10 * SLOW)
    w.stop()
    lines = [ln for ln in w.log().splitlines() if ln.strip()]
    docs = [json.loads(ln) for ln in lines]       # every line is one JSON object
    assert len(docs) >= 4
    for d in docs:
        assert {"ts", "level", "process", "pid", "component", "message"} <= set(d)
    about = [d for d in docs if d.get("task_id") == r.id]
    assert about and all(d["task_name"] == "cworker.add" for d in about)
    assert any("succeeded" in d["message"] for d in about)
    failed = [d for d in docs if d.get("task_id") == r2.id and d["level"] == "ERROR"]
    assert failed and failed[0]["task_name"] == "cworker.fail"
    assert any(d["message"].endswith("ready.") for d in docs)


def test_json_log_lines_from_a_child_name_its_task(redis_server, cworker_factory, app):
    # the result backend is down: the child running the task logs its retries
    dead = free_port()
    w = cworker_factory(["--log-format", "json", "-c", "1"], redis=redis_server,
                        backend=f"redis://127.0.0.1:{dead}/1")
    r = app.send_task("cworker.add", args=[1, 2])
    w.wait_log(r"retrying", timeout=15 * SLOW)
    w.kill()
    docs = [json.loads(ln) for ln in w.log().splitlines() if ln.strip()]
    child = [d for d in docs if d["process"].startswith("ForkPoolWorker")]
    assert child, docs
    assert all(d["task_id"] == r.id and d["task_name"] == "cworker.add" for d in child)
    assert any("retrying" in d["message"] for d in child)


def test_text_log_format_is_unchanged(redis_server, cworker_factory, app):
    w = cworker_factory(["-c", "1"], redis=redis_server)
    w.stop()
    first = w.log().splitlines()[0]
    assert first.startswith("[") and "INFO/MainProcess" in first


def test_print_config_shows_sources_and_masks_secrets(tmp_path):
    conf = tmp_path / "w.conf"
    conf.write_text("# test\nworker_concurrency = 3\n\nresult_backend = "
                    "redis://:filepass@127.0.0.1:1/2\n[task:cworker.add]\nrate_limit = 5/s\n")
    p = run_cworker(["--print-config", "--config", str(conf), "--http", "127.0.0.1:9999",
                     "-Q", "a,b"],
                    env={"CELERY_BROKER_URL": "redis://user:s3cr3t@127.0.0.1:6390/0"})
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "s3cr3t" not in out and "filepass" not in out
    rows = {}
    for line in out.splitlines():
        if " = " in line and not line.startswith(("#", " ")):
            key, rest = line.split(" = ", 1)
            value, src = rest.split(" # ", 1)
            rows[key.strip()] = (value.strip(), src.strip())
    assert rows["broker_url"][1] == "env CELERY_BROKER_URL"
    assert "**" in rows["broker_url"][0] and "127.0.0.1:6390" in rows["broker_url"][0]
    assert rows["result_backend"][1] == f"file {conf}:4"
    assert rows["worker_concurrency"] == ("3", f"file {conf}:2")
    assert rows["http_listen"] == ("127.0.0.1:9999", "flag --http")
    assert rows["worker_queues"] == ("a,b", "flag --queues")
    assert rows["worker_prefetch_multiplier"] == ("4", "default")
    assert rows["log_format"] == ("text", "default")
    assert "[task:cworker.add]" in out and "rate_limit = 5/s" in out


def test_config_file_errors_name_file_line_and_key(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("worker_concurrency = 2\nlog_format = yaml\n")
    p = run_cworker(["--config", str(conf), "--print-config"])
    assert p.returncode == 64
    assert "log_format" in p.stderr
    conf.write_text("worker_concurrency = 2\n\nworker_prefetch_multiplier = many\n")
    p = run_cworker(["--config", str(conf), "--print-config"])
    assert p.returncode == 64
    assert f"{conf}:3" in p.stderr and "worker_prefetch_multiplier" in p.stderr
    conf.write_text("no_such_key = 1\n")
    p = run_cworker(["--config", str(conf)])
    assert p.returncode == 64 and f"{conf}:1" in p.stderr and "no_such_key" in p.stderr


def test_http_flag_errors(redis_server):
    p = run_cworker(["--http", "nonsense", "-b", redis_server.url()], timeout=10)
    assert p.returncode != 0 and "--http" in p.stderr
    p = run_cworker(["--log-format", "xml"])
    assert p.returncode == 64 and "--log-format" in p.stderr
