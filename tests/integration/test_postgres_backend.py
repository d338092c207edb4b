"""Celery's database result backend on a real PostgreSQL: cworker writes
celery_taskmeta rows that Python producers (SQLAlchemy + psycopg2) read as if
a Python worker had written them."""

import pickle
import signal
import time

import pytest

from conftest import SLOW, make_app, close_app, run_cworker, wait_for

pytest.importorskip("sqlalchemy")
pytest.importorskip("psycopg2")


def needs_postgres():
    p = run_cworker(["--result-backend", "db+postgresql://u@127.0.0.1:1/x", "--list-tasks"])
    if p.returncode != 0:
        pytest.skip("cworker built without the PostgreSQL backend")


@pytest.fixture
def pg_app(redis_server, pg_server):
    apps = []

    def make(**conf):
        a = make_app(redis_server.url(), pg_server.url(), **conf)
        apps.append(a)
        return a
    yield make
    for a in apps:
        close_app(a)


def row(pg, task_id, cols="status, result, date_done, traceback"):
    rows = pg.sql(f"SELECT {cols} FROM celery_taskmeta WHERE task_id = '{task_id}'")
    assert len(rows) == 1, rows
    return rows[0]


def test_results_round_trip_through_postgres(redis_server, pg_server, cworker_factory, pg_app):
    needs_postgres()
    cworker_factory(["-c", "2", "--result-backend", pg_server.url()], redis=redis_server)
    app = pg_app()
    assert app.send_task("cworker.add", args=[2, 3]).get(timeout=20) == 5
    value = {"title": "Grüße", "n": [1, 2.5, None, True], "big": 2 ** 70}
    r = app.send_task("cworker.echo", args=[value])
    assert r.get(timeout=20) == value
    status, result, date_done, tb = row(pg_server, r.id)
    assert status == "SUCCESS" and pickle.loads(bytes(result)) == value
    assert date_done is not None and tb is None
    bad = app.send_task("cworker.fail", args=["KeyError", "missing"])
    with pytest.raises(KeyError):
        bad.get(timeout=20)
    status, result, _, tb = row(pg_server, bad.id)
    exc = pickle.loads(bytes(result))
    assert status == "FAILURE" and exc["exc_type"] == "KeyError" and list(exc["exc_message"]) == ["missing"]
    assert "KeyError" in tb
    # the tables are Celery's: sequence-numbered ids, unique task ids
    assert pg_server.sql("SELECT count(*) FROM celery_taskmeta")[0][0] == 3
    assert pg_server.sql("SELECT last_value FROM task_id_sequence")[0][0] >= 3


def test_rows_match_a_python_workers_rows(redis_server, pg_server, cworker_factory,
                                          pyworker_factory, pg_app):
    needs_postgres()
    app = pg_app()
    # the Python worker creates the tables (SQLAlchemy), cworker then writes into them
    py = pyworker_factory(redis_server, queues="py", backend=pg_server.url())
    rp = app.send_task("cworker.echo", args=[{"a": [1, "x"]}], queue="py")
    # (this client process may have created Celery's tables on another server already,
    # and SQLAlchemy's create_all runs once per process: read only once they exist)
    wait_for(lambda: pg_server.sql("SELECT to_regclass('celery_taskmeta')")[0][0], 30,
             what="the Python worker created celery_taskmeta")
    assert rp.get(timeout=30) == {"a": [1, "x"]}
    cworker_factory(["-c", "1", "-Q", "cw", "--result-backend", pg_server.url()], redis=redis_server)
    rc = app.send_task("cworker.echo", args=[{"a": [1, "x"]}], queue="cw")
    assert rc.get(timeout=30) == {"a": [1, "x"]}
    p_status, p_result, p_done, _ = row(pg_server, rp.id)
    c_status, c_result, c_done, _ = row(pg_server, rc.id)
    assert (p_status, pickle.loads(bytes(p_result))) == (c_status, pickle.loads(bytes(c_result)))
    assert p_done is not None and c_done is not None
    # the same failure from both: the same exception class at the client
    fp = app.send_task("cworker.fail", args=["ValueError", "x"], queue="py")
    fc = app.send_task("cworker.fail", args=["ValueError", "x"], queue="cw")
    for r in (fp, fc):
        with pytest.raises(ValueError):
            r.get(timeout=30)
    assert pickle.loads(bytes(row(pg_server, fp.id)[1])) == pickle.loads(bytes(row(pg_server, fc.id)[1]))
    py.stop()


