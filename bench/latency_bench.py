#!/usr/bin/python3
"""Round-trip latency of one task, cworker vs the stock Python Celery worker.

One redis-server (free loopback port) as broker and result backend; each worker in
turn (-c 2, prefork, events off) serves N sequential `cworker.add(i, i)` calls made
by a stock Celery producer: send_task, then AsyncResult.get() (the result arrives by
the backend's pub/sub, as in any Celery client). Prints p50, p90 and p99 of the
round trip for each worker and the ratios (python / cworker).

Usage: /usr/bin/python3 bench/latency_bench.py [-n 2000] [--smoke] [--cworker PATH]
--smoke: 100 calls (the CI form; prints the same table).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

PY = "/usr/bin/python3"


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def measure(app, n):
    for i in range(20):                       # warm-up: connections, pub/sub, children
        app.send_task("cworker.add", args=[i, i]).get(timeout=30)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        assert app.send_task("cworker.add", args=[i, i]).get(timeout=30) == 2 * i
        out.append(time.perf_counter() - t0)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--cworker")
    a = ap.parse_args()
    n = 100 if a.smoke else a.n
    exe = h.cworker_exe(a.cworker)
    d, cleanup = h.tmpdir("cw-latency-")
    r = h.Redis(d, "redis")
    rows = []
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
        penv = dict(env, CW_TEST_BROKER=r.url(), CW_TEST_BACKEND=r.url(1),
                    PYTHONPATH=os.path.join(h.REPO, "tests", "integration"),
                    PYTHONDONTWRITEBYTECODE="1")
        workers = [
            ("cworker", [exe, "-b", r.url(), "--result-backend", r.url(1), "-c", "2",
                         "-l", "warning"], env, "ready."),
            ("python celery", [PY, "-m", "celery", "-A", "cw_pyworker_app", "worker", "-c", "2",
                               "-P", "prefork", "-l", "info", "--without-gossip",
                               "--without-mingle", "--without-heartbeat"], penv, "ready."),
        ]
        for name, argv, env_, ready in workers:
            w = h.Proc(argv, os.path.join(d, name.split()[0] + ".log"), env=env_)
            try:
                time.sleep(0.5)
                app = h.producer(r.url(), r.url(1))
                try:
                    lat = measure(app, n)
                finally:
                    h.close_app(app)
                rows.append((name, [pct(lat, p) * 1e3 for p in (50, 90, 99)]))
            finally:
                w.stop()
    finally:
        r.stop()
        cleanup()
    print(f"\n{n} sequential cworker.add round trips (send_task + get), Redis broker and results")
    print(f"{'worker':<15} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for name, v in rows:
        print(f"{name:<15} {v[0]:8.2f} {v[1]:8.2f} {v[2]:8.2f}")
    if len(rows) == 2:
        c, p = rows[0][1], rows[1][1]
        print("python / cworker: " + ", ".join(f"p{q} x{p[i] / c[i]:.2f}"
                                                for i, q in enumerate((50, 90, 99))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
