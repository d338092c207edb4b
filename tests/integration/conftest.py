"""Fixtures for cworker's integration tests.

Everything here runs real processes on free loopback ports: redis-server in a
temporary directory, the cworker binary named by ``CWORKER_EXE``, and stock
Python Celery workers (Debian's python3-celery) for mixed-deployment tests.
Every process is tracked by PID and killed by PID in teardown, even when the
test fails; the logs of the processes a failed test used are attached to its
report.

Run with Debian's interpreter (the pyenv python3 cannot see python3-celery):

    CWORKER_EXE=build/src/cworker /usr/bin/python3 -m pytest tests/integration
"""

import atexit
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

try:
    import redis as redis_py
    from celery import Celery
except ImportError as e:  # pragma: no cover - reported by pytest_collection
    redis_py = None
    Celery = None
    _IMPORT_ERROR = str(e)
else:
    _IMPORT_ERROR = None

PYTHON = "/usr/bin/python3"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
READY_TIMEOUT = float(os.environ.get("CW_TEST_READY_TIMEOUT", "20"))
# Sanitizer builds are slower; scale every wait by this factor.
SLOW = float(os.environ.get("CW_TEST_SLOW", "1"))

SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",           # UBSan
    "WARNING: ThreadSanitizer",
)


def _find_exe():
    exe = os.environ.get("CWORKER_EXE")
    if exe:
        return exe if os.access(exe, os.X_OK) else None
    default = os.path.join(REPO, "build", "src", "cworker")
    return default if os.access(default, os.X_OK) else None


CWORKER_EXE = _find_exe()


def need_cworker():
    if CWORKER_EXE is None:
        where = os.environ.get("CWORKER_EXE")
        pytest.skip("cworker binary not available: "
                    + (f"CWORKER_EXE={where} is not executable" if where else
                       "set CWORKER_EXE (meson test sets it) or build build/src/cworker"))


# ---------------------------------------------------------------------------
# process bookkeeping
# ---------------------------------------------------------------------------

_LIVE = []          # ManagedProcess objects that are running right now


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid):
    """PIDs of every live descendant of pid (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the comm field may contain spaces and parens; ppid follows the last ')'
        rest = stat[stat.rfind(")") + 2:].split()
        if len(rest) < 2:
            continue
        if rest[0] == "Z":
            continue
        children.setdefault(int(rest[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def proc_ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2:].split()[1])


def pid_gone(pid):
    """True once pid has exited: no /proc entry, or a zombie not reaped yet (a daemon
    such as the postmaster is reparented to PID 1, which here reaps it ~1.5 s late)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:].split()[0] in ("Z", "X")


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_for(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a truthy value; return it or raise."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout * SLOW:.1f}s waiting for {what}")
        time.sleep(interval)


class ManagedProcess:
    """A child process whose stdout+stderr go to a log file; killed by PID."""

    def __init__(self, name, argv, log_path, env=None, cwd=None):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._logf = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.known_children = set()
        _LIVE.append(self)

    # -- log helpers --------------------------------------------------------
    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, offset):
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def wait_log(self, pattern, timeout=10, since=0):
        """Wait until regex pattern matches the log (from byte offset since)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout * SLOW
        while True:
            text = self.log_since(since)
            m = rx.search(text)
            if m:
                return m
            if self.proc.poll() is not None:
                text = self.log_since(since)
                m = rx.search(text)
                if m:
                    return m
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode} before logging "
                    f"/{pattern}/; log tail:\n{tail(self.log())}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: /{pattern}/ not logged within "
                                     f"{timeout * SLOW:.1f}s; log tail:\n{tail(self.log())}")
            time.sleep(0.05)

    # -- lifetime -----------------------------------------------------------
    def alive(self):
        return self.proc.poll() is None

    def children(self):
        kids = descendants(self.pid) if self.alive() else []
        self.known_children.update(kids)
        return kids

    def send_signal(self, sig):
        if self.alive():
            self.children()
            os.kill(self.pid, sig)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Signal, wait, then SIGKILL the process and every descendant by PID.

        Returns the exit status (negative = killed by that signal)."""
        if self.alive():
            self.children()
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            if self.wait(timeout) is None:
                self.kill()
        self.kill()
        return self.proc.returncode

    def kill(self):
        """SIGKILL the process and every descendant we ever saw, by PID."""
        pids = set(self.known_children)
        if self.alive():
            pids.update(descendants(self.pid))
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in pids:
            # only kill it if it is still one of ours (child or orphan of ours)
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        if self in _LIVE:
            _LIVE.remove(self)
        if not self._logf.closed:
            self._logf.close()
        return self.proc.returncode


