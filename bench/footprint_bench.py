#!/usr/bin/python3
"""Idle footprint and start-up time of cworker vs the stock Python Celery worker.

Each worker in turn, on one fresh redis-server (free loopback port, temp dir, no
persistence), `-c 2 --prefetch-multiplier 1 -P prefork`, broker and results in that Redis,
on an empty queue:

  * ready: from just before exec to "accepting tasks".  cworker: its READY=1 datagram on
    NOTIFY_SOCKET (sent once the broker is consuming; this includes the OMP_THREAD_LIMIT
    re-exec the worker does at start).  Python: the first blocked BRPOP in CLIENT LIST
    (polled every 2 ms).  Median of --runs starts.
  * memory, 1 s after ready (idle): VmRSS and PSS (/proc/PID/smaps_rollup) of the master
    and of each child, and the sums.  RSS counts every shared page in every process that
    maps it, PSS shares it among them: the sum of PSS is what the worker costs the machine.
  * --maps: for the last cworker run, the mappings that hold most RSS in the master and in
    one child (from /proc/PID/smaps), to see where memory goes.

Usage: /usr/bin/python3 bench/footprint_bench.py [--cworker build/src/cworker]
       [--only cworker|python] [--runs 5] [--maps] [--json FILE] [--short]
--short: one start per worker (the CI smoke).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PYAPP_DIR = os.path.join(REPO, "tests", "integration")
PY = "/usr/bin/python3"
sys.path.insert(0, HERE)

try:
    import redis
    from noop_bench import Proc, descendants, free_port, waiting_consumers
except ImportError as e:
    sys.exit(f"footprint_bench: needs Debian's python3-redis/python3-celery; run with {PY} ({e})")


def rollup(pid):
    """{'Rss': kib, 'Pss': kib, ...} from /proc/PID/smaps_rollup."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return out


def top_mappings(pid, n=12):
    """The n mappings (grouped by file or [heap]/[stack]/anon) with the most RSS."""
    groups = {}
    cur = None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                parts = line.split()
                if not parts:
                    continue
                if "-" in parts[0] and not parts[0].endswith(":"):
                    cur = parts[5] if len(parts) > 5 else "[anon]"
                    groups.setdefault(cur, {"Rss": 0, "Pss": 0, "Private_Dirty": 0})
                elif parts[0].rstrip(":") in ("Rss", "Pss", "Private_Dirty") and cur:
                    groups[cur][parts[0].rstrip(":")] += int(parts[1])
    except OSError:
        return []
    return sorted(groups.items(), key=lambda kv: -kv[1]["Rss"])[:n]


def nmaps_libs(pid):
    libs = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                p = line.split()
                if len(p) > 5 and ".so" in p[5]:
                    libs.add(p[5])
    except OSError:
        pass
    return len(libs)


def wait_ready_notify(sock, proc, timeout):
    sock.settimeout(0.05)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            msg = sock.recv(4096).decode(errors="replace")
        except socket.timeout:
            if proc.p.poll() is not None:
                raise RuntimeError(f"worker exited ({proc.p.returncode}):\n{proc.tail()}")
            continue
        if "READY=1" in msg.split("\n"):
            return time.monotonic()
    raise RuntimeError(f"no READY=1 within {timeout}s:\n{proc.tail()}")


