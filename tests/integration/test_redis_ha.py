"""Redis TLS (rediss://) and Sentinel (sentinel://) for the broker and the result backend.

TLS: redis-server with --tls-port and a CA made by openssl in the test; cworker and a
Python Celery producer run tasks over TLS; a wrong CA and a certificate for another
host are refused with a clear error.  Sentinel: a master, a replica and three
sentinels (redis-server --sentinel) on loopback; the master is killed mid-run and
every acks_late task still completes, on the new master."""
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import (REDIS_SERVER, BrokerUrls as Urls, ManagedProcess, close_app, free_port, make_app,
                      wait_for, _IMPORT_ERROR)

if not _IMPORT_ERROR:
    import redis as redis_py

pytestmark = pytest.mark.skipif(bool(_IMPORT_ERROR), reason=f"python deps: {_IMPORT_ERROR}")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}", cwd=d)
    return os.path.join(d, f"{name}.pem")


def make_cert(d, ca, name, san):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
            "-extfile", f"{name}.ext", cwd=d)
    return os.path.join(d, f"{name}.pem"), os.path.join(d, f"{name}.key")


class TlsRedis:
    """redis-server answering only TLS on a loopback port."""

    def __init__(self, d, cert, key, ca):
        self.port = free_port()
        self.ca = ca
        os.makedirs(d, exist_ok=True)
        self.mp = ManagedProcess("redis-tls", [
            REDIS_SERVER, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
            "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca,
            "--tls-auth-clients", "no", "--dir", d, "--save", "", "--appendonly", "no",
            "--protected-mode", "no"], os.path.join(d, "redis.log"))
        wait_for(lambda: self._ping(), 10, what="TLS redis up")

    def client(self):
        return redis_py.Redis(host="127.0.0.1", port=self.port, ssl=True,
                              ssl_ca_certs=self.ca, ssl_cert_reqs="required", socket_timeout=5)

    def _ping(self):
        try:
            return self.client().ping()
        except redis_py.exceptions.ConnectionError:
            return False

    def stop(self):
        self.mp.stop(signal.SIGTERM, timeout=10)


@pytest.fixture
def pki(tmp_path):
    d = str(tmp_path / "pki")
    os.makedirs(d)
    make_ca(d, "ca")
    make_ca(d, "otherca")
    good = make_cert(d, "ca", "server", "IP:127.0.0.1,DNS:localhost")
    wrong_host = make_cert(d, "ca", "elsewhere", "DNS:elsewhere.example,IP:10.9.9.9")
    return {"dir": d, "ca": os.path.join(d, "ca.pem"), "otherca": os.path.join(d, "otherca.pem"),
            "good": good, "wrong_host": wrong_host}


@pytest.fixture
def tls_redis(tmp_path, pki):
    servers = []

    def make(which="good"):
        cert, key = pki[which]
        s = TlsRedis(str(tmp_path / f"tls{len(servers)}"), cert, key, pki["ca"])
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def tls_url(port, ca, db=0):
    return f"rediss://127.0.0.1:{port}/{db}?ssl_cert_reqs=required&ssl_ca_certs={ca}"


def test_tls_broker_and_backend(tls_redis, pki, cworker_factory, pyworker_factory):
    """cworker and a stock Python Celery worker share one TLS-only Redis: each
    serves its own queue, a Python producer sends to both, every result is right."""
    srv = tls_redis()
    url = tls_url(srv.port, pki["ca"])
    w = cworker_factory(["-b", url, "--result-backend", tls_url(srv.port, pki["ca"], 1),
                         "-c", "2"], redis=None)
    backend = f"rediss://127.0.0.1:{srv.port}/1?ssl_cert_reqs=required&ssl_ca_certs={pki['ca']}"
    pw = pyworker_factory(Urls(f"rediss://127.0.0.1:{srv.port}/0", backend), queues="py",
                          env={"CW_TEST_SSL_CA": pki["ca"]})
    ssl_conf = {"ssl_cert_reqs": "required", "ssl_ca_certs": pki["ca"]}
    app = make_app(f"rediss://127.0.0.1:{srv.port}/0", backend, broker_use_ssl=ssl_conf)
    try:
        results = [app.send_task("cworker.add", args=(i, 1), queue=("celery", "py")[i % 2])
                   for i in range(20)]
        assert [r.get(timeout=30) for r in results] == [i + 1 for i in range(20)]
    finally:
        close_app(app)
    assert "Connected to rediss://" in w.log()
    assert len(re.findall(r"Task cworker\.add\[[-0-9a-f]+\] received", w.log())) == 10
    assert len(re.findall(r"Task cworker\.add\[[-0-9a-f]+\] succeeded", pw.log())) == 10