def tail(text, lines=120):
    parts = text.splitlines()
    return "\n".join(parts[-lines:])


def sanitizer_report(text):
    for pat in SANITIZER_PATTERNS:
        i = text.find(pat)
        if i >= 0:
            return text[max(0, i - 200): i + 4000]
    return None


# ---------------------------------------------------------------------------
# attach logs of the processes a failing test used to its report
# ---------------------------------------------------------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed and rep.when in ("call", "setup"):
        for p in list(_LIVE) + list(getattr(item, "_cw_stopped", [])):
            rep.sections.append((f"log of {p.name} (pid {p.pid})", tail(p.log(), 300)))


# ---------------------------------------------------------------------------
# redis-server
# ---------------------------------------------------------------------------

class RedisServer:
    """redis-server on a free loopback port in its own directory."""

    def __init__(self, directory, aof=False, password=None, port=None, name="redis"):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.aof = aof
        self.password = password
        self.port = port or free_port()
        self.name = name
        self.mp = None
        self.start()

    def argv(self):
        a = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--save", "", "--daemonize", "no",
             "--protected-mode", "no", "--loglevel", "notice",
             "--databases", "16"]
        if self.aof:
            a += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            a += ["--appendonly", "no"]
        if self.password:
            a += ["--requirepass", self.password]
        return a

    def start(self):
        self.mp = ManagedProcess(self.name, self.argv(), os.path.join(self.dir, "redis.log"))
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return
            except redis_py.exceptions.ConnectionError:
                pass
            except redis_py.exceptions.BusyLoadingError:
                pass
            if not self.mp.alive():
                raise RuntimeError(f"redis-server exited: {self.mp.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not answering: {self.mp.log()}")
            time.sleep(0.05)

    def stop(self):
        if self.mp:
            self.mp.stop(signal.SIGTERM, timeout=10)

    def restart(self, downtime=0.0):
        """Stop (clean shutdown, AOF flushed) and start again on the same port."""
        self.stop()
        if downtime:
            time.sleep(downtime)
        self.start()

    def url(self, db=0, password=None):
        pw = password if password is not None else self.password
        auth = f":{pw}@" if pw else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    # the broker interface shared with AmqpBroker (see the `broker` fixture)
    kind = "redis"

    def result_url(self, db=0):
        return self.url(db)

    def queue_len(self, queue="celery"):
        c = self.client()
        try:
            return queue_len(c, queue)
        finally:
            c.close()

    def drained(self, queues=("celery",)):
        c = self.client()
        try:
            return drained(c, queues)
        finally:
            c.close()

    def unacked(self, queue="celery"):
        """Messages delivered and not acknowledged (kombu's `unacked` hash)."""
        c = self.client()
        try:
            return c.hlen("unacked")
        finally:
            c.close()

    def client(self, db=0):
        return redis_py.Redis(host="127.0.0.1", port=self.port, db=db,
                              password=self.password, socket_timeout=10)


@pytest.fixture
def redis_factory(tmp_path):
    servers = []

    def make(aof=False, password=None, name=None):
        n = len(servers)
        srv = RedisServer(str(tmp_path / f"redis{n}"), aof=aof, password=password,
                          name=name or f"redis{n}")
        servers.append(srv)
        return srv

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def redis_server(redis_factory):
    if _IMPORT_ERROR:
        pytest.skip(f"/usr/bin/python3 lacks a dependency: {_IMPORT_ERROR}")
    return redis_factory()


@pytest.fixture
def rdb(redis_server):
    """redis-py client for db 0 of redis_server."""
    c = redis_server.client()
    yield c
    c.close()


