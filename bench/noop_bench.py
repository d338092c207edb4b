#!/usr/bin/python3
"""Throughput and memory of cworker vs the stock Python Celery worker, side by side.

For N `cworker.noop` tasks on one fresh redis-server (free loopback port, temp dir,
no persistence), each worker in turn (same settings: 2 children, prefetch multiplier
1, results stored in the same Redis, log level warning):

  1. N messages are published by a stock Celery producer into a held list, the worker
     is started and waits on an empty queue (ready = blocked in BRPOP, or waiting for tracking notices);
  2. the held list is RENAMEd onto the queue (all N appear at once) -> t0;
  3. t1 = when all N result keys exist. tasks/s = N / (t1 - t0);
  4. RSS of the master + all children (VmRSS from /proc) is sampled every 20 ms;
     the table shows it idle (before step 2) and at its peak.

Usage: /usr/bin/python3 bench/noop_bench.py [-n 2000] [--cworker build/src/cworker]
       [--only cworker|python] [--json FILE]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PYAPP_DIR = os.path.join(REPO, "tests", "integration")
PY = "/usr/bin/python3"

try:
    import redis
    from celery import Celery
except ImportError as e:
    sys.exit(f"noop_bench: needs Debian's python3-celery/python3-redis; run with {PY} ({e})")

from harness import cpu_ticks, descendants, free_port, rss_kib  # noqa: E402  (also imported from here)


def tree_rss(pid):
    pids = [pid] + descendants(pid)
    return sum(rss_kib(p) for p in pids), len(pids)


class Proc:
    def __init__(self, argv, log, env=None, cwd=None):
        self.logf = open(log, "wb")
        self.log = log
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                  stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                  start_new_session=True)
        self.pid = self.p.pid

    def stop(self, timeout=20):
        kids = descendants(self.pid) if self.p.poll() is None else []
        if self.p.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        for k in kids + ([self.pid] if self.p.poll() is None else []):
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.logf.close()

    def tail(self, n=30):
        with open(self.log, "rb") as f:
            return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.procs, self.stop_ev = pid, 0, 0, threading.Event()

    def run(self):
        # The process tree is looked up (a walk over all of /proc) every half second, not at
        # every sample: at 50 walks a second the sampler itself took ~8% of a core from the
        # two the worker and Redis share.
        pids, k = [], 0
        while not self.stop_ev.is_set():
            if k % 25 == 0:
                pids = [self.pid] + descendants(self.pid)
            k += 1
            kib = sum(rss_kib(p) for p in pids)
            if kib > self.peak:
                self.peak, self.procs = kib, len(pids)
            time.sleep(0.02)


def waiting_consumers(r):
    """Consumers idle on an empty queue: blocked in BRPOP (kombu), or waiting for
    CLIENT TRACKING notices (cworker: flag t)."""
    return sum(1 for c in r.client_list()
               if c.get("cmd") in ("brpop", "blpop", "bzpopmin") or "t" in c.get("flags", ""))


TICK = os.sysconf("SC_CLK_TCK")


def redis_cpu(r):
    """Seconds of CPU the Redis server has used (INFO cpu: user + system, main thread and all)."""
    c = r.info("cpu")
    return c["used_cpu_user"] + c["used_cpu_sys"]


def run_one(kind, argv, env, cwd, r, url, n, queue, tmp, timeout):
    r.flushall()
    app = Celery("bench_producer", broker=url, backend=url, set_as_current=False)
    app.conf.task_serializer = "json"
    ids = [app.send_task("cworker.noop", queue=queue).id for _ in range(n)]
    app.close()
    hold = queue + "_held"
    assert r.llen(queue) == n, f"expected {n} messages, found {r.llen(queue)}"
    r.rename(queue, hold)

    proc = Proc(argv, os.path.join(tmp, f"{kind}.log"), env=env, cwd=cwd)
    try:
        deadline = time.monotonic() + 60
        while waiting_consumers(r) == 0:
            if proc.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} did not start consuming:\n{proc.tail()}")
            time.sleep(0.05)
        time.sleep(1.0)                      # let every child settle
        idle_kib, idle_procs = tree_rss(proc.pid)
        sampler = Sampler(proc.pid)
        sampler.start()
        keys = [f"celery-task-meta-{i}" for i in ids]
        w0, rcpu0 = cpu_ticks(proc.pid), redis_cpu(r)
        t0 = time.monotonic()
        r.rename(hold, queue)
        done = 0
        while True:
            # DBSIZE is O(1); count the result keys (O(n) in Redis, which shares the
            # cores with the worker being measured) only once there can be n of them
            done = r.dbsize()
            if done >= n:
                done = sum(r.exists(*keys[i:i + 500]) for i in range(0, n, 500))
                if done >= n:
                    break
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{kind}: only {done}/{n} results after {timeout}s:\n{proc.tail()}")
            if proc.p.poll() is not None:
                raise RuntimeError(f"{kind} exited ({proc.p.returncode}):\n{proc.tail()}")
            time.sleep(0.01)
        t1 = time.monotonic()
        w1, rcpu1 = cpu_ticks(proc.pid), redis_cpu(r)
        sampler.stop_ev.set()
        sampler.join()
        bad = [m for m in (r.get(k) for k in keys[:50]) if json.loads(m)["status"] != "SUCCESS"]
        if bad:
            raise RuntimeError(f"{kind}: failed results, e.g. {bad[0]!r}")
        return {"worker": kind, "tasks": n, "seconds": t1 - t0, "tasks_per_s": n / (t1 - t0),
                "idle_rss_mib": idle_kib / 1024, "peak_rss_mib": sampler.peak / 1024,
                "processes": max(sampler.procs, idle_procs),
                "worker_cpu_us": (w1 - w0) / TICK * 1e6 / n, "redis_cpu_us": (rcpu1 - rcpu0) * 1e6 / n}
    finally:
        proc.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="tasks per worker (default 2000)")
    ap.add_argument("--cworker", default=os.environ.get("CWORKER_EXE",
                                                        os.path.join(REPO, "build/src/cworker")))
    ap.add_argument("-c", "--concurrency", type=int, default=2)
    ap.add_argument("--prefetch-multiplier", type=int, default=1)
    ap.add_argument("--disable-prefetch", action="store_true",
                    help="cworker only (Celery 5.2 has no such setting): take a message only "
                         "when a child is free")
    ap.add_argument("--only", choices=["cworker", "python"])
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="cworker-bench.")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    rs = Proc([shutil.which("redis-server") or "redis-server", "--port", str(port),
               "--bind", "127.0.0.1", "--dir", tmp, "--save", "", "--appendonly", "no",
               "--daemonize", "no"], os.path.join(tmp, "redis.log"))
    results = []
    try:
        r = redis.Redis(port=port)
        for _ in range(100):
            try:
                if r.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        queue = "bench"
        c, m = str(a.concurrency), str(a.prefetch_multiplier)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
        runs = []
        if a.only in (None, "cworker"):
            if not os.access(a.cworker, os.X_OK):
                sys.exit(f"noop_bench: no cworker binary at {a.cworker} (build it or pass --cworker)")
            runs.append(("cworker", [a.cworker, "-b", url, "--result-backend", url, "-Q", queue,
                                     "-c", c, "--prefetch-multiplier", m, "-P", "prefork",
                                     "-l", "warning"] +
                         (["--disable-prefetch"] if a.disable_prefetch else []), env, None))
        if a.only in (None, "python"):
            penv = dict(env, CW_TEST_BROKER=url, CW_TEST_BACKEND=url, PYTHONPATH=PYAPP_DIR,
                        PYTHONDONTWRITEBYTECODE="1")
            runs.append(("python celery", [PY, "-m", "celery", "-A", "cw_pyworker_app", "worker",
                                           "-Q", queue, "-c", c, "--prefetch-multiplier", m,
                                           "-P", "prefork", "-l", "warning", "--without-gossip",
                                           "--without-mingle", "--without-heartbeat"],
                         penv, tmp))
        for kind, argv, env_, cwd in runs:
            print(f"running {kind}: {a.n} x cworker.noop ...", flush=True)
            results.append(run_one(kind, argv, env_, cwd, r, url, a.n, queue, tmp, a.timeout))
    finally:
        rs.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"{a.n} x cworker.noop, -c {a.concurrency} --prefetch-multiplier "
          f"{a.prefetch_multiplier}{' (cworker: --disable-prefetch)' if a.disable_prefetch else ''}"
          f", Redis broker + Redis results, one redis-server")
    hdr = f"{'worker':<15} {'tasks':>6} {'seconds':>8} {'tasks/s':>9} {'idle RSS MiB':>13} " \
          f"{'peak RSS MiB':>13} {'procs':>6} {'worker CPU us/task':>19} {'Redis CPU us/task':>18}"
    print(hdr)
    print("-" * len(hdr))
    for x in results:
        print(f"{x['worker']:<15} {x['tasks']:>6} {x['seconds']:>8.2f} {x['tasks_per_s']:>9.0f} "
              f"{x['idle_rss_mib']:>13.1f} {x['peak_rss_mib']:>13.1f} {x['processes']:>6} "
              f"{x['worker_cpu_us']:>19.0f} {x['redis_cpu_us']:>18.0f}")
    if len(results) == 2:
        cw, py = results
        cw_cpu, py_cpu = (x["worker_cpu_us"] + x["redis_cpu_us"] for x in results)
        print(f"\ncworker / python: throughput x{cw['tasks_per_s'] / py['tasks_per_s']:.1f}, "
              f"peak RSS x{cw['peak_rss_mib'] / py['peak_rss_mib']:.3f} "
              f"({py['peak_rss_mib'] / max(cw['peak_rss_mib'], 0.001):.0f}x less memory); "
              f"CPU per task, worker + Redis: {cw_cpu:.0f} vs {py_cpu:.0f} us "
              f"(x{cw_cpu / max(py_cpu, 1e-9):.2f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