def test_tls_config_keys(tls_redis, pki, cworker_factory, tmp_path):
    """broker_use_ssl.ssl_* and redis_backend_use_ssl.ssl_* from the config file."""
    srv = tls_redis()
    conf = tmp_path / "cw.conf"
    conf.write_text(f"broker_url = rediss://127.0.0.1:{srv.port}/0\n"
                    f"result_backend = rediss://127.0.0.1:{srv.port}/1\n"
                    f"broker_use_ssl.ssl_ca_certs = {pki['ca']}\n"
                    f"broker_use_ssl.ssl_cert_reqs = CERT_REQUIRED\n"
                    f"redis_backend_use_ssl.ssl_ca_certs = {pki['ca']}\n")
    cworker_factory(["--config", str(conf)], redis=None, backend=False)
    c = srv.client()
    app = make_app(f"rediss://127.0.0.1:{srv.port}/0",
                   f"rediss://127.0.0.1:{srv.port}/1?ssl_cert_reqs=required"
                   f"&ssl_ca_certs={pki['ca']}",
                   broker_use_ssl={"ssl_cert_reqs": "required", "ssl_ca_certs": pki["ca"]})
    try:
        assert app.send_task("cworker.echo", args=("tls",)).get(timeout=20) == "tls"
    finally:
        close_app(app)
        c.close()


def test_tls_wrong_ca_refused(tls_redis, pki, cworker_factory):
    srv = tls_redis()
    w = cworker_factory(["-b", tls_url(srv.port, pki["otherca"])], redis=None, backend=False,
                        wait_ready=False)
    w.wait_log(r"TLS connection to 127\.0\.0\.1 .*refused: .*certificate verify failed", 15)
    assert "Connected to" not in w.log()


def test_tls_other_host_refused(tls_redis, pki, cworker_factory):
    srv = tls_redis("wrong_host")
    w = cworker_factory(["-b", tls_url(srv.port, pki["ca"])], redis=None, backend=False,
                        wait_ready=False)
    w.wait_log(r"refused: .*certificate verify failed: IP address mismatch", 15)
    assert "Connected to" not in w.log()


@pytest.mark.slow
def test_tls_backend_wrong_ca_is_an_error(tls_redis, pki, cworker_factory, redis_server):
    """The backend (children, blocking) refuses a certificate it cannot verify."""
    srv = tls_redis()
    w = cworker_factory(["--result-backend", tls_url(srv.port, pki["otherca"], 1)],
                        redis=redis_server, backend=False)
    app = make_app(redis_server.url(), redis_server.url(1))
    try:
        app.send_task("cworker.noop")
        w.wait_log(r"result backend rediss://.*: .*certificate verify failed", 20)
        # a cold shutdown does not wait on the backend: the master records the cancelled
        # task once, without the minute of retries a child's store gets, and exits
        rc = w.stop(signal.SIGQUIT, timeout=15)
        assert rc == 1, f"exit status {rc} (-9: still stuck storing when killed)"  # Celery's cold exit
    finally:
        close_app(app)


def test_master_store_does_not_hold_up_the_master(tls_redis, pki, cworker_factory,
                                                  redis_server):
    """A state the master stores itself (here a killed child's WorkerLostError) retries for
    about a second when the backend is unreachable, not the minute a child's store gets:
    the master's loop serves everything else meanwhile, so remote control still answers."""
    srv = tls_redis()
    w = cworker_factory(["-c", "1", "--result-backend", tls_url(srv.port, pki["otherca"], 1)],
                        redis=redis_server, backend=False)
    app = make_app(redis_server.url(), redis_server.url(1))
    try:
        r = app.send_task("cworker.sleep", args=[30])
        w.wait_log(rf"Task cworker\.sleep\[{r.id}\] received", 20)
        time.sleep(0.3)
        mark = w.log_size()
        for pid in w.children():
            os.kill(pid, signal.SIGKILL)
        w.wait_log(r"WorkerLostError", 20)
        t0 = time.monotonic()
        replies = []
        while not replies and time.monotonic() - t0 < 20:
            replies = app.control.ping(timeout=1)
        took = time.monotonic() - t0
        assert replies, "the master never answered a ping after the child died"
        assert took < 10, f"the master answered only after {took:.1f}s"
        assert re.search(rf"\[{r.id}\]: FAILURE not stored", w.log_since(mark)), \
            w.log_since(mark)
        assert w.alive()
    finally:
        close_app(app)


# ---------------------------------------------------------------------------
# Sentinel
# ---------------------------------------------------------------------------

class Node:
    def __init__(self, d, name, argv):
        os.makedirs(d, exist_ok=True)
        self.mp = ManagedProcess(name, argv, os.path.join(d, f"{name}.log"))


def redis_node(d, name, port, replicaof=None):
    argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
            "--save", "", "--appendonly", "no", "--protected-mode", "no"]
    if replicaof:
        argv += ["--replicaof", "127.0.0.1", str(replicaof)]
    return Node(d, name, argv)


