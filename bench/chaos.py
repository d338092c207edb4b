#!/usr/bin/python3
"""Chaos run: nothing is lost while children, the broker, the result backend and
the master itself are killed under an acks_late load.

N tasks (cworker.sleep(0.02, i) -> i) go to one broker (Redis with an fsync-always
AOF, or RabbitMQ) with results in a second Redis; cworker runs them with
-c 2 --acks-late --reject-on-worker-lost. While they run:
  - every second a random pool child is killed with SIGKILL;
  - the broker is restarted twice (at 20% and 70% of the results),
    the result backend once (at 40%);
  - the master is killed with SIGKILL once (at 55%) and started again a second
    later, as systemd's Restart=always does.
At the end every task must have its SUCCESS result with the right value
(lost = 0). Executions are counted from the worker's log ("succeeded" lines,
across both masters): a task run to completion more than once is a duplicate,
which at-least-once delivery allows; they are counted and reported.

Usage: /usr/bin/python3 bench/chaos.py [--tasks 10000] [--broker redis|amqp]
       [--short] [--cworker build/src/cworker] [--keep]
--short: 1,000 tasks (CI form, a minute or two). Exit status 1 when a task is
lost, has a wrong result, or a message is left in the broker.
"""

import argparse
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10000)
    ap.add_argument("--broker", choices=("redis", "amqp"), default="redis")
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--cworker")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    a = ap.parse_args()
    n = 1000 if a.short else a.tasks
    exe = h.cworker_exe(a.cworker)
    d, cleanup = h.tmpdir("cw-chaos-")
    rng = random.Random(20261206)
    servers, w = [], None
    try:
        results = h.Redis(d, "results")
        servers.append(results)
        broker = h.Redis(d, "broker") if a.broker == "redis" else h.Rabbit(d)
        servers.append(broker)
        burl = broker.url() if a.broker == "redis" else broker.url()
        argv = [exe, "-b", burl, "--result-backend", results.url(), "-c", "2",
                "--acks-late", "--reject-on-worker-lost", "--visibility-timeout", "10",
                "-n", "chaos@%h", "-l", "info"]
        log = os.path.join(d, "cworker.log")
        w = h.Proc(argv, log)
        h.wait_for(lambda: "ready." in w.log(), 30, "cworker ready")
        app = h.producer(burl, results.url())
        t0 = time.monotonic()
        ids = [app.send_task("cworker.sleep", args=[0.02, i]).id for i in range(n)]
        print(f"sent {n} tasks in {time.monotonic() - t0:.1f}s", flush=True)
        rc = results.client()

        def done():
            try:
                return rc.dbsize()
            except Exception:
                return 0

        stop = threading.Event()
        counts = {"child kills": 0, "broker restarts": 0, "backend restarts": 0,
                  "master kills": 0}
        worker = {"proc": w}

        def supervise():           # systemd: Restart=always, RestartSec=1
            while not stop.is_set():
                p = worker["proc"]
                if not p.alive():
                    time.sleep(1)
                    p.start()
                time.sleep(0.2)

        def child_killer():
            while not stop.wait(1.0):
                kids = h.children_of(worker["proc"].pid)
                if kids:
                    try:
                        os.kill(rng.choice(kids), signal.SIGKILL)
                        counts["child kills"] += 1
                    except ProcessLookupError:
                        pass

        threads = [threading.Thread(target=f, daemon=True) for f in (supervise, child_killer)]
        for t in threads:
            t.start()
        plan = [(0.2, "broker"), (0.4, "backend"), (0.55, "master"), (0.7, "broker")]
        deadline = time.monotonic() + (300 if a.short else 1200)
        while time.monotonic() < deadline:
            k = done()
            while plan and k >= plan[0][0] * n:
                _, what = plan.pop(0)
                print(f"{time.monotonic() - t0:6.1f}s  {k}/{n} results: {what}", flush=True)
                if what == "broker":
                    broker.restart(downtime=1.0)
                    counts["broker restarts"] += 1
                elif what == "backend":
                    results.restart(downtime=1.0)
                    counts["backend restarts"] += 1
                else:
                    worker["proc"].kill(signal.SIGKILL)
                    counts["master kills"] += 1
            if k >= n and not plan:
                break
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(5)
        took = time.monotonic() - t0
        metas = h.results(results.client(), ids)
        ok = sum(1 for i, t in enumerate(ids)
                 if metas.get(t, {}).get("status") == "SUCCESS" and metas[t].get("result") == i)
        wrong = sum(1 for t in ids if t in metas and metas[t].get("status") != "SUCCESS")
        lost = n - ok - wrong
        runs = h.runs_in_log(worker["proc"].log(), "cworker.sleep")
        dup = sum(1 for t in ids if runs.get(t, 0) > 1)
        left = None
        if a.broker == "redis":
            left = h.redis_leftovers(broker.client())
        print(f"\nchaos on {a.broker}: {took:.0f}s, " +
              ", ".join(f"{v} {k}" for k, v in counts.items()))
        print(f"sent {n}  succeeded {ok}  failed/other {wrong}  lost {lost}  "
              f"ran twice {dup}" + ("" if left is None else f"  left in broker {left}"))
        bad = lost or wrong or left or counts["master kills"] != 1 or counts["broker restarts"] != 2
        print("RESULT:", "FAIL" if bad else "OK")
        return 1 if bad else 0
    finally:
        h.teardown([w] + servers, a.keep, d, cleanup)


if __name__ == "__main__":
    sys.exit(main())