# ---------------------------------------------------------------------------
# cworker
# ---------------------------------------------------------------------------

def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CELERY_") and not k.startswith("CW_TEST_")}
    if extra:
        env.update(extra)
    return env


class CWorker(ManagedProcess):
    def ready(self, timeout=READY_TIMEOUT):
        self.wait_log(r"ready\.", timeout=timeout)
        return self


def _default_args(args, redis, backend):
    args = list(args)
    flags = set(a.split("=", 1)[0] for a in args)
    out = []
    if redis is not None and not ({"-b", "--broker"} & flags):
        out += ["-b", redis.url()]
    if backend and redis is not None and "--result-backend" not in flags:
        out += ["--result-backend", redis.result_url() if backend is True else backend]
    if not ({"-l", "--loglevel"} & flags):
        out += ["-l", "info"]
    return out + args


@pytest.fixture
def cworker_factory(request, tmp_path, redis_factory):
    """start(args, redis=..., backend=True, env=None, wait_ready=True) -> CWorker.

    Adds -b/--result-backend for `redis` (a RedisServer) and `-l info` unless the
    caller passes them. Teardown: SIGTERM, wait, SIGKILL by PID (children too);
    a sanitizer report in any worker's log fails the test."""
    need_cworker()
    workers = []

    def start(args=(), redis=None, backend=True, env=None, wait_ready=True,
              name=None, raw=False):
        argv = [CWORKER_EXE] + (list(args) if raw else _default_args(args, redis, backend))
        n = len(workers)
        w = CWorker(name or f"cworker{n}", argv, str(tmp_path / f"cworker{n}.log"),
                    env=clean_env(env))
        workers.append(w)
        if wait_ready:
            w.ready()
        return w

    yield start
    stopped = []
    for w in workers:
        w.stop(signal.SIGTERM, timeout=15)
        stopped.append(w)
    request.node._cw_stopped = stopped
    for w in workers:
        rep = sanitizer_report(w.log())
        if rep:
            pytest.fail(f"sanitizer report in {w.name}'s log:\n{rep}", pytrace=False)


