#!/usr/bin/python3
"""Soft/hard time-limit enforcement error and ETA precision of cworker.

Usage: /usr/bin/python3 bench/limits_bench.py [build/src/cworker] [N] [--cworker PATH] [--short]
(the executable defaults to $CWORKER_EXE, then build/src/cworker; N to 5, 2 with --short)

Starts a throwaway redis-server on a free loopback port and cworker on it, then N times:
a cworker.sleep(10) with soft_time_limit=0.5, a cworker.spin(10) with time_limit=1 and a
cworker.noop with an ETA 1 s ahead. The error is the time from the "received" log line to the
"Soft/Hard time limit exceeded" line minus the limit (log timestamps: 1 ms resolution); the ETA
lag is the stored date_done minus the ETA.
"""
import argparse, datetime, os, re, signal, socket, subprocess, tempfile, time
from celery import Celery
ap = argparse.ArgumentParser()
ap.add_argument("exe", nargs="?")
ap.add_argument("n", nargs="?", type=int)
ap.add_argument("--cworker")
ap.add_argument("--short", action="store_true", help="CI smoke: N = 2")
a = ap.parse_args()
exe = a.cworker or a.exe or os.environ.get("CWORKER_EXE") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "build", "src", "cworker")
n = a.n or (2 if a.short else 5)
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
d = tempfile.mkdtemp()
rs = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", d], stdout=subprocess.DEVNULL)
time.sleep(0.3)
url = f"redis://127.0.0.1:{port}/0"
log = open(f"{d}/w.log", "w")
w = subprocess.Popen([exe, "-b", url, "--result-backend", url, "-c", "2", "--diagnostic-tasks", "-l", "info"], stderr=log)
time.sleep(0.5)
app = Celery(broker=url, backend=url)
def t(line):
    m = re.match(r"\[(\S+ \S+),(\d+):", line)
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
soft, hard, eta = [], [], []
for i in range(n):
    r1 = app.send_task("cworker.sleep", args=[10], soft_time_limit=0.5)
    r2 = app.send_task("cworker.spin", args=[10], time_limit=1)
    for r in (r1, r2):
        try: r.get(timeout=10)
        except Exception: pass
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
    r3 = app.send_task("cworker.noop", eta=when); r3.get(timeout=10)
    done = datetime.datetime.fromisoformat(r3.backend.get_task_meta(r3.id)["date_done"]).replace(tzinfo=datetime.timezone.utc)
    eta.append((done - when).total_seconds())
    text = open(f"{d}/w.log").read()
    rec = lambda id_: t(re.search(rf".*\[{id_}\] received.*", text).group(0))
    soft.append(t(re.search(rf".*Soft time limit.*\[{r1.id}\].*", text).group(0)) - rec(r1.id) - 0.5)
    hard.append(t(re.search(rf".*Hard time limit.*\[{r2.id}\].*", text).group(0)) - rec(r2.id) - 1.0)
f = lambda xs: f"min {min(xs)*1000:.0f} ms, max {max(xs)*1000:.0f} ms, mean {sum(xs)/len(xs)*1000:.1f} ms"
print(f"soft limit error ({n}): {f(soft)}\nhard limit error ({n}): {f(hard)}\nETA lag, date_done - eta ({n}): {f(eta)}", flush=True)
w.send_signal(signal.SIGTERM); w.wait(); rs.terminate(); rs.wait()
os._exit(0)  # skip Celery's result-consumer teardown against the stopped redis
