"""AMQP-only behaviour against a real rabbitmq-server: the topology Python
Celery declares, a broker restart mid-run, the rpc:// result backend, amqps://
with a CA generated here, connection heartbeats, and headers of every AMQP
field type."""

import datetime
import decimal
import os
import re
import socket
import struct
import subprocess
import time

import pytest

from conftest import SLOW, AmqpBroker, free_port, make_app, close_app, wait_for


def queue_decl(b, name):
    q = b.server.api("GET", f"/api/queues/{b.vhost}/{name}")
    return {k: q[k] for k in ("durable", "auto_delete", "exclusive", "arguments")}


def exchange_decl(b, name):
    e = b.server.api("GET", f"/api/exchanges/{b.vhost}/{name}")
    return {k: e[k] for k in ("type", "durable", "auto_delete", "internal", "arguments")}


@pytest.mark.parametrize("python_first", [True, False])
def test_topology_is_celerys(amqp_broker, cworker_factory, pyworker_factory, python_first):
    """Same names, types and arguments as a Python worker: whichever starts first,
    the other declares the same entities without PRECONDITION_FAILED."""
    b = amqp_broker
    start_py = lambda: pyworker_factory(b, queues="celery,docs", name="py@amqp",
                                        extra=["--without-heartbeat"])
    start_cw = lambda: cworker_factory(["-c", "1", "-Q", "celery,docs", "-n", "cw@amqp"],
                                       redis=b)
    first, second = (start_py, start_cw) if python_first else (start_cw, start_py)
    w1 = first()
    w2 = second()
    for w in (w1, w2):
        assert "PRECONDITION_FAILED" not in w.log() and "inequivalent" not in w.log()
    for q in ("celery", "docs"):
        assert queue_decl(b, q) == {"durable": True, "auto_delete": False, "exclusive": False,
                                    "arguments": {}}
        assert exchange_decl(b, q)["type"] == "direct" and exchange_decl(b, q)["durable"]
    assert exchange_decl(b, "celeryev") == {"type": "topic", "durable": True,
                                            "auto_delete": False, "internal": False,
                                            "arguments": {}}
    assert exchange_decl(b, "celery.pidbox") == {"type": "fanout", "durable": False,
                                                 "auto_delete": False, "internal": False,
                                                 "arguments": {}}
    assert exchange_decl(b, "reply.celery.pidbox")["type"] == "direct"
    # each worker's mailbox queue, declared the same way by both
    assert queue_decl(b, "cw@amqp.celery.pidbox") == queue_decl(b, "py@amqp.celery.pidbox") == {
        "durable": False, "auto_delete": True, "exclusive": False,
        "arguments": {"x-expires": 10000, "x-message-ttl": 300000}}


@pytest.mark.slow
def test_rabbitmq_restart_loses_nothing(rabbit_factory, redis_factory, cworker_factory,
                                        app_factory):
    srv = rabbit_factory()
    b = AmqpBroker(srv, redis_factory(name="results"))
    w = cworker_factory(["-c", "2", "--prefetch-multiplier", "2"], redis=b)
    app = app_factory(b)
    rs = [app.send_task("cworker.sleep", args=[0.1, i]) for i in range(60)]
    wait_for(lambda: len(re.findall(r"succeeded", w.log())) >= 10, 30, what="10 done")
    b.restart(downtime=1.0)
    w.wait_log(r"Connection to broker lost", timeout=30)
    results = [app.AsyncResult(r.id) for r in rs]
    wait_for(lambda: all(r.ready() for r in results), 90, interval=0.5,
             what="every task done after the restart")
    assert [r.get(timeout=1) for r in results] == list(range(60))
    # early acks: no task ran twice (reserved messages were dropped, then redelivered)
    for r in rs:
        n = len(re.findall(rf"Task cworker.sleep\[{r.id}\] succeeded", w.log()))
        assert n == 1, f"{r.id} ran {n} times"
    assert len(re.findall(r"Connected to amqp://", w.log())) >= 2
    wait_for(lambda: b.drained(), 20, what="queue empty, nothing unacked")


