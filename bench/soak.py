#!/usr/bin/python3
"""Soak run: a mixed load for a long time while the master's RSS, open fds and
children are sampled; every task must end in its exact expected state.

Every second a Python producer sends one batch: 20 noop, 10 echo, 10 add, 2 fail
(KeyError), 2 retry_until(2), 1 docconv.convert of a PDF (text), 1 ETA task
revoked before its time (ETA 30 s); every 5th second a soft time limit (sleep(2) with
soft_time_limit 0.3) and a hard one (spin(5) with time_limit 0.5, the child is
killed). cworker runs with -c 2 --max-tasks-per-child 50 (children recycled all
the time) and --diagnostic-tasks. Every INTERVAL seconds the master's VmRSS,
open fds and children are printed.

Pass: every task's stored state and value are the expected ones, nothing is left
in the broker, and after warm-up (the first fifth of the run) the master's RSS
grows by less than 10% and 2 MiB and its fd count by at most 2.

Usage: /usr/bin/python3 bench/soak.py [--seconds 3600] [--interval 10]
       [--broker redis|amqp] [--short] [--cworker PATH] [--valgrind]
--short: 60 s, samples every 5 s, ETA 10 s (the CI form). --valgrind: the master runs
under valgrind --leak-check=full (children are forked from it and exit with
_exit; their memory is not checked this way) and the leak summary is printed;
the RSS and fd checks are left out (valgrind's memory is in the RSS).
"""

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

PDF = os.path.join(h.REPO, "tests", "fuzz", "corpus_docconv", "text.pdf")


def send_batch(app, k, expect, eta):
    """One second's worth of tasks; expect[id] = (state, value or None to skip)."""
    def add(r, state, value=None):
        expect[r.id] = (state, value)
    for _ in range(20):
        add(app.send_task("cworker.noop"), "SUCCESS", ("eq", None))
    for i in range(10):
        add(app.send_task("cworker.echo", args=[{"k": k, "i": i}]), "SUCCESS",
            ("eq", {"k": k, "i": i}))
        add(app.send_task("cworker.add", args=[k, i]), "SUCCESS", ("eq", k + i))
    for _ in range(2):
        add(app.send_task("cworker.fail", args=["KeyError", "soak"]), "FAILURE",
            ("exc", "KeyError"))
        add(app.send_task("cworker.retry_until", args=[2]), "SUCCESS", ("eq", 2))
    add(app.send_task("docconv.convert", args=[PDF], kwargs={"format": "text"}), "SUCCESS",
        ("content", "text"))
    r = app.send_task("cworker.sleep", args=[0.01, k], countdown=eta)
    app.control.revoke(r.id)
    add(r, "REVOKED")
    if k % 5 == 0:
        add(app.send_task("cworker.sleep", args=[2, k], soft_time_limit=0.3), "FAILURE",
            ("exc", "SoftTimeLimitExceeded"))
        add(app.send_task("cworker.spin", args=[5], time_limit=0.5), "FAILURE",
            ("exc", "TimeLimitExceeded"))