def sentinel_node(d, name, port, master_port):
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "sentinel.conf")
    with open(conf, "w") as f:
        f.write(f"port {port}\nbind 127.0.0.1\ndir {d}\nprotected-mode no\n"
                f"sentinel monitor mymaster 127.0.0.1 {master_port} 2\n"
                "sentinel down-after-milliseconds mymaster 1000\n"
                "sentinel failover-timeout mymaster 5000\n"
                "sentinel parallel-syncs mymaster 1\n")
    return Node(d, name, [REDIS_SERVER, conf, "--sentinel"])


@pytest.fixture
def sentinel_setup(tmp_path):
    nodes = []
    mport, rport = free_port(), free_port()
    sports = [free_port() for _ in range(3)]
    master = redis_node(str(tmp_path / "master"), "master", mport)
    nodes.append(master)
    replica = redis_node(str(tmp_path / "replica"), "replica", rport, replicaof=mport)
    nodes.append(replica)
    for i, p in enumerate(sports):
        nodes.append(sentinel_node(str(tmp_path / f"sentinel{i}"), f"sentinel{i}", p, mport))

    def replica_synced():
        try:
            info = redis_py.Redis(port=rport).info("replication")
            return info.get("master_link_status") == "up"
        except redis_py.exceptions.ConnectionError:
            return False
    wait_for(replica_synced, 15, what="replica in sync")

    def sentinels_know_replica():
        try:
            return all(len(redis_py.Redis(port=p).sentinel_slaves("mymaster")) >= 1 and
                       len(redis_py.Redis(port=p).sentinel_sentinels("mymaster")) >= 2
                       for p in sports)
        except redis_py.exceptions.ConnectionError:
            return False
    wait_for(sentinels_know_replica, 20, what="sentinels discovered replica and each other")
    url = ";".join(f"sentinel://127.0.0.1:{p}" for p in sports)
    yield {"master": master, "mport": mport, "rport": rport, "sports": sports, "url": url}
    for n in nodes:
        if n.mp.alive():
            n.mp.stop(signal.SIGTERM, timeout=10)


def master_port(sports):
    for p in sports:
        try:
            return int(redis_py.Redis(port=p).sentinel_get_master_addr_by_name("mymaster")[1])
        except Exception:
            continue
    return None


def sentinel_app(url):
    opts = {"master_name": "mymaster"}
    return make_app(url + "/0", url + "/1", broker_transport_options=opts,
                    result_backend_transport_options=opts)


@pytest.mark.slow
def test_sentinel_follows_failover(sentinel_setup, cworker_factory, pyworker_factory):
    """cworker (acks_late) behind three sentinels: the master is killed mid-run, the
    worker follows the promoted replica and every task completes. A stock Python
    Celery worker shares the setup on its own queue before and after the failover.
    (Celery 5.2's worker, kombu 5.2.4, does not resume by itself after a Sentinel
    failover in this setup: it retries the dead master; docs/compatibility.md.)"""
    s = sentinel_setup
    url = s["url"]
    w = cworker_factory(["-b", url + "/0", "--broker-master-name", "mymaster",
                         "--result-backend", url + "/1", "--result-backend-master-name",
                         "mymaster", "--acks-late", "-c", "2"], redis=None)
    assert f"127.0.0.1:{s['mport']}" in w.log()
    py_env = {"CW_TEST_MASTER_NAME": "mymaster", "CW_TEST_ACKS_LATE": "1"}
    pw = pyworker_factory(Urls(url + "/0", url + "/1"), queues="py", env=py_env)
    app = sentinel_app(url)
    try:
        assert app.send_task("cworker.add", args=(2, 3), queue="py").get(timeout=20) == 5
        pw.stop()
        n = 30
        results = [app.send_task("cworker.sleep", args=(0.2, i)) for i in range(n)]
        results[2].get(timeout=20)  # running
        # fail the master over mid-run: kill it, the sentinels promote the replica
        s["master"].mp.kill()
        wait_for(lambda: master_port(s["sports"]) == s["rport"], 30, what="failover")
        w.wait_log(rf"master 'mymaster' is at 127\.0\.0\.1:{s['rport']}", 30)
        # the producer follows too; every task completes, on the new master
        got = [r.get(timeout=40) for r in results]
        assert got == list(range(n))
        r = redis_py.Redis(port=s["rport"])
        wait_for(lambda: r.hlen("unacked") == 0, 10, what="nothing left unacked")
        assert r.llen("celery") == 0
        # a Python worker started now finds the promoted master through the sentinels
        pyworker_factory(Urls(url + "/0", url + "/1"), queues="py", env=py_env)
        assert app.send_task("cworker.add", args=(4, 5), queue="py").get(timeout=30) == 9
    finally:
        close_app(app)


def test_sentinel_needs_master_name():
    from conftest import run_cworker
    p = run_cworker(["-b", f"sentinel://127.0.0.1:{free_port()};sentinel://127.0.0.1:1"],
                    timeout=10)
    assert p.returncode != 0
    assert "master_name" in p.stderr
