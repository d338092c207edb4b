"""Shared pieces of the long-run scripts (soak.py, chaos.py): servers on free
loopback ports started and stopped by PID, a cworker process, /proc sampling,
and reading results and execution counts back.  Debian's /usr/bin/python3."""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

try:
    import redis
    from celery import Celery
except ImportError as e:  # pragma: no cover
    sys.exit(f"needs Debian's python3-celery and python3-redis: run with /usr/bin/python3 ({e})")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what, interval=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def _parents():
    """pid -> parent pid of every live process (one pass over /proc)."""
    out = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            out[int(e)] = int(st[st.rfind(")") + 2:].split()[1])
    return out


def stop_worker(proc):
    """Stop a worker started with subprocess.Popen: warm shutdown (SIGTERM); after 5 s a cold
    one (SIGQUIT), after 10 more SIGKILL.  The benches stop idle workers, and stock Celery
    5.2.6 now and then hangs after logging "Warm shutdown" with an idle prefork pool (until
    SIGQUIT)."""
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGQUIT, 10)):
        proc.send_signal(sig)
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait()


def children_of(pid):
    return [c for c, p in _parents().items() if p == pid]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ticks(pid):
    """utime + stime of a process and all its descendants, in clock ticks."""
    total = 0
    for p in [pid] + descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total


def descendants(pid):
    kids = {}
    for c, p in _parents().items():
        kids.setdefault(p, []).append(c)
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def nfds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Proc:
    """A process in its own session, its output appended to a log file."""

    def __init__(self, argv, log, env=None):
        self.argv, self.logpath, self.env = argv, log, env
        self.start()

    def start(self):
        self.logf = open(self.logpath, "ab")
        self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                  stderr=subprocess.STDOUT, env=self.env,
                                  start_new_session=True)
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def kill(self, sig=signal.SIGKILL):
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout=20):
        kids = children_of(self.pid)
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        for k in kids + ([self.pid] if self.alive() else []):
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.logf.close()

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")


class Redis:
    """redis-server with an fsync-always AOF (a clean restart loses no write), or
    with no persistence at all (aof=False, for throughput runs)."""

    def __init__(self, d, name, aof=True):
        self.dir = os.path.join(d, name)
        os.makedirs(self.dir)
        self.port = free_port()
        self.aof = aof
        self.proc = None
        self.start()

    def start(self):
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--protected-mode", "no"]
        argv += (["--appendonly", "yes", "--appendfsync", "always"] if self.aof
                 else ["--appendonly", "no"])
        if self.proc:
            self.proc.argv = argv
            self.proc.start()
        else:
            self.proc = Proc(argv, os.path.join(self.dir, "redis.log"))
        wait_for(lambda: self.client().ping(), 20, "redis up")

    def restart(self, downtime=1.0):
        self.proc.stop()
        time.sleep(downtime)
        self.start()

    def url(self, db=0):
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db=0):
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=10)

    def stop(self):
        self.proc.stop()


class Rabbit:
    """A RabbitMQ node of its own (node name, ports, data dir), no plugins."""

    def __init__(self, d, name="rabbit"):
        self.dir = os.path.join(d, name)
        os.makedirs(self.dir)
        self.port, self.dist, self.epmd = free_port(), free_port(), free_port()
        self.node = f"cwbench{self.port}@localhost"
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write(f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
                    "log.console = true\nlog.console.level = warning\nlog.file = false\n")
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        self.env = dict(os.environ, HOME=self.dir, RABBITMQ_NODENAME=self.node,
                        RABBITMQ_DIST_PORT=str(self.dist), ERL_EPMD_PORT=str(self.epmd),
                        RABBITMQ_MNESIA_BASE=os.path.join(self.dir, "mnesia"),
                        RABBITMQ_LOG_BASE=os.path.join(self.dir, "log"),
                        RABBITMQ_CONFIG_FILE=os.path.join(self.dir, "rabbitmq"),
                        RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.dir, "enabled_plugins"),
                        RABBITMQ_PLUGINS_EXPAND_DIR=os.path.join(self.dir, "plugins-expand"),
                        RABBITMQ_PID_FILE=os.path.join(self.dir, "rabbit.pid"))
        self.proc = None
        self.start()

    def start(self):
        if self.proc:
            self.proc.start()
        else:
            self.proc = Proc(["/usr/lib/rabbitmq/bin/rabbitmq-server"], os.path.join(self.dir, "server.log"),
                             env=self.env)
        wait_for(self._up, 120, "rabbitmq up", interval=0.3)

    def _up(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def restart(self, downtime=1.0):
        self.proc.stop(timeout=60)
        time.sleep(downtime)
        self.start()

    def url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def stop(self):
        self.proc.stop(timeout=60)
        # epmd daemonizes away from the node: find ours by its port
        for st in glob.glob("/proc/[0-9]*/cmdline"):
            try:
                with open(st, "rb") as f:
                    cmd = f.read().split(b"\0")
                if not cmd or not cmd[0].endswith(b"epmd"):
                    continue
                with open(st.replace("cmdline", "environ"), "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if f"ERL_EPMD_PORT={self.epmd}".encode() in env:
                os.kill(int(st.split("/")[2]), signal.SIGKILL)


def cworker_exe(path=None):
    exe = path or os.environ.get("CWORKER_EXE") or os.path.join(REPO, "build", "src", "cworker")
    if not os.access(exe, os.X_OK):
        sys.exit(f"no cworker at {exe}: meson setup build && meson compile -C build")
    return exe


def producer(broker_url, backend_url):
    app = Celery("cw_bench", broker=broker_url, backend=backend_url, set_as_current=False)
    app.conf.task_serializer = "json"
    app.conf.result_serializer = "json"
    app.conf.accept_content = ["json"]
    app.conf.broker_connection_retry = True
    app.conf.broker_connection_max_retries = 100
    return app


def results(client, ids):
    """{task id: meta dict} for the ids whose result is stored."""
    out = {}
    ids = list(ids)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for tid, raw in zip(chunk, client.mget([f"celery-task-meta-{t}" for t in chunk])):
            if raw:
                out[tid] = json.loads(raw)
    return out


def runs_in_log(text, task):
    """{task id: times the worker logged it as succeeded} from a cworker log."""
    out = {}
    for m in re.finditer(rf"Task {re.escape(task)}\[([0-9a-f-]+)\] succeeded", text):
        out[m.group(1)] = out.get(m.group(1), 0) + 1
    return out


def tmpdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    return d, lambda: shutil.rmtree(d, ignore_errors=True)


def close_app(app):
    """Close a producer's connections and its result consumer's pub/sub, so that
    AsyncResult finalizers do not reach for a Redis that is already stopped."""
    rc = getattr(app.backend, "result_consumer", None)
    if rc is not None and getattr(rc, "_pubsub", None) is not None:
        try:
            rc._pubsub.close()
        except Exception:
            pass
        rc._pubsub = None
    app.close()


def teardown(things, keep, d, cleanup):
    """Stop each process or server (None skipped), then keep or remove the temp dir."""
    for t in things:
        if t is not None:
            t.stop()
    if keep:
        print("logs in", d)
    else:
        cleanup()


def redis_leftovers(c, queue="celery", within=30):
    """Messages still in a Redis broker's queue or `unacked` hash once it had `within`
    seconds to drain (0 = nothing lost in the broker, nothing stuck unacknowledged)."""
    def left():
        return c.llen(queue) + c.hlen("unacked")
    try:
        wait_for(lambda: left() == 0, within, "queue and unacked empty")
    except RuntimeError:
        pass
    return left()