def test_rpc_result_backend(amqp_broker, cworker_factory, pyworker_factory):
    b = amqp_broker
    cworker_factory(["-c", "2", "--result-backend", "rpc://"], redis=b)
    app = make_app(b.url(), "rpc://")
    try:
        assert app.send_task("cworker.echo", args=[{"k": [1, 2.5, None]}]).get(timeout=20) == \
            {"k": [1, 2.5, None]}
        with pytest.raises(KeyError):
            app.send_task("cworker.fail", args=["KeyError", "missing"]).get(timeout=20)
        rs = [app.send_task("cworker.add", args=[i, i]) for i in range(50)]
        assert [r.get(timeout=30) for r in rs] == [2 * i for i in range(50)]
        # a Python worker answering the same client over rpc:// at the same time
        pyworker_factory(b, backend="rpc://")
        rs = [app.send_task("cworker.add", args=[i, 1]) for i in range(40)]
        assert [r.get(timeout=30) for r in rs] == [i + 1 for i in range(40)]
    finally:
        close_app(app)


def test_rpc_result_backend_follows_the_url_list(amqp_broker, cworker_factory):
    """Broker URL list whose first node is down: the broker connection moves on to
    the second URL and so does the rpc:// result backend."""
    b = amqp_broker
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/{b.vhost}"
    w = cworker_factory(["-c", "1", "--result-backend", "rpc://", "-b", f"{dead};{b.url()}"],
                        redis=b)
    app = make_app(b.url(), "rpc://")
    try:
        assert app.send_task("cworker.add", args=[40, 2]).get(timeout=20) == 42
        assert "rpc result backend" not in w.log()
    finally:
        close_app(app)


