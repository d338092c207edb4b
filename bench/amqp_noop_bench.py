#!/usr/bin/python3
"""Noop throughput of cworker vs the stock Python Celery worker on RabbitMQ, side by side.

One rabbitmq-server and one redis-server (results) on free loopback ports, temp dirs.
For each worker in turn (same settings: 2 children, prefetch multiplier 1, results in
the same Redis, log level warning), in its own fresh virtual host:

  1. N `cworker.noop` messages are published by a stock Celery producer (persistent,
     as Celery sends them) while no worker runs;
  2. the worker is started; t0 = the first moment the queue holds fewer than N
     messages (polled every 5 ms with a passive queue.declare), so start-up time is
     not counted;
  3. t1 = when all N result keys exist in Redis. tasks/s = N / (t1 - t0);
  4. RSS of the master + children is sampled every 20 ms (peak reported);
  5. CPU per task over t0..t1 (utime + stime from /proc): the worker (master and children),
     RabbitMQ (the node and its helpers), and Redis (results, INFO cpu).

Usage: /usr/bin/python3 bench/amqp_noop_bench.py [-n 5000] [--cworker build/src/cworker]
       [--only cworker|python] [--json FILE]
"""

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, HERE)

try:
    import amqp as pyamqp
    import redis
    from celery import Celery
except ImportError as e:
    sys.exit(f"amqp_noop_bench: needs Debian's python3-celery/-redis/-amqp; run with "
             f"/usr/bin/python3 ({e})")

import conftest  # RabbitServer, RedisServer (the test suite's own server wrappers)
from harness import cpu_ticks  # noqa: E402
from noop_bench import PY, PYAPP_DIR, TICK, Proc, Sampler, redis_cpu, tree_rss


def queue_count(port, vhost, queue="celery"):
    conn = pyamqp.Connection(f"127.0.0.1:{port}", userid="guest", password="guest",
                             virtual_host=vhost, connect_timeout=5)
    conn.connect()
    try:
        return conn.channel().queue_declare(queue, passive=True).message_count
    finally:
        conn.close()


def run_one(kind, argv_for, rabbit, results, n, tmp, timeout, db):
    vhost = f"bench-{kind}"
    rabbit.add_vhost(vhost)
    url = f"amqp://guest:guest@127.0.0.1:{rabbit.port}/{vhost}"
    rurl = results.url(db)
    r = results.client(db)
    r.flushdb()
    app = Celery("bench_producer", broker=url, backend=rurl, set_as_current=False)
    app.conf.task_serializer = "json"
    with app.producer_or_acquire() as prod:
        ids = [app.send_task("cworker.noop", producer=prod).id for _ in range(n)]
    app.close()
    # publishes without confirms: RabbitMQ may still be enqueueing the last of them
    deadline = time.monotonic() + 30
    while (have := queue_count(rabbit.port, vhost)) != n:
        if have > n or time.monotonic() > deadline:
            raise RuntimeError(f"{kind}: {have} messages in the queue, published {n}")
        time.sleep(0.05)

    argv, env = argv_for(url, rurl)
    proc = Proc(argv, os.path.join(tmp, f"{kind}.log"), env=env, cwd=PYAPP_DIR)
    try:
        deadline = time.monotonic() + 60
        sampler = Sampler(proc.pid)
        sampler.start()
        while queue_count(rabbit.port, vhost) >= n:
            if proc.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} did not start consuming:\n{proc.tail()}")
            time.sleep(0.005)
        t0 = time.monotonic()
        c0 = (cpu_ticks(proc.pid), cpu_ticks(rabbit.mp.pid), redis_cpu(r))
        keys = [f"celery-task-meta-{i}" for i in ids]
        while True:
            done = r.dbsize()
            if done >= n:
                break
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{kind}: only {done}/{n} results after {timeout}s")
            if proc.p.poll() is not None:
                raise RuntimeError(f"{kind} exited:\n{proc.tail()}")
            time.sleep(0.01)
        t1 = time.monotonic()
        c1 = (cpu_ticks(proc.pid), cpu_ticks(rabbit.mp.pid), redis_cpu(r))
        sampler.stop_ev.set()
        sampler.join()
        bad = [m for m in (r.get(k) for k in keys[:50]) if not m or
               json.loads(m)["status"] != "SUCCESS"]
        if bad:
            raise RuntimeError(f"{kind}: bad results, e.g. {bad[0]!r}")
        return {"worker": kind, "tasks": n, "seconds": t1 - t0, "tasks_per_s": n / (t1 - t0),
                "peak_rss_mib": sampler.peak / 1024,
                "worker_cpu_us": (c1[0] - c0[0]) / TICK * 1e6 / n,
                "rabbit_cpu_us": (c1[1] - c0[1]) / TICK * 1e6 / n,
                "redis_cpu_us": (c1[2] - c0[2]) * 1e6 / n}
    finally:
        proc.stop()
        r.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--cworker", default=os.environ.get("CWORKER_EXE",
                                                        os.path.join(REPO, "build/src/cworker")))
    ap.add_argument("-c", "--concurrency", type=int, default=2)
    ap.add_argument("--prefetch-multiplier", type=int, default=1)
    ap.add_argument("--only", choices=["cworker", "python"])
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cw-amqp-bench-")
    rabbit = conftest.RabbitServer(os.path.join(tmp, "rabbit"))
    results = conftest.RedisServer(os.path.join(tmp, "redis"))
    c, pm = str(a.concurrency), str(a.prefetch_multiplier)
    runs = []
    try:
        if a.only in (None, "cworker"):
            def cw(url, rurl):
                return ([a.cworker, "-b", url, "--result-backend", rurl, "-c", c,
                         "--prefetch-multiplier", pm, "-l", "warning"], conftest.clean_env())
            runs.append(run_one("cworker", cw, rabbit, results, a.n, tmp, a.timeout, 1))
        if a.only in (None, "python"):
            def py(url, rurl):
                env = conftest.clean_env({"CW_TEST_BROKER": url, "CW_TEST_BACKEND": rurl,
                                          "PYTHONPATH": PYAPP_DIR,
                                          "PYTHONDONTWRITEBYTECODE": "1"})
                return ([PY, "-m", "celery", "-A", "cw_pyworker_app", "worker", "-P", "prefork",
                         "-c", c, "--prefetch-multiplier", pm, "-l", "warning",
                         "--without-gossip", "--without-mingle", "--without-heartbeat"], env)
            runs.append(run_one("python", py, rabbit, results, a.n, tmp, a.timeout, 2))
    finally:
        results.stop()
        rabbit.destroy()
    print(f"\nnoop x {a.n}, -c {c}, prefetch multiplier {pm}, RabbitMQ broker + Redis results")
    print(f"{'worker':<10}{'seconds':>10}{'tasks/s':>12}{'peak RSS MiB':>15}"
          f"{'CPU us/task: worker':>21}{'RabbitMQ':>10}{'Redis':>7}")
    for r in runs:
        print(f"{r['worker']:<10}{r['seconds']:>10.2f}{r['tasks_per_s']:>12.0f}"
              f"{r['peak_rss_mib']:>15.1f}{r['worker_cpu_us']:>21.0f}{r['rabbit_cpu_us']:>10.0f}"
              f"{r['redis_cpu_us']:>7.0f}")
    if len(runs) == 2:
        print(f"ratio cworker/python: {runs[0]['tasks_per_s'] / runs[1]['tasks_per_s']:.2f}x "
              f"throughput, {runs[1]['peak_rss_mib'] / runs[0]['peak_rss_mib']:.1f}x less memory")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
