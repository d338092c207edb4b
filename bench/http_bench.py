#!/usr/bin/python3
"""What --http costs the master: CPU time per /metrics scrape, and the master's CPU
while Prometheus-style scrapes arrive every 100 ms under a noop load.

On one fresh redis-server (free loopback port, temp dir, no persistence), cworker runs
with --http, -c 2, and a config file of N [alias:bench.tNNNNN] sections (each an alias of
cworker.noop), so N distinct task names exist:

  1. names: one task of each of the N names is sent and run, so the worker has seen N
     names (received, started, succeeded, a runtime histogram each; the label set is
     capped at 1000 names + "other");
  2. scrape cost: S back-to-back GET /metrics; the master's utime+stime from
     /proc/<pid>/stat before and after (clock ticks, hence many scrapes) / S = CPU per
     scrape; also the wall time per scrape and the body size;
  3. load: for D seconds a producer keeps cworker.noop tasks flowing (a backlog kept
     topped up), once without scrapes and once with a scrape every 100 ms; the master's
     CPU (% of one core) and tasks/s in each phase.

Usage: /usr/bin/python3 bench/http_bench.py [--names 10000] [--scrapes 500]
       [--seconds 15] [--cworker build/src/cworker] [--json FILE] [--short]
--short: 50 names, 20 scrapes, 1 s phases (the CI smoke).
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TICK = os.sysconf("SC_CLK_TCK")

try:
    import redis
    from celery import Celery
except ImportError as e:
    sys.exit(f"http_bench: needs Debian's python3-celery/python3-redis; run with /usr/bin/python3 ({e})")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    fields = st[st.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK   # utime + stime


def scrape(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read()
        assert r.status == 200, r.status
        return body
    finally:
        c.close()


def wait(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--names", type=int, default=10000)
    ap.add_argument("--scrapes", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--cworker", default=os.path.join(REPO, "build", "src", "cworker"))
    ap.add_argument("--json")
    ap.add_argument("--short", action="store_true",
                    help="CI smoke: 50 names, 20 scrapes, 1 s phases")
    a = ap.parse_args()
    if a.short:
        a.names, a.scrapes, a.seconds = 50, 20, 1

    tmp = tempfile.mkdtemp(prefix="http_bench.")
    rport, hport = free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(rport),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        r = redis.Redis(port=rport)
        wait(lambda: _ping(r), 10, "redis")
        conf = os.path.join(tmp, "aliases.conf")
        with open(conf, "w") as f:
            for i in range(a.names):
                f.write(f"[alias:bench.t{i:05d}]\ntask = cworker.noop\n")
        url = f"redis://127.0.0.1:{rport}/0"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
        log = open(os.path.join(tmp, "cworker.log"), "w")
        w = subprocess.Popen([a.cworker, "-b", url, "--result-backend", url, "-c", "2",
                              "--config", conf, "--http", f"127.0.0.1:{hport}", "-l", "warning",
                              "--without-heartbeat"], stdout=log, stderr=log, env=env)
        procs.append(w)
        wait(lambda: _ready(hport), 20, "cworker ready")
        app = Celery("bench", broker=url, backend=url, set_as_current=False)
        app.conf.task_ignore_result = True

        # 1. every name seen once
        t0 = time.monotonic()
        with app.producer_or_acquire() as prod:
            for i in range(a.names):
                app.send_task(f"bench.t{i:05d}", producer=prod, ignore_result=True)
        wait(lambda: b'cworker_tasks_total{task="other",state="succeeded"} %d' %
             max(a.names - 1000, 0) in scrape(hport) if a.names > 1000 else True,
             300, "all names run")
        wait(lambda: r.llen("celery") == 0, 300, "queue drained")
        names_s = time.monotonic() - t0
        body = scrape(hport)

        # 2. scrape cost
        c0, t0 = cpu_seconds(w.pid), time.monotonic()
        for _ in range(a.scrapes):
            scrape(hport)
        c1, t1 = cpu_seconds(w.pid), time.monotonic()
        per_scrape_ms = (c1 - c0) / a.scrapes * 1000
        wall_ms = (t1 - t0) / a.scrapes * 1000

        # 3. master CPU under noop load, without and with 100 ms scrapes
        phases = {}
        for label, interval in (("no scrapes", None), ("scrape every 100 ms", 0.1)):
            phases[label] = load_phase(app, r, w.pid, hport, a.seconds, interval)

        res = {"names": a.names, "labels_body_bytes": len(body), "names_seconds": names_s,
               "scrape_cpu_ms": per_scrape_ms, "scrape_wall_ms": wall_ms,
               "scrapes": a.scrapes, "phases": phases}
        print(f"task names seen: {a.names} (label set capped at 1000 + other); "
              f"/metrics body {len(body) / 1024:.0f} KiB")
        print(f"scrape: {per_scrape_ms:.3f} ms master CPU per scrape "
              f"({a.scrapes} scrapes; {wall_ms:.2f} ms wall each, client included)")
        print("| phase | tasks/s | master CPU (% of a core) | scrapes |")
        print("|---|---|---|---|")
        for label, p in phases.items():
            print(f"| {label} | {p['tasks_per_s']:.0f} | {p['master_cpu_pct']:.1f} | "
                  f"{p['scrapes']} |")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=2)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def load_phase(app, r, pid, hport, seconds, interval):
    """Keep >= 200 noop messages queued for `seconds`; optionally scrape every interval."""
    stop = threading.Event()
    sent = [0]
    scrapes = [0]

    def producer():
        with app.producer_or_acquire() as prod:
            while not stop.is_set():
                if r.llen("celery") < 200:
                    for _ in range(100):
                        app.send_task("cworker.noop", producer=prod, ignore_result=True)
                    sent[0] += 100
                else:
                    time.sleep(0.005)

    def scraper():
        nxt = time.monotonic()
        while not stop.is_set():
            scrape(hport)
            scrapes[0] += 1
            nxt += interval
            time.sleep(max(0, nxt - time.monotonic()))

    th = [threading.Thread(target=producer)]
    if interval:
        th.append(threading.Thread(target=scraper))
    for t in th:
        t.start()
    time.sleep(1)   # warm up: the backlog is there
    q0 = r.llen("celery")
    s0, c0, t0 = sent[0], cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    s1, c1, t1 = sent[0], cpu_seconds(pid), time.monotonic()
    q1 = r.llen("celery")
    stop.set()
    for t in th:
        t.join()
    wait(lambda: r.llen("celery") == 0, 60, "drain")
    done = (s1 - s0) - (q1 - q0)
    return {"tasks_per_s": done / (t1 - t0), "master_cpu_pct": (c1 - c0) / (t1 - t0) * 100,
            "scrapes": scrapes[0]}


def _ping(r):
    try:
        return r.ping()
    except redis.exceptions.ConnectionError:
        return False


def _ready(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", "/health/ready")
        ok = c.getresponse().status == 200
        c.close()
        return ok
    except OSError:
        return False


if __name__ == "__main__":
    main()