def test_killed_early_acked_task_is_not_acked_twice(amqp_broker, cworker_factory):
    """An early-acked task killed at its hard time limit is stored FAILURE without a
    second basic.ack: RabbitMQ closes the channel on an unknown delivery tag (406),
    which would redeliver every other unacknowledged message."""
    b = amqp_broker
    w = cworker_factory(["-c", "1", "--diagnostic-tasks"], redis=b)
    app = make_app(b.url(), b.result_url())
    try:
        r = app.send_task("cworker.spin", args=[5], time_limit=0.5)
        with pytest.raises(Exception) as ei:
            r.get(timeout=20)
        assert type(ei.value).__name__ == "TimeLimitExceeded"
        assert app.send_task("cworker.add", args=[1, 2]).get(timeout=20) == 3
        time.sleep(0.5)
        assert "PRECONDITION_FAILED" not in w.log(), w.log()
        assert "Connection to broker lost" not in w.log()
    finally:
        close_app(app)


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    """A self-signed CA and a server certificate for 127.0.0.1/localhost signed by it."""
    os.makedirs(d, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={name} test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem", cwd=d)
    for f in ("ca.key", "server.key"):
        os.chmod(os.path.join(d, f), 0o644)
    return {"ca": os.path.join(d, "ca.pem"), "cert": os.path.join(d, "server.pem"),
            "key": os.path.join(d, "server.key")}


@pytest.mark.slow
def test_amqps_with_a_generated_ca(tmp_path, rabbit_factory, redis_factory, cworker_factory,
                                   app_factory):
    tls = make_ca(str(tmp_path / "ca"), "cworker")
    other = make_ca(str(tmp_path / "other"), "stranger")
    srv = rabbit_factory(tls=tls)
    b = AmqpBroker(srv, redis_factory(name="results"))
    # rabbitmq-c matches the certificate's DNS names (not IP addresses): use localhost
    amqps = b.url(scheme="amqps").replace("@127.0.0.1:", "@localhost:")
    # verified against the right CA (host name 127.0.0.1 is in the certificate)
    w = cworker_factory(["-c", "1", "-b", amqps, "--broker-ssl-ca-certs", tls["ca"]], redis=b)
    app = app_factory(b)  # the producer uses the plain listener of the same server
    assert app.send_task("cworker.add", args=[20, 22]).get(timeout=20) == 42
    wait_for(lambda: any(c.get("ssl") for c in srv.api("GET", "/api/connections")), 10,
             what="a TLS connection listed by the management API")
    w.stop()
    # a certificate from another CA is refused: the worker never consumes
    bad = cworker_factory(["-c", "1", "-b", amqps, "--broker-ssl-ca-certs", other["ca"]],
                          redis=b, wait_ready=False)
    time.sleep(3 * SLOW)
    assert "ready." not in bad.log()
    assert re.search(r"Cannot connect to amqps://.*(certificate|SSL)", bad.log()), bad.log()
    r = app.send_task("cworker.add", args=[1, 1])
    time.sleep(1 * SLOW)
    assert not r.ready()
    bad.stop()
    # CERT_NONE accepts it (verification off, as Celery's ssl.CERT_NONE)
    cworker_factory(["-c", "1", "-b", amqps, "--broker-ssl-ca-certs", other["ca"],
                     "--broker-ssl-cert-reqs", "CERT_NONE"], redis=b)
    assert r.get(timeout=20) == 2


def test_heartbeats_keep_an_idle_connection(amqp_broker, cworker_factory, app_factory):
    b = amqp_broker
    w = cworker_factory(["-c", "1", "--broker-heartbeat", "2"], redis=b)
    def conns():
        return [c for c in b.server.api("GET", "/api/connections") if c["vhost"] == b.vhost]
    wait_for(lambda: conns(), 10, what="connection listed by the management API")
    assert all(c["timeout"] == 2 for c in conns()), conns()
    time.sleep(7 * SLOW)  # > 3 heartbeat intervals with no traffic from tasks
    app = app_factory(b)
    assert app.send_task("cworker.add", args=[3, 4]).get(timeout=10) == 7
    assert "Connection to broker lost" not in w.log()


def test_headers_of_every_amqp_type(amqp_broker, cworker_factory, app_factory):
    """A task message whose headers carry every field type py-amqp can write
    (nested tables, arrays, bytes, decimals, timestamps, void) still runs;
    a body that is not JSON is dropped with a log line."""
    b = amqp_broker
    w = cworker_factory(["-c", "1"], redis=b)
    app = app_factory(b)
    import json
    tid = "typed-headers-1"
    headers = {"lang": "py", "task": "cworker.echo", "id": tid, "root_id": tid,
               "parent_id": None, "group": None, "retries": 0, "timelimit": [None, None],
               "eta": None, "expires": None, "argsrepr": "('x',)", "kwargsrepr": "{}",
               "origin": "test", "x-table": {"a": {"b": [1, 2.5, True, None]}},
               "x-bytes": b"\xff\x00", "x-decimal": decimal.Decimal("1.25"),
               "x-time": datetime.datetime(2026, 1, 2, 3, 4, 5), "x-big": 2 ** 40,
               "x-neg": -5}
    body = json.dumps([["x"], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                   "chord": None}]).encode()
    b.publish_raw("celery", body, headers=headers, correlation_id=tid)
    assert app.AsyncResult(tid).get(timeout=20) == "x"
    b.publish_raw("celery", b"{not json", headers=dict(headers, id="typed-headers-2"))
    w.wait_log(r"Can't decode message body", timeout=10)
    assert app.send_task("cworker.add", args=[1, 1]).get(timeout=10) == 2
    wait_for(lambda: b.drained(), 10, what="nothing left unacked")


# -- acks: one basic.ack frame for a run of them ------------------------------------------

class AmqpFrameProxy:
    """A TCP proxy between one worker and RabbitMQ that reads the AMQP frames
    going both ways: basic.deliver to the worker (channel, tag) and basic.ack
    from it (channel, tag, multiple, when). Bytes pass through unchanged."""

    def __init__(self, upstream_port):
        import threading
        self.upstream = upstream_port
        self.port = free_port()
        self.lock = threading.Lock()
        self.delivers, self.acks = [], []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(8)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.upstream))
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pipe, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, False), daemon=True).start()

    def _frames(self, buf, from_client):
        """Consume whole frames from buf (a bytearray); record what matters."""
        while True:
            if from_client and buf[:4] == b"AMQP":
                if len(buf) < 8:
                    return
                del buf[:8]
                continue
            if len(buf) < 7:
                return
            ftype, ch, size = struct.unpack(">BHI", bytes(buf[:7]))
            if len(buf) < 8 + size:
                return
            payload = bytes(buf[7:7 + size])
            del buf[:8 + size]
            if ftype != 1 or size < 4:
                continue
            cls, mth = struct.unpack(">HH", payload[:4])
            if from_client and (cls, mth) == (60, 80):          # basic.ack
                tag, bits = struct.unpack(">QB", payload[4:13])
                with self.lock:
                    self.acks.append((ch, tag, bool(bits & 1), time.monotonic()))
            elif not from_client and (cls, mth) == (60, 60):    # basic.deliver
                n = payload[4]                                    # consumer-tag shortstr
                tag = struct.unpack(">Q", payload[5 + n:13 + n])[0]
                with self.lock:
                    self.delivers.append((ch, tag, payload[5:5 + n].decode()))

    def _pipe(self, src, dst, from_client):
        buf = bytearray()
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                buf += data
                self._frames(buf, from_client)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def settled_at(self):
        """Replay the acks as RabbitMQ applies them to the task deliveries of channel 1:
        {tag: when it was acked}; an ack of a tag not outstanding raises."""
        with self.lock:
            delivers = [t for ch, t, ctag in self.delivers if ch == 1 and "bcast" not in ctag]
            acks = list(self.acks)
        outstanding, done = set(delivers), {}
        for ch, tag, multiple, when in acks:
            assert ch == 1, f"ack on channel {ch}"
            assert tag in outstanding, f"ack of tag {tag}, which is not outstanding"
            for t in ([x for x in outstanding if x <= tag] if multiple else [tag]):
                outstanding.discard(t)
                done[t] = when
        return done

    def close(self):
        self.closed = True
        self.lsock.close()


