#!/usr/bin/python3
"""Scaling: 1, 2 and 4 worker processes on one broker, cworker and stock Python
Celery side by side, with the broker's CPU, so one sees where the broker (not
the worker) becomes the limit.

For each broker (one redis-server without persistence; one RabbitMQ node with
results in a second redis-server), each worker kind and each process count W:
  1. W workers start (each -c 2, default prefetch multiplier 4, own node name)
     consuming an unused queue, and log "ready.";
  2. N `cworker.noop` messages are published to queue `bench`;
  3. t0 = one `add_consumer bench` broadcast: every worker starts on the full
     queue at once; t1 = when all N result keys exist; tasks/s = N / (t1 - t0);
  4. CPU time (utime + stime from /proc) of the broker's process tree and of all
     workers' trees over t0..t1, as % of one core.
Redis is single-threaded: its CPU near 100 % means the broker is the limit.
On a machine with few cores the workers, the broker and this script share them;
the `cores` line says how many there are.

Usage: /usr/bin/python3 bench/scaling_bench.py [-n 4000] [--broker redis|amqp|both]
       [--workers 1,2,4] [--only cworker|python] [--short] [--cworker PATH]
--short: 300 tasks, 1 and 2 workers, Redis only (the CI smoke form).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

PYAPP_DIR = os.path.join(h.REPO, "tests", "integration")
TICK = os.sysconf("SC_CLK_TCK")


def start_workers(kind, w, broker_url, backend_url, exe, d, tag, app):
    procs, names = [], []
    for i in range(w):
        name = f"{tag}{i}@bench"
        names.append(name)
        log = os.path.join(d, f"{tag}{i}.log")
        if kind == "cworker":
            argv = [exe, "-b", broker_url, "--result-backend", backend_url, "-Q", "idle",
                    "-c", "2", "-n", name, "-l", "warning"]
            env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
        else:
            argv = ["/usr/bin/python3", "-m", "celery", "-A", "cw_pyworker_app", "worker",
                    "-Q", "idle", "-c", "2", "-n", name, "-P", "prefork", "-l", "warning",
                    "--without-gossip", "--without-mingle", "--without-heartbeat"]
            env = dict(os.environ, CW_TEST_BROKER=broker_url, CW_TEST_BACKEND=backend_url,
                       PYTHONPATH=PYAPP_DIR, PYTHONDONTWRITEBYTECODE="1")
        env["PWD"] = d
        p = h.Proc(argv, log, env=env)
        procs.append(p)
    def all_answer():
        for p in procs:
            if not p.alive():
                raise SystemExit(f"{kind} exited:\n{p.log()[-2000:]}")
        return len(app.control.ping(destination=names, timeout=0.5)) == w
    h.wait_for(all_answer, 90, f"{w} x {kind} answering ping", interval=0.2)
    return procs


def one_run(kind, w, n, broker, broker_url, results, exe, d):
    rc = results.client()
    rc.flushdb()
    tag = f"{'cw' if kind == 'cworker' else 'py'}{w}x"
    app = h.producer(broker_url, results.url())
    workers = []
    try:
        workers = start_workers(kind, w, broker_url, results.url(), exe, d, tag, app)
        ids = [app.send_task("cworker.noop", queue="bench").id for _ in range(n)]
        time.sleep(0.5)
        keys = [f"celery-task-meta-{t}" for t in ids]
        bpid = broker.proc.pid
        b0 = h.cpu_ticks(bpid)
        w0 = sum(h.cpu_ticks(p.pid) for p in workers)
        t0 = time.monotonic()
        app.control.add_consumer("bench", reply=False)
        while True:
            # DBSIZE is O(1): count the result keys only once there can be n of them
            done = rc.dbsize()
            if done >= n:
                done = sum(rc.exists(*keys[i:i + 500]) for i in range(0, n, 500))
                if done >= n:
                    break
            if time.monotonic() - t0 > 600:
                raise SystemExit(f"{kind} x{w}: only {done}/{n} results after 600 s")
            time.sleep(0.01)
        t1 = time.monotonic()
        b1 = h.cpu_ticks(bpid)
        w1 = sum(h.cpu_ticks(p.pid) for p in workers)
    finally:
        h.close_app(app)
        for p in workers:
            p.stop()
    secs = t1 - t0
    return {"tasks_per_s": n / secs, "broker_cpu": 100.0 * (b1 - b0) / TICK / secs,
            "worker_cpu": 100.0 * (w1 - w0) / TICK / secs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=4000)
    ap.add_argument("--broker", choices=("redis", "amqp", "both"), default="both")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--only", choices=("cworker", "python"))
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--cworker")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if a.short:
        a.n, a.workers, a.broker = 300, "1,2", "redis"
    counts = [int(x) for x in a.workers.split(",")]
    kinds = [k for k in ("cworker", "python") if a.only in (None, k)]
    exe = h.cworker_exe(a.cworker)
    d, cleanup = h.tmpdir("cw-scaling-")
    servers = []
    table = []
    try:
        for bk in (("redis", "amqp") if a.broker == "both" else (a.broker,)):
            if bk == "redis":
                broker = h.Redis(d, "redis", aof=False)
                servers.append(broker)
                results, burl = broker, broker.url()
            else:
                results = h.Redis(d, "results", aof=False)
                broker = h.Rabbit(d)
                servers += [results, broker]
                burl = broker.url()
            for w in counts:
                row = {"broker": bk, "workers": w}
                for kind in kinds:
                    print(f"{bk}: {w} x {kind} ...", flush=True)
                    row[kind] = one_run(kind, w, a.n, broker, burl, results, exe, d)
                table.append(row)
    finally:
        h.teardown(reversed(servers), a.keep, d, cleanup)

    print(f"\n{a.n} x cworker.noop per run; each worker process -c 2, prefetch multiplier 4; "
          f"cores: {os.cpu_count()}")
    print("CPU columns: % of one core over the run (broker process tree; all workers' trees)")
    hdr = f"{'broker':<7}{'procs':>6}"
    for k in kinds:
        hdr += f" | {k + ' tasks/s':>16} {'broker CPU':>10} {'worker CPU':>10}"
    if len(kinds) == 2:
        hdr += " |  ratio"
    print(hdr)
    print("-" * len(hdr))
    for row in table:
        line = f"{row['broker']:<7}{row['workers']:>6}"
        for k in kinds:
            x = row[k]
            line += (f" | {x['tasks_per_s']:>16.0f} {x['broker_cpu']:>9.0f}% "
                     f"{x['worker_cpu']:>9.0f}%")
        if len(kinds) == 2:
            line += f" | x{row['cworker']['tasks_per_s'] / row['python']['tasks_per_s']:.1f}"
        print(line)


if __name__ == "__main__":
    main()