def wait_ready_brpop(r, proc, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if waiting_consumers(r):  # the Python worker: its first BRPOP
            return time.monotonic()
        if proc.p.poll() is not None:
            raise RuntimeError(f"worker exited ({proc.p.returncode}):\n{proc.tail()}")
        time.sleep(0.002)
    raise RuntimeError(f"worker not consuming within {timeout}s:\n{proc.tail()}")


def measure(kind, argv, env, cwd, r, tmp, maps):
    r.flushall()
    notify = None
    if kind == "cworker":
        path = os.path.join(tmp, "notify.sock")
        if os.path.exists(path):
            os.unlink(path)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(path)
        env = dict(env, NOTIFY_SOCKET=path)
    t0 = time.monotonic()
    proc = Proc(argv, os.path.join(tmp, f"{kind.replace(' ', '_')}.log"), env=env, cwd=cwd)
    try:
        if notify:
            t1 = wait_ready_notify(notify, proc, 60)
        else:
            t1 = wait_ready_brpop(r, proc, 60)
        time.sleep(1.0)  # idle: children started and settled
        kids = sorted(descendants(proc.pid))
        m = rollup(proc.pid)
        ks = [rollup(k) for k in kids]
        res = {"worker": kind, "ready_ms": (t1 - t0) * 1000,
               "master_rss": m.get("Rss", 0), "master_pss": m.get("Pss", 0),
               "master_libs": nmaps_libs(proc.pid),
               "children_rss": [k.get("Rss", 0) for k in ks],
               "children_pss": [k.get("Pss", 0) for k in ks]}
        res["total_rss"] = res["master_rss"] + sum(res["children_rss"])
        res["total_pss"] = res["master_pss"] + sum(res["children_pss"])
        if maps:
            res["maps"] = {"master": top_mappings(proc.pid),
                           "child": top_mappings(kids[0]) if kids else []}
        return res
    finally:
        proc.stop()
        if notify:
            notify.close()


def mib(kib):
    return kib / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cworker", default=os.environ.get("CWORKER_EXE",
                                                        os.path.join(REPO, "build/src/cworker")))
    ap.add_argument("-c", "--concurrency", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5, help="starts per worker (median; default 5)")
    ap.add_argument("--only", choices=["cworker", "python"])
    ap.add_argument("--maps", action="store_true", help="show the biggest mappings of cworker")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--short", action="store_true", help="CI smoke: one start per worker")
    a = ap.parse_args()
    if a.short:
        a.runs = 1

    tmp = tempfile.mkdtemp(prefix="cworker-footprint.")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    rs = Proc([shutil.which("redis-server") or "redis-server", "--port", str(port),
               "--bind", "127.0.0.1", "--dir", tmp, "--save", "", "--appendonly", "no",
               "--daemonize", "no"], os.path.join(tmp, "redis.log"))
    summary = []
    try:
        r = redis.Redis(port=port)
        for _ in range(100):
            try:
                if r.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        queue = "footprint"
        c = str(a.concurrency)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CELERY_") and k != "OMP_THREAD_LIMIT"}
        runs = []
        if a.only in (None, "cworker"):
            if not os.access(a.cworker, os.X_OK):
                sys.exit(f"footprint_bench: no cworker binary at {a.cworker}")
            runs.append(("cworker", [a.cworker, "-b", url, "--result-backend", url, "-Q", queue,
                                     "-c", c, "--prefetch-multiplier", "1", "-P", "prefork",
                                     "-l", "warning"], env, None))
        if a.only in (None, "python"):
            penv = dict(env, CW_TEST_BROKER=url, CW_TEST_BACKEND=url, PYTHONPATH=PYAPP_DIR,
                        PYTHONDONTWRITEBYTECODE="1")
            runs.append(("python celery", [PY, "-m", "celery", "-A", "cw_pyworker_app", "worker",
                                           "-Q", queue, "-c", c, "--prefetch-multiplier", "1",
                                           "-P", "prefork", "-l", "warning", "--without-gossip",
                                           "--without-mingle", "--without-heartbeat"],
                         penv, tmp))
        for kind, argv, env_, cwd in runs:
            print(f"measuring {kind} ({a.runs} starts) ...", flush=True)
            rs_ = [measure(kind, argv, env_, cwd, r, tmp, a.maps and i == a.runs - 1)
                   for i in range(a.runs)]
            med = dict(rs_[-1])
            for k in ("ready_ms", "master_rss", "master_pss", "total_rss", "total_pss"):
                med[k] = statistics.median(x[k] for x in rs_)
            med["ready_ms_all"] = [round(x["ready_ms"], 1) for x in rs_]
            summary.append(med)
    finally:
        rs.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"idle, -c {a.concurrency}, Redis broker + results; memory in MiB (median of "
          f"{a.runs} starts; children from the last start)")
    hdr = (f"{'worker':<14} {'ready ms':>9} {'master RSS':>11} {'master PSS':>11} "
           f"{'child RSS':>16} {'child PSS':>16} {'total RSS':>10} {'total PSS':>10} {'libs':>5}")
    print(hdr)
    print("-" * len(hdr))
    for x in summary:
        crss = "/".join(f"{mib(v):.1f}" for v in x["children_rss"])
        cpss = "/".join(f"{mib(v):.1f}" for v in x["children_pss"])
        print(f"{x['worker']:<14} {x['ready_ms']:>9.1f} {mib(x['master_rss']):>11.1f} "
              f"{mib(x['master_pss']):>11.1f} {crss:>16} {cpss:>16} "
              f"{mib(x['total_rss']):>10.1f} {mib(x['total_pss']):>10.1f} {x['master_libs']:>5}")
    if len(summary) == 2:
        cw, py = summary
        print(f"\ncworker / python: total RSS x{cw['total_rss'] / py['total_rss']:.3f}, "
              f"total PSS x{cw['total_pss'] / py['total_pss']:.3f}, "
              f"ready x{cw['ready_ms'] / py['ready_ms']:.3f}")
    for x in summary:
        if "maps" in x:
            for who, rows in x["maps"].items():
                print(f"\n{x['worker']} {who}: biggest mappings (KiB)")
                print(f"  {'Rss':>6} {'Pss':>6} {'PrivDirty':>9}  mapping")
                for name, v in rows:
                    print(f"  {v['Rss']:>6} {v['Pss']:>6} {v['Private_Dirty']:>9}  {name}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