def test_extended_results(redis_server, pg_server, cworker_factory, pg_app):
    needs_postgres()
    cworker_factory(["-c", "1", "--result-backend", pg_server.url(), "--result-extended",
                     "-n", "ext@host"], redis=redis_server)
    app = pg_app(result_extended=True)
    r = app.send_task("cworker.add", args=[20, 22])
    assert r.get(timeout=20) == 42
    m = app.backend.get_task_meta(r.id)
    assert m["name"] == "cworker.add" and m["args"] == [20, 22] and m["kwargs"] == {}
    assert m["worker"] == "ext@host" and m["queue"] == "celery" and m["retries"] == 0


def test_success_is_never_overwritten(redis_server, pg_server, cworker_factory, pg_app):
    needs_postgres()
    w = cworker_factory(["-c", "1", "--result-backend", pg_server.url()], redis=redis_server)
    app = pg_app()
    r = app.send_task("cworker.add", args=[1, 1], task_id="dup-task-0001")
    assert r.get(timeout=20) == 2
    # the same id again, failing this time (a redelivered duplicate, say)
    app.send_task("cworker.fail", args=["ValueError", "late"], task_id="dup-task-0001")
    w.wait_log(r"Task cworker.fail\[dup-task-0001\] raised unexpected", timeout=20)
    time.sleep(0.3)
    assert row(pg_server, "dup-task-0001")[0] == "SUCCESS"
    assert app.AsyncResult("dup-task-0001").get(timeout=5) == 2


def test_postgres_restart_loses_no_result(redis_server, pg_server, cworker_factory, pg_app):
    needs_postgres()
    w = cworker_factory(["-c", "1", "--result-backend", pg_server.url()], redis=redis_server)
    app = pg_app()
    assert app.send_task("cworker.add", args=[1, 2]).get(timeout=20) == 3
    pg_server.stop()
    r = app.send_task("cworker.sleep", args=[0.2, "after"])
    w.wait_log(r"retrying for up to", timeout=20)
    pg_server.start()
    wait_for(lambda: pg_server.sql(
        f"SELECT status FROM celery_taskmeta WHERE task_id = '{r.id}'") == [("SUCCESS",)],
        30 * SLOW, what="result stored after the restart")
    assert app.send_task("cworker.add", args=[2, 2]).get(timeout=20) == 4


def test_bad_backend_url_is_a_usage_error():
    p = run_cworker(["--result-backend", "db+mysql://u@h/db", "-b", "redis://127.0.0.1:1/0"])
    assert p.returncode == 64 and "unsupported URL" in p.stderr


def test_custom_table_names_and_schema(redis_server, pg_server, cworker_factory, pg_app):
    needs_postgres()
    cworker_factory(["-c", "1", "--result-backend", pg_server.url(),
                     "--database-table-names-task", "jobs_taskmeta",
                     "--database-table-schemas-task", "results"], redis=redis_server)
    app = pg_app(database_table_names={"task": "jobs_taskmeta", "group": "jobs_groupmeta"},
                 database_table_schemas={"task": "results"})
    r = app.send_task("cworker.add", args=[3, 4])
    wait_for(lambda: pg_server.sql("SELECT to_regclass('results.jobs_taskmeta')")[0][0], 20,
             what="results.jobs_taskmeta")
    assert r.get(timeout=20) == 7
    assert pg_server.sql("SELECT status FROM results.jobs_taskmeta") == [("SUCCESS",)]


def test_backend_cleanup_deletes_expired_rows(redis_server, pg_server, cworker_factory, pg_app):
    needs_postgres()
    cworker_factory(["-c", "1", "--result-backend", pg_server.url(), "--result-expires", "60"],
                    redis=redis_server)
    app = pg_app()
    old = app.send_task("cworker.add", args=[1, 1])
    new = app.send_task("cworker.add", args=[2, 2])
    assert old.get(timeout=20) == 2 and new.get(timeout=20) == 4
    pg_server.sql("UPDATE celery_taskmeta SET date_done = date_done - interval '2 hours' "
                  f"WHERE task_id = '{old.id}'")
    # what celery beat sends every day
    app.send_task("celery.backend_cleanup").get(timeout=20)
    ids = {r[0] for r in pg_server.sql("SELECT task_id FROM celery_taskmeta")}
    assert old.id not in ids and new.id in ids