def run_cworker(args, timeout=10, env=None):
    """Run the binary to completion (CLI tests); returns CompletedProcess."""
    need_cworker()
    p = subprocess.Popen([CWORKER_EXE] + list(args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=clean_env(env), start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout * SLOW)
    except subprocess.TimeoutExpired:
        kids = descendants(p.pid)
        p.kill()
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = p.communicate()
        raise AssertionError(f"cworker {' '.join(args)} still running after {timeout}s;"
                             f" stderr:\n{err.decode(errors='replace')}")
    return subprocess.CompletedProcess(p.args, p.returncode,
                                       out.decode("utf-8", "replace"),
                                       err.decode("utf-8", "replace"))


# ---------------------------------------------------------------------------
# Python side: producer app and stock Celery workers
# ---------------------------------------------------------------------------

class BrokerUrls:
    """Broker and result backend URLs in the shape pyworker_factory takes (for
    setups no broker fixture describes: TLS, Sentinel, cluster URL lists)."""

    def __init__(self, broker, backend):
        self.broker, self.backend = broker, backend

    def url(self, db=0):
        return self.broker

    def result_url(self, db=0):
        return self.backend


def make_app(broker_url, backend_url=None, protocol=2, **conf):
    app = Celery("cw_producer", broker=broker_url, backend=backend_url or broker_url,
                 set_as_current=False)
    app.conf.task_protocol = protocol
    app.conf.accept_content = ["json", "pickle", "yaml"]
    app.conf.result_accept_content = ["json"]
    app.conf.task_serializer = "json"
    app.conf.result_serializer = "json"
    app.conf.broker_connection_retry = True
    app.conf.broker_connection_max_retries = 3
    app.conf.redis_socket_timeout = 30
    for k, v in conf.items():
        setattr(app.conf, k, v)
    return app


def close_app(app):
    """Close the producer's connections; detach the result consumer's pub/sub so
    AsyncResult.__del__ does not try to reach a redis that is already gone."""
    try:
        rc = getattr(app.backend, "result_consumer", None)
        if rc is not None and getattr(rc, "_pubsub", None) is not None:
            try:
                rc._pubsub.close()
            finally:
                rc._pubsub = None
        app.close()
    except Exception:
        pass


@pytest.fixture
def app_factory(redis_factory):
    apps = []

    def make(redis, db=0, backend_db=None, **kw):
        app = make_app(redis.url(db), redis.result_url(db if backend_db is None else backend_db),
                       **kw)
        apps.append(app)
        return app

    yield make
    for a in apps:
        close_app(a)


@pytest.fixture
def app(app_factory, redis_server):
    return app_factory(redis_server)


PYAPP_MODULE = "cw_pyworker_app"


@pytest.fixture
def pyworker_factory(request, tmp_path, redis_factory):
    """Start a stock Python Celery worker (module cw_pyworker_app in this folder)
    that registers the cworker.* tasks in Python; returns a ManagedProcess."""
    if _IMPORT_ERROR:
        pytest.skip(f"/usr/bin/python3 lacks a dependency: {_IMPORT_ERROR}")
    workers = []

    def start(redis, queues="celery", pool="solo", concurrency=1, visibility_timeout=None,
              prefetch_multiplier=None, extra=(), wait_ready=True, name=None, db=0,
              backend=None, env=None):
        n = len(workers)
        extra_env = env
        env = clean_env({
            "CW_TEST_BROKER": redis.url(db),
            "CW_TEST_BACKEND": backend or redis.result_url(db),
            "PYTHONPATH": HERE,
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        if visibility_timeout is not None:
            env["CW_TEST_VISIBILITY_TIMEOUT"] = str(visibility_timeout)
        env.update(extra_env or {})
        argv = [PYTHON, "-m", "celery", "-A", PYAPP_MODULE, "worker",
                "-P", pool, "-c", str(concurrency), "-Q", queues, "-l", "info",
                "-n", name or f"py{n}-{uuid.uuid4().hex[:6]}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]
        if prefetch_multiplier is not None:
            argv += ["--prefetch-multiplier", str(prefetch_multiplier)]
        argv += list(extra)
        w = ManagedProcess(f"pyworker{n}", argv, str(tmp_path / f"pyworker{n}.log"),
                           env=env, cwd=str(tmp_path))
        workers.append(w)
        if wait_ready:
            w.wait_log(r"ready\.", timeout=60)
        return w

    yield start
    for w in workers:
        w.stop(signal.SIGTERM, timeout=15)
    request.node._cw_stopped = list(getattr(request.node, "_cw_stopped", [])) + workers


# ---------------------------------------------------------------------------
# Redis / kombu helpers
# ---------------------------------------------------------------------------

PRIORITY_SEP = "\x06\x16"


def queue_len(client, queue="celery"):
    """Messages waiting in a queue, over all kombu priority sub-lists."""
    total = client.llen(queue)
    for pri in (3, 6, 9):
        total += client.llen(f"{queue}{PRIORITY_SEP}{pri}")
    return total


def unacked_count(client):
    return client.hlen("unacked") + client.zcard("unacked_index")


def drained(client, queues=("celery",)):
    return all(queue_len(client, q) == 0 for q in queues) and unacked_count(client) == 0


def meta(client, task_id):
    raw = client.get(f"celery-task-meta-{task_id}")
    return json.loads(raw) if raw is not None else None


def capture_envelope(app, client, name="cworker.echo", args=(1,), kwargs=None, **opts):
    """Publish through kombu to an unconsumed queue and pop the raw envelope back:
    the exact bytes a Python producer puts on the list."""
    q = "cwcapture" + uuid.uuid4().hex[:8]
    r = app.send_task(name, args=list(args), kwargs=kwargs or {}, queue=q, **opts)
    raw = client.rpop(q)
    assert raw is not None, "captured message not found"
    client.delete(f"_kombu.binding.{q}")
    return r.id, json.loads(raw)


def envelope_body(env):
    return base64.b64decode(env["body"])


def set_envelope_body(env, body_bytes):
    env["body"] = base64.b64encode(body_bytes).decode()
    return env


class RedisMonitor(ManagedProcess):
    """`redis-cli monitor` into a file: the exact order of commands the server ran."""

    def __init__(self, redis, log_path):
        argv = ["redis-cli", "-p", str(redis.port)]
        if redis.password:
            argv += ["--no-auth-warning", "-a", redis.password]
        super().__init__("redis-monitor", argv + ["monitor"], log_path)
        wait_for(lambda: "OK" in self.log(), 5, what="redis-cli monitor")

    def commands(self):
        out = []
        for line in self.log().splitlines():
            m = re.match(r'^[\d.]+ \[\d+ [^\]]+\] (.*)$', line)
            if m:
                out.append(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1)))
        return out


@pytest.fixture
def redis_monitor(tmp_path):
    mons = []

    def start(redis):
        m = RedisMonitor(redis, str(tmp_path / f"monitor{len(mons)}.log"))
        mons.append(m)
        return m

    yield start
    for m in mons:
        m.stop(signal.SIGTERM, timeout=5)


# ---------------------------------------------------------------------------
# S3-compatible server (s3rver from tests/s3, with a SigV4 verifier in front)
# ---------------------------------------------------------------------------

S3_DIR = os.path.join(os.path.dirname(HERE), "s3")


class S3Server:
    bucket = "cw-test"
    access_key = secret_key = "S3RVER"   # s3rver's built-in account

    def __init__(self, tmp_path):
        self.dir = tmp_path / "s3"
        self.dir.mkdir()
        portfile = self.dir / "port"
        self.proc = ManagedProcess(
            "s3rver", ["node", os.path.join(S3_DIR, "server.js"),
                       os.path.join(S3_DIR, "node_modules", "s3rver"),
                       str(self.dir / "data"), str(portfile)],
            str(self.dir / "server.log"))
        wait_for(lambda: portfile.exists() and portfile.read_text().strip(), 20,
                 what="s3rver port")
        self.port = int(portfile.read_text())
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def env(self, secret=None):
        return {"AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": secret or self.secret_key}

    def stop(self):
        self.proc.stop(signal.SIGTERM, timeout=10)


@pytest.fixture
def s3_server(tmp_path):
    if not shutil.which("node") or not os.path.exists(
            os.path.join(S3_DIR, "node_modules", "s3rver", "package.json")):
        pytest.skip("s3rver not installed (npm ci --prefix tests/s3)")
    srv = S3Server(tmp_path)
    yield srv
    srv.stop()


# ---------------------------------------------------------------------------
# PostgreSQL (Debian's postgresql: initdb/pg_ctl in a temp dir, loopback only)
# ---------------------------------------------------------------------------

def _pg_bindir():
    import glob
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return dirs[-1] if dirs else None


_PG_TEMPLATE = None


class PgServer:
    """A throwaway PostgreSQL cluster. Run as the `postgres` user when we are root
    (initdb refuses root); stopped by pg_ctl, then by PID if it lingers."""

    def __init__(self, tmp_path):
        import pwd
        import tempfile
        self.bindir = _pg_bindir()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="cw-pg-")
        self.as_user = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = os.path.join(self.dir, "data")
        # initdb once per session; each server starts from a copy of that cluster
        global _PG_TEMPLATE
        if _PG_TEMPLATE is None:
            tdir = tempfile.mkdtemp(prefix="cw-pgtemplate-")
            atexit.register(shutil.rmtree, tdir, True)
            if self.as_user:
                os.chown(tdir, pw.pw_uid, pw.pw_gid)
            self._run(["initdb", "-D", os.path.join(tdir, "data"), "-A", "trust", "-U",
                       "postgres", "--no-sync", "-E", "UTF8"])
            _PG_TEMPLATE = os.path.join(tdir, "data")
        subprocess.run(["cp", "-a", _PG_TEMPLATE, self.data], check=True, timeout=60)
        self.start()

    def _run(self, argv, check=True):
        return subprocess.run(self.as_user + [os.path.join(self.bindir, argv[0])] + argv[1:],
                              capture_output=True, text=True, timeout=120, check=check)

    def start(self):
        self._run(["pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "-o",
                   f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                   "start"])
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())

    def stop(self, mode="fast"):
        self._run(["pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"], check=False)
        try:
            wait_for(lambda: pid_gone(self.pid), 10, what="postgres gone")
        except AssertionError:
            os.kill(self.pid, signal.SIGKILL)

    def url(self, db="postgres"):
        return f"db+postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def sql(self, query):
        import psycopg2
        with psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                              dbname="postgres") as conn:
            with conn.cursor() as cur:
                cur.execute(query)
                return cur.fetchall() if cur.description else None

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def pg_server(tmp_path):
    if not _pg_bindir():
        pytest.skip("postgresql is not installed")
    srv = PgServer(tmp_path)
    yield srv
    srv.destroy()


