"""Command line, environment and config file: celery-worker-compatible flags,
exit status 64 on any usage error, precedence CLI > env > file, hostname
expansion, and passwords never reaching the logs."""

import os
import re
import socket
import time

import pytest

from conftest import REPO, meta, queue_len, run_cworker, wait_for

EX_USAGE = 64

ALL_FLAGS = ["-b", "--broker", "--result-backend", "-Q", "--queues", "-c", "--concurrency",
             "-P", "--pool", "-n", "--hostname", "-l", "--loglevel", "--prefetch-multiplier",
             "--config", "--diagnostic-tasks", "--result-expires", "--result-extended",
             "--visibility-timeout", "--version", "--help"]


def project_version():
    with open(os.path.join(REPO, "meson.build")) as f:
        m = re.search(r"version\s*:\s*'([^']+)'", f.read())
    return m.group(1)


def test_help_lists_every_flag():
    r = run_cworker(["--help"])
    assert r.returncode == 0, r.stderr
    text = r.stdout
    missing = [f for f in ALL_FLAGS
               if not re.search(r"(^|[\s,\[])" + re.escape(f) + r"([\s,=\]]|$)", text, re.M)]
    assert not missing, f"--help does not mention {missing}:\n{text}"


def test_help_after_worker_subcommand():
    r = run_cworker(["worker", "--help"])
    assert r.returncode == 0, r.stderr
    assert "--concurrency" in r.stdout


def test_version():
    r = run_cworker(["--version"])
    assert r.returncode == 0, r.stderr
    assert project_version() in r.stdout, r.stdout


def assert_usage_error(r, must_mention=None):
    assert r.returncode == EX_USAGE, \
        f"exit {r.returncode}, expected {EX_USAGE}; stderr:\n{r.stderr}"
    lines = r.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].strip(), f"expected one stderr line, got:\n{r.stderr}"
    assert "ready." not in r.stderr and r.stdout == "", "something started"
    if must_mention:
        assert must_mention in lines[0], f"error line does not name {must_mention!r}: {lines[0]}"


def test_unknown_flag_is_usage_error():
    assert_usage_error(run_cworker(["--frobnicate"]), "frobnicate")


@pytest.mark.parametrize("args", [
    ["-c", "0"],
    ["-c", "x"],
    ["-c", "-3"],
    ["--concurrency=2abc"],
    ["-P", "thread"],
    ["--pool", "eventlet"],
    ["--prefetch-multiplier", "-1"],
    ["--prefetch-multiplier", "many"],
    ["-l", "verbose"],
    ["--result-expires", "-5"],
    ["--result-expires", "soon"],
    ["--visibility-timeout", "abc"],
    ["-b", "http://127.0.0.1:6379/0"],
    ["-b", "amqpx://guest@localhost//"],
    ["-b", "redis://127.0.0.1:notaport/0"],
    ["-b", "redis://127.0.0.1:6379/notadb"],
    ["--result-backend", "foo://127.0.0.1/0"],
    ["-c"],                                   # missing value
    ["worker", "extra-positional"],
], ids=lambda a: " ".join(a))
def test_bad_values_are_usage_errors(args):
    # a broker that would work, so the only thing wrong is the flag under test
    if "-b" not in args:
        args = args + ["-b", "redis://127.0.0.1:1/0"]
    assert_usage_error(run_cworker(args))