def test_acks_of_a_turn_share_one_frame(amqp_broker, cworker_factory):
    """Tasks taken from a queue that holds many go out with far fewer basic.ack frames
    than tasks: the acks of one loop turn leave as one frame with multiple=1 when every
    delivery before them is acked too. RabbitMQ ends with nothing ready or unacked, and
    replaying the frames acks every delivery exactly once."""
    b = amqp_broker
    n = 120
    app = make_app(b.url(), b.result_url())
    proxy = AmqpFrameProxy(b.port)
    try:
        rs = [app.send_task("cworker.add", args=[i, 1]) for i in range(n)]
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{b.vhost}"
        w = cworker_factory(["-b", url, "-c", "4", "--prefetch-multiplier", "4"], redis=b)
        assert [r.get(timeout=60) for r in rs] == [i + 1 for i in range(n)]
        wait_for(lambda: b.counts() == (0, 0), 20, what="queue drained")
        done = proxy.settled_at()
        with proxy.lock:
            tasks = [t for ch, t, ctag in proxy.delivers if ch == 1 and "bcast" not in ctag]
            frames = list(proxy.acks)
        assert len(tasks) == n and sorted(done) == sorted(tasks)
        multiples = sum(1 for f in frames if f[2])
        assert multiples >= 1 and len(frames) <= n // 2, \
            f"{len(frames)} ack frames ({multiples} with multiple) for {n} tasks"
        assert "PRECONDITION_FAILED" not in w.log() and "Connection to broker lost" not in w.log()
    finally:
        proxy.close()
        close_app(app)


def test_a_held_eta_task_is_not_swept_into_a_run(amqp_broker, cworker_factory):
    """A countdown task held unacked at the front of the channel is acked only when it
    runs: the tasks delivered after it are acked while it waits, one frame each (a
    multiple ack would settle the held one too), and it runs once, on time."""
    b = amqp_broker
    app = make_app(b.url(), b.result_url())
    proxy = AmqpFrameProxy(b.port)
    try:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{b.vhost}"
        w = cworker_factory(["-b", url, "-c", "2", "--prefetch-multiplier", "4"], redis=b)
        t0 = time.monotonic()
        held = app.send_task("cworker.add", args=[100, 1], countdown=3)
        wait_for(lambda: b.unacked() == 1, 10, what="the countdown task held")
        rs = [app.send_task("cworker.add", args=[i, 1]) for i in range(40)]
        assert [r.get(timeout=30) for r in rs] == [i + 1 for i in range(40)]
        assert held.get(timeout=20) == 101
        wait_for(lambda: b.counts() == (0, 0), 20, what="queue drained")
        done = proxy.settled_at()
        with proxy.lock:
            first = min(t for ch, t, ctag in proxy.delivers if ch == 1 and "bcast" not in ctag)
        assert done[first] - t0 >= 2.9, f"the held task was acked after {done[first] - t0:.2f} s"
        assert len(done) == 41
        assert "PRECONDITION_FAILED" not in w.log() and "Connection to broker lost" not in w.log()
    finally:
        proxy.close()
        close_app(app)