# ---------------------------------------------------------------------------
# rabbitmq-server (AMQP broker)
# ---------------------------------------------------------------------------

RABBIT_DIR = "/usr/lib/rabbitmq/bin"
RABBITMQ_SERVER = os.path.join(RABBIT_DIR, "rabbitmq-server")
RABBITMQCTL = os.path.join(RABBIT_DIR, "rabbitmqctl")


def _cworker_has_amqp():
    exe = _find_exe()
    if not exe:
        return False
    try:
        out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "amqp" in out


def _kill_epmd(port):
    """epmd daemonizes away from the node; find ours by its port and kill it by PID."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            if not cmd or not cmd[0].endswith(b"epmd"):
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if f"ERL_EPMD_PORT={port}".encode() in env:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


class RabbitServer:
    """rabbitmq-server with its own node name, mnesia dir, ports (AMQP,
    management, distribution, epmd) in a temporary directory. Optional TLS
    listener from `tls` = {"ca": path, "cert": path, "key": path}."""

    _seq = 0

    def __init__(self, directory, tls=None):
        RabbitServer._seq += 1
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.port = free_port()
        self.mgmt_port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.node = f"cwt{os.getpid()}n{RabbitServer._seq}@localhost"
        self.mp = None
        conf = [f"listeners.tcp.default = 127.0.0.1:{self.port}",
                "loopback_users = none",
                f"management.tcp.port = {self.mgmt_port}",
                "management.tcp.ip = 127.0.0.1",
                "collect_statistics_interval = 500",
                "log.console = true", "log.console.level = warning", "log.file = false"]
        if tls:
            conf += [f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
                     f"ssl_options.cacertfile = {tls['ca']}",
                     f"ssl_options.certfile = {tls['cert']}",
                     f"ssl_options.keyfile = {tls['key']}",
                     "ssl_options.verify = verify_none",
                     "ssl_options.fail_if_no_peer_cert = false"]
        with open(os.path.join(directory, "rabbitmq.conf"), "w") as f:
            f.write("\n".join(conf) + "\n")
        with open(os.path.join(directory, "enabled_plugins"), "w") as f:
            f.write("[rabbitmq_management].\n")
        self.start()

    def env(self):
        d = self.dir
        return clean_env({
            "HOME": d, "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port), "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_MNESIA_BASE": os.path.join(d, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(d, "log"),
            "RABBITMQ_CONFIG_FILE": os.path.join(d, "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(d, "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": os.path.join(d, "plugins-expand"),
            "RABBITMQ_PID_FILE": os.path.join(d, "rabbit.pid"),
        })

    def start(self, timeout=60):
        self.mp = ManagedProcess("rabbitmq", [RABBITMQ_SERVER],
                                 os.path.join(self.dir, "rabbitmq.log"), env=self.env())
        deadline = time.monotonic() + timeout * SLOW
        last = ""
        while True:
            try:
                if self.api("GET", "/api/overview") is not None and self._amqp_open():
                    return
            except OSError:
                pass
            except AssertionError as e:
                # the management listener can answer 404 for a moment before its routes are in
                last = f" (last answer: {e})"
            if not self.mp.alive():
                raise RuntimeError(f"rabbitmq-server exited: {tail(self.mp.log())}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq-server not answering{last}: {tail(self.mp.log())}")
            time.sleep(0.2)

    def _amqp_open(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def stop(self, kill=False):
        """A clean stop (what a restart in a test needs), or with kill=True a SIGKILL:
        teardown throws the node and its data away, and a clean stop takes ~4 s."""
        if self.mp:
            if kill:
                self.mp.kill()
            else:
                self.mp.stop(signal.SIGTERM, timeout=30)
            self.mp = None

    def destroy(self):
        self.stop(kill=True)
        _kill_epmd(self.epmd_port)

    def restart(self, downtime=0.0):
        self.stop()
        if downtime:
            time.sleep(downtime)
        self.start()

    def api(self, method, path, body=None):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.mgmt_port, timeout=10)
        try:
            hdr = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                   "content-type": "application/json"}
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers=hdr)
            r = c.getresponse()
            data = r.read()
            if r.status >= 400:
                raise AssertionError(f"management API {method} {path}: {r.status} {data[:300]}")
            return json.loads(data) if data else {}
        finally:
            c.close()

    def ctl(self, *args, timeout=60):
        p = subprocess.run([RABBITMQCTL, "-n", self.node] + list(args), env=self.env(),
                           capture_output=True, text=True, timeout=timeout * SLOW)
        if p.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)}: {p.stderr}")
        return p.stdout

    def add_vhost(self, name):
        from urllib.parse import quote
        self.api("PUT", f"/api/vhosts/{quote(name, safe='')}")
        self.api("PUT", f"/api/permissions/{quote(name, safe='')}/guest",
                 {"configure": ".*", "write": ".*", "read": ".*"})


class AmqpBroker:
    """One virtual host on a RabbitServer plus a redis-server for results:
    the same interface tests use on a RedisServer (url, result_url,
    queue_len, drained, unacked, restart)."""

    kind = "amqp"

    def __init__(self, server, results, vhost=None):
        self.server = server
        self.results = results
        self.vhost = vhost or f"cw-{uuid.uuid4().hex[:10]}"
        server.add_vhost(self.vhost)
        self.port = server.port

    def url(self, db=0, scheme="amqp"):
        from urllib.parse import quote
        port = self.server.tls_port if scheme == "amqps" else self.server.port
        return f"{scheme}://guest:guest@127.0.0.1:{port}/{quote(self.vhost, safe='')}"

    def result_url(self, db=0):
        return self.results.url(db)

    def client(self, db=0):
        """redis-py client of the result store (what meta() reads)."""
        return self.results.client(db)

    def _queue(self, queue):
        import amqp as pyamqp
        conn = pyamqp.Connection(f"127.0.0.1:{self.server.port}", userid="guest",
                                 password="guest", virtual_host=self.vhost, connect_timeout=5)
        conn.connect()
        try:
            ch = conn.channel()
            try:
                return ch.queue_declare(queue, passive=True)
            except pyamqp.exceptions.NotFound:
                return None
        finally:
            try:
                conn.close()
            except Exception:
                pass

    def queue_len(self, queue="celery"):
        ok = self._queue(queue)
        return ok.message_count if ok else 0

    def counts(self, queue="celery"):
        """(messages_ready, messages_unacknowledged) exactly, from rabbitmqctl."""
        out = self.server.ctl("list_queues", "-p", self.vhost, "--no-table-headers", "-q",
                              "name", "messages_ready", "messages_unacknowledged")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == queue:
                return int(parts[1]), int(parts[2])
        return 0, 0

    def unacked(self, queue="celery"):
        return self.counts(queue)[1]

    def publish_raw(self, queue, body, headers=None, content_type="application/json", **props):
        """A message as any AMQP client could send it (default exchange)."""
        import amqp as pyamqp
        conn = pyamqp.Connection(f"127.0.0.1:{self.server.port}", userid="guest",
                                 password="guest", virtual_host=self.vhost, connect_timeout=5)
        conn.connect()
        try:
            ch = conn.channel()
            msg = pyamqp.Message(body, content_type=content_type, content_encoding="utf-8",
                                 application_headers=headers or {}, delivery_mode=2, **props)
            ch.basic_publish(msg, exchange="", routing_key=queue)
        finally:
            conn.close()

    def drained(self, queues=("celery",)):
        return all(self.counts(q) == (0, 0) for q in queues)

    def restart(self, downtime=0.0):
        self.server.restart(downtime)


@pytest.fixture(scope="session")
def rabbit_session(tmp_path_factory):
    """One rabbitmq-server for the session (tests isolate by virtual host)."""
    if not os.path.exists(RABBITMQ_SERVER):
        pytest.skip("rabbitmq-server is not installed")
    if not _cworker_has_amqp():
        pytest.skip("cworker was built without AMQP")
    srv = RabbitServer(str(tmp_path_factory.mktemp("rabbit")))
    yield srv
    srv.destroy()


@pytest.fixture
def rabbit_factory(tmp_path):
    """Private rabbitmq-servers (restart tests, TLS)."""
    if not os.path.exists(RABBITMQ_SERVER):
        pytest.skip("rabbitmq-server is not installed")
    if not _cworker_has_amqp():
        pytest.skip("cworker was built without AMQP")
    servers = []

    def make(tls=None):
        srv = RabbitServer(str(tmp_path / f"rabbit{len(servers)}"), tls=tls)
        servers.append(srv)
        return srv

    yield make
    for s in servers:
        s.destroy()


@pytest.fixture
def amqp_broker(request, redis_factory):
    return AmqpBroker(request.getfixturevalue("rabbit_session"), redis_factory(name="results"))


@pytest.fixture(params=["redis", "amqp"])
def broker(request, redis_factory):
    """The suite's broker, parameterised: a redis-server, or a fresh vhost on
    rabbitmq-server with a redis-server for results."""
    if _IMPORT_ERROR:
        pytest.skip(f"/usr/bin/python3 lacks a dependency: {_IMPORT_ERROR}")
    if request.param == "redis":
        return redis_factory()
    return AmqpBroker(request.getfixturevalue("rabbit_session"), redis_factory(name="results"))


def pytest_sessionfinish(session, exitstatus):
    """A run where nothing passed but tests were skipped checked nothing: exit 77, meson's
    "skipped", instead of a pass (e.g. every test skipped for a missing dependency)."""
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if exitstatus == 0 and tr is not None and not tr.stats.get("passed") and tr.stats.get("skipped"):
        session.exitstatus = 77


class RabbitClusterNode(RabbitServer):
    """A RabbitServer that can join others: one Erlang cookie and one epmd port
    for the cluster (nodes find each other through epmd), lean Erlang settings
    for a small machine."""

    def __init__(self, directory, cookie, epmd_port):
        self._cookie = cookie
        self._epmd = epmd_port
        super().__init__(directory)

    def env(self):
        e = super().env()
        e["ERL_EPMD_PORT"] = str(self._epmd)
        e["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = "+S 1:1 +A 2 +sbwt none +sbwtdcpu none +sbwtdio none"
        return e

    def start(self, timeout=60):
        self.epmd_port = self._epmd
        path = os.path.join(self.dir, ".erlang.cookie")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(self._cookie)
            os.chmod(path, 0o400)
        super().start(timeout)

    def join(self, other):
        self.ctl("stop_app")
        self.ctl("join_cluster", other.node)
        self.ctl("start_app")


@pytest.fixture
def rabbit_cluster(tmp_path):
    """make(n) -> n rabbitmq-server nodes clustered together (node names, ports, data
    dirs of their own; one cookie and epmd port). Stopped by PID at teardown."""
    if not os.path.exists(RABBITMQ_SERVER):
        pytest.skip("rabbitmq-server is not installed")
    if not _cworker_has_amqp():
        pytest.skip("cworker was built without AMQP")
    nodes = []
    epmd = free_port()

    def make(n=3):
        cookie = uuid.uuid4().hex.upper()
        for i in range(n):
            nodes.append(RabbitClusterNode(str(tmp_path / f"node{i}"), cookie, epmd))
        for node in nodes[1:]:
            node.join(nodes[0])
        return list(nodes)

    yield make
    for node in nodes:
        node.stop(kill=True)
    _kill_epmd(epmd)