def check(metas, expect):
    bad = []
    for tid, (state, want) in expect.items():
        m = metas.get(tid)
        if not m or m.get("status") != state:
            bad.append((tid, state, m and m.get("status")))
            continue
        if not want:
            continue
        kind, v = want
        res = m.get("result")
        if kind == "eq" and res != v:
            bad.append((tid, v, res))
        elif kind == "exc" and not (isinstance(res, dict) and res.get("exc_type") == v):
            bad.append((tid, v, res))
        elif kind == "content" and not (isinstance(res, dict) and res.get("content")):
            bad.append((tid, "content", str(res)[:80]))
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=3600)
    ap.add_argument("--interval", type=float, default=10)
    ap.add_argument("--broker", choices=("redis", "amqp"), default="redis")
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--cworker")
    ap.add_argument("--valgrind", action="store_true")
    ap.add_argument("--loglevel", default="warning")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    a = ap.parse_args()
    if a.short:
        a.seconds, a.interval = 60, 5
    exe = h.cworker_exe(a.cworker)
    d, cleanup = h.tmpdir("cw-soak-")
    servers, w = [], None
    try:
        results = h.Redis(d, "results")
        servers.append(results)
        broker = h.Redis(d, "broker") if a.broker == "redis" else h.Rabbit(d)
        servers.append(broker)
        argv = [exe, "-b", broker.url(), "--result-backend", results.url(), "-c", "2",
                "--max-tasks-per-child", "50", "--diagnostic-tasks", "-n", "soak@%h",
                "--docconv-roots", os.path.dirname(PDF),
                "-l", a.loglevel]
        if a.valgrind:
            argv = ["valgrind", "--leak-check=full", "--show-leak-kinds=definite,indirect",
                    "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
                    "--child-silent-after-fork=yes", "--trace-children=no",
                    f"--log-file={d}/valgrind.log"] + argv
        # the worker sets OMP_THREAD_LIMIT=1 itself before it loads cworker-docconv.so; set
        # here too so a valgrind run reads the same value from its first instruction
        env = dict(os.environ, OMP_THREAD_LIMIT="1") if a.valgrind else None
        w = h.Proc(argv, os.path.join(d, "cworker.log"), env=env)
        rc = results.client()
        h.wait_for(lambda: broker.client().client_list() and len(
            broker.client().client_list()) >= 2 if a.broker == "redis" else True,
            240 if a.valgrind else 60, "worker connected")
        time.sleep(3 if a.valgrind else 1)
        app = h.producer(broker.url(), results.url())
        # revokes are broadcasts: one sent before the worker's pidbox queue exists is
        # lost (as with Celery), so the load starts once the worker answers a ping
        h.wait_for(lambda: app.control.ping(timeout=1.0), 240 if a.valgrind else 60,
                   "worker answering ping")
        expect, samples = {}, []
        t0 = time.monotonic()
        next_sample, k = t0, 0
        print(f"{'t (s)':>7} {'RSS KiB':>8} {'fds':>4} {'children':>8} {'sent':>8} {'done':>8}")
        while time.monotonic() - t0 < a.seconds:
            send_batch(app, k, expect, 10 if a.short else 30)
            k += 1
            now = time.monotonic()
            if now >= next_sample:
                s = (now - t0, h.rss_kib(w.pid), h.nfds(w.pid), len(h.children_of(w.pid)),
                     len(expect), rc.dbsize())
                samples.append(s)
                print(f"{s[0]:7.0f} {s[1]:8d} {s[2]:4d} {s[3]:8d} {s[4]:8d} {s[5]:8d}",
                      flush=True)
                next_sample += a.interval
            time.sleep(max(0.0, t0 + k - time.monotonic()))
        # everything sent: wait for the last results (ETA-revoked ones are stored
        # when their ETA comes)
        h.wait_for(lambda: rc.dbsize() >= len(expect), 120, "every result", interval=1)
        metas = h.results(rc, expect)
        bad = check(metas, expect)
        left = 0
        if a.broker == "redis":
            left = h.redis_leftovers(broker.client())
        warm = [s for s in samples if s[0] >= a.seconds / 5]
        grew_rss = grew_fd = 0
        if len(warm) >= 2:
            base, last = warm[0], max(warm[-3:], key=lambda s: s[1])
            grew_rss = last[1] - base[1]
            grew_fd = max(s[2] for s in warm[-3:]) - base[2]
        rss_ok = grew_rss < max(2048, warm[0][1] // 10) if warm else False
        fd_ok = grew_fd <= 2
        if a.valgrind:          # valgrind's own memory: RSS says nothing about cworker's
            rss_ok = fd_ok = True
        print(f"\nsoak on {a.broker}, {a.seconds}s: {len(expect)} tasks, "
              f"{len(expect) - len(bad)} in their expected state, {len(bad)} not; "
              f"left in broker {left}")
        if warm:
            print(f"master after warm-up: RSS {warm[0][1]} -> {warm[-1][1]} KiB "
                  f"(growth {grew_rss} KiB), fds {warm[0][2]} -> {warm[-1][2]}, "
                  f"children {warm[-1][3]}")
        for b in bad[:10]:
            print("  unexpected:", b)
        with open(os.path.join(d, "unexpected.txt"), "w") as f:
            f.write("".join(f"{b}\n" for b in bad))
        vg_ok = True
        if a.valgrind:
            w.stop(timeout=60)
            w = None
            vlog = open(os.path.join(d, "valgrind.log")).read()
            summary = re.findall(r"(definitely lost: .*|indirectly lost: .*|"
                                 r"ERROR SUMMARY: .*)", vlog)
            print("valgrind (master):", "; ".join(summary[-3:]))
            vg_ok = bool(re.search(r"definitely lost: 0 bytes", vlog) or
                         "All heap blocks were freed" in vlog)
        ok = not bad and not left and rss_ok and fd_ok and vg_ok
        print("RESULT:", "OK" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        h.teardown([w] + servers, a.keep, d, cleanup)


if __name__ == "__main__":
    sys.exit(main())
