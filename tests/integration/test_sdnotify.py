"""systemd's notify protocol (src/util/sdnotify.c): the test plays systemd's
part with its own unix datagram socket, then checks READY=1 after the worker is
ready, repeated WATCHDOG=1 at WatchdogSec/2, and STOPPING=1 on SIGTERM."""

import os
import signal
import socket
import threading
import time
import uuid

import pytest

from conftest import SLOW, wait_for


class NotifySocket:
    """A bound AF_UNIX datagram socket; a thread records (monotonic time, message)
    as each datagram arrives, the way systemd timestamps watchdog pings."""

    def __init__(self, path=None, abstract=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.sock.bind("\0" + abstract)
            self.address = "@" + abstract
        else:
            self.sock.bind(path)
            self.address = path
        self.sock.settimeout(0.05)
        self.messages = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def with_line(self, line):
        with self._lock:
            return [(t, m) for t, m in self.messages if line in m.split("\n")]

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    s = NotifySocket(path=str(tmp_path / "notify.sock"))
    yield s
    s.close()


def test_ready_watchdog_stopping(notify_socket, redis_server, cworker_factory):
    w = cworker_factory(["-c", "1"], redis=redis_server, wait_ready=False,
                        env={"NOTIFY_SOCKET": notify_socket.address,
                             "WATCHDOG_USEC": "400000"})
    w.ready()
    ready = wait_for(lambda: notify_socket.with_line("READY=1"), 5, what="READY=1")
    assert len(ready) == 1
    assert "STATUS=" in ready[0][1]
    # READY=1 comes once the worker logged "ready." (it follows the broker connection)
    first_ping = notify_socket.with_line("WATCHDOG=1")[0][0]
    time.sleep(1.5 * SLOW)
    pings = [t for t, _ in notify_socket.with_line("WATCHDOG=1")]
    assert len(pings) >= 4, pings   # every 0.2 s: about 8 in 1.5 s
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) < 0.2 * 3 * SLOW, gaps
    assert first_ping <= ready[0][0] + 0.3 * SLOW
    assert not notify_socket.with_line("STOPPING=1")

    w.send_signal(signal.SIGTERM)
    assert w.wait(15) == 0
    stopping = notify_socket.with_line("STOPPING=1")
    assert len(stopping) == 1
    assert "warm shutdown" in stopping[0][1]
    assert stopping[0][0] > ready[0][0]


def test_abstract_socket_and_foreign_watchdog_pid(redis_server, cworker_factory):
    s = NotifySocket(abstract=f"cworker-test-{uuid.uuid4().hex}")
    try:
        # WATCHDOG_PID names another process: the watchdog is not ours, no pings
        w = cworker_factory(["-c", "1"], redis=redis_server,
                            env={"NOTIFY_SOCKET": s.address, "WATCHDOG_USEC": "200000",
                                 "WATCHDOG_PID": "1"})
        wait_for(lambda: s.with_line("READY=1"), 5, what="READY=1 on an abstract socket")
        time.sleep(0.5 * SLOW)
        assert not s.with_line("WATCHDOG=1")
        w.send_signal(signal.SIGINT)
        assert w.wait(15) == 0
        assert s.with_line("STOPPING=1")
    finally:
        s.close()


def test_no_notify_socket_is_silent(tmp_path, redis_server, cworker_factory):
    # a socket path that nobody listens on: the worker must run and stop normally
    w = cworker_factory(["-c", "1"], redis=redis_server,
                        env={"NOTIFY_SOCKET": str(tmp_path / "nobody.sock"),
                             "WATCHDOG_USEC": "100000"})
    time.sleep(0.3)
    assert w.alive()
    w.send_signal(signal.SIGTERM)
    assert w.wait(15) == 0
    # the failed pings are reported once, not every 50 ms
    assert w.log().count("watchdog notification failed") == 1, w.log()