def write_config(tmp_path, text, name="cworker.conf"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_config_unknown_key_is_usage_error(tmp_path):
    cfg = write_config(tmp_path, "# comment\nbroker_url = redis://127.0.0.1:1/0\n"
                                 "worker_concurency = 2\n")
    assert_usage_error(run_cworker(["--config", cfg]), "worker_concurency")


@pytest.mark.parametrize("line", [
    "worker_concurrency = zero",
    "worker_pool = gevent",
    "result_extended = maybe",
    "broker_url = ftp://127.0.0.1/0",
    "this line has no equals sign",
])
def test_config_bad_value_is_usage_error(tmp_path, line):
    cfg = write_config(tmp_path, line + "\n")
    assert_usage_error(run_cworker(["--config", cfg]))


def test_config_missing_file_is_usage_error(tmp_path):
    assert_usage_error(run_cworker(["--config", str(tmp_path / "nope.conf")]))


def _which_db_consumed(srv, app_factory, dbs, timeout=10):
    """Send one task to each db; return the db whose queue the worker drained."""
    clients = {db: srv.client(db) for db in dbs}
    for db in dbs:
        app_factory(srv, db=db).send_task("cworker.noop")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [db for db in dbs if queue_len(clients[db]) == 0 and
                clients[db].hlen("unacked") == 0]
        if done:
            time.sleep(0.5)    # make sure no other db gets consumed as well
            return sorted(db for db in dbs if queue_len(clients[db]) == 0)
        time.sleep(0.05)
    return []


@pytest.mark.parametrize("sources,expected_db", [
    (("cli", "env", "file"), 3),
    (("env", "file"), 2),
    (("file",), 1),
], ids=["cli-wins", "env-beats-file", "file-only"])
def test_broker_precedence_cli_env_file(tmp_path, redis_server, cworker_factory, app_factory,
                                        sources, expected_db):
    srv = redis_server
    cfg = write_config(tmp_path, f"broker_url = {srv.url(1)}\n"
                                 f"result_backend = {srv.url(11)}\n"
                                 "worker_concurrency = 1\n")
    args = ["--config", cfg, "-l", "info"]
    env = {}
    if "env" in sources:
        env["CELERY_BROKER_URL"] = srv.url(2)
        env["CELERY_RESULT_BACKEND"] = srv.url(12)
    if "cli" in sources:
        args += ["-b", srv.url(3), "--result-backend", srv.url(13)]
    cworker_factory(args, raw=True, env=env)
    assert _which_db_consumed(srv, app_factory, [1, 2, 3]) == [expected_db]
    # the result went to the backend chosen by the same precedence
    backend_db = expected_db + 10
    c = srv.client(backend_db)
    wait_for(lambda: c.keys("celery-task-meta-*"), 10,
             what=f"result in backend db {backend_db}")
    for other in {11, 12, 13} - {backend_db}:
        assert srv.client(other).keys("celery-task-meta-*") == []


def test_config_file_settings_apply(tmp_path, redis_server, cworker_factory, app_factory):
    srv = redis_server
    cfg = write_config(tmp_path,
                       "# all of these come from the file\n"
                       "; semicolon comment\n"
                       f"broker_url = {srv.url(0)}\n"
                       f"result_backend = '{srv.url(0)}'\n"
                       "worker_concurrency = 1\n"
                       "worker_pool = solo\n"
                       "worker_queues = alpha, beta\n"
                       "worker_hostname = fromfile@%h\n"
                       "worker_loglevel = info\n"
                       "worker_prefetch_multiplier = 1\n"
                       "result_expires = 321\n"
                       "result_extended = yes\n"
                       "broker_transport_options.visibility_timeout = 7200\n"
                       "worker_diagnostic_tasks = true\n")
    w = cworker_factory(["--config", cfg], raw=True)
    assert "fromfile@" in w.log()
    app = app_factory(srv)
    r = app.send_task("cworker.getpid", queue="beta")
    assert r.get(timeout=10) == w.pid, "worker_pool = solo not applied"
    m = meta(srv.client(), r.id)
    assert m.get("queue") == "beta" and m.get("name") == "cworker.getpid", m
    ttl = srv.client().ttl(f"celery-task-meta-{r.id}")
    assert 300 <= ttl <= 321, f"result_expires from file not applied (ttl {ttl})"
    # diagnostic tasks registered: spin is known (not NotRegistered)
    app.send_task("cworker.spin", args=[0], queue="alpha").get(timeout=10)


def test_hostname_expansion_in_log(redis_server, cworker_factory):
    host = socket.gethostname()
    name, _, domain = host.partition(".")
    w = cworker_factory(["-n", "node-%n@%h", "-c", "1"], redis=redis_server)
    expected = f"node-{name}@{host}"
    ready = [l for l in w.log().splitlines() if "ready." in l]
    assert ready and expected in ready[0], f"expected {expected!r} in ready line: {ready}"
    w2 = cworker_factory(["-n", "x%%y@%n-%d", "-c", "1"], redis=redis_server)
    expected2 = f"x%y@{name}-{domain}"
    ready2 = [l for l in w2.log().splitlines() if "ready." in l]
    assert ready2 and expected2 in ready2[0], f"expected {expected2!r} in ready line: {ready2}"
    assert "%n" not in w2.log() and "%d" not in w2.log()


def test_default_hostname_is_celery_at_host(redis_server, cworker_factory):
    w = cworker_factory(["-c", "1"], redis=redis_server)
    ready = [l for l in w.log().splitlines() if "ready." in l]
    assert ready and f"celery@{socket.gethostname()}" in ready[0], ready


SECRET = "s3cr3t"


def test_password_never_logged(redis_factory, cworker_factory, app_factory):
    srv = redis_factory(password=SECRET)
    w = cworker_factory(["-c", "1", "-l", "debug"], redis=srv)
    app = app_factory(srv)
    assert app.send_task("cworker.add", args=[1, 2]).get(timeout=10) == 3
    # an error path too: an unregistered task is logged with its delivery details
    app.send_task("no.such.task")
    w.wait_log(r"unregistered", timeout=10)
    w.stop()
    log = w.log()
    assert SECRET not in log, "password leaked:\n" + \
        "\n".join(l for l in log.splitlines() if SECRET in l)


def test_password_not_logged_on_auth_failure(redis_factory, cworker_factory):
    srv = redis_factory(password="right-one")
    w = cworker_factory(["-c", "1", "-l", "debug", "-b", srv.url(password=SECRET),
                         "--result-backend", srv.url(password=SECRET)],
                        raw=True, wait_ready=False)
    # it cannot authenticate: it must log why and keep retrying, without the password
    w.wait_log(r"(?i)(ERROR|WARNING)", timeout=10)
    time.sleep(1)
    assert SECRET not in w.log(), "\n".join(l for l in w.log().splitlines() if SECRET in l)


@pytest.mark.parametrize("args", [
    ["-b", f"redis://:{SECRET}@127.0.0.1:99999/0"],
    ["--result-backend", f"bogus://:{SECRET}@127.0.0.1:6379/0"],
    ["-b", f"redis://user:{SECRET}@127.0.0.1:6379/x"],
])
def test_password_not_in_usage_error(args):
    r = run_cworker(args)
    assert r.returncode == EX_USAGE, r.stderr
    assert SECRET not in r.stderr + r.stdout, r.stderr


def test_password_not_in_config_error(tmp_path):
    cfg = write_config(tmp_path, f"broker_url = redis://:{SECRET}@127.0.0.1:99999/0\n")
    r = run_cworker(["--config", cfg])
    assert r.returncode == EX_USAGE, r.stderr
    assert SECRET not in r.stderr + r.stdout, r.stderr
