"""docconv.convert(output="postgresql:TABLE"): the PostgreSQL document store.
Rows read back with psycopg2, dedup under concurrency (the UNIQUE constraint
decides), batch progress through `cworker batch status`, hostile table names
and a database that is down."""

import hashlib
import json
import os
import time

import pytest

from conftest import SLOW, run_cworker, wait_for

fitz = pytest.importorskip("fitz")
pytest.importorskip("psycopg2")

from celery import group  # noqa: E402

TEXT = ["Document store test page one.", "It has two lines of text."]


def needs_docstore():
    p = run_cworker(["--list-tasks"])
    if "docconv.convert" not in p.stdout:
        pytest.skip("cworker built without docconv")
    # a build without libpq has no document store; with libpq it must have one
    p = run_cworker(["--result-backend", "db+postgresql://u@127.0.0.1:1/x", "--list-tasks"])
    if p.returncode != 0:
        pytest.skip("cworker built without PostgreSQL (libpq)")


def make_pdf(path, lines, pages=1, title="Stored"):
    doc = fitz.open()
    for n in range(pages):
        page = doc.new_page(width=612, height=792)
        y = 72
        for line in lines + [f"Page {n + 1}"]:
            page.insert_text((72, y), line, fontsize=11, fontname="helv")
            y += 20
    doc.set_metadata({"title": title, "author": "Docstore Tests"})
    doc.save(str(path))


@pytest.fixture
def docs(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    make_pdf(root / "a.pdf", TEXT, pages=2)
    for i in range(4):
        make_pdf(root / f"b{i}.pdf", [f"Batch document number {i}."])
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(3000))
    return root


def pg_url(pg):
    return f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"


@pytest.fixture
def store_worker(redis_server, pg_server, cworker_factory, docs):
    needs_docstore()

    def start(concurrency=2, url=None, name=None):
        return cworker_factory(["-c", str(concurrency), "--docconv-roots", str(docs)],
                               redis=redis_server, name=name,
                               env={"CWORKER_DATABASE_URL": url or pg_server.url()})
    return start


def convert(app, src, timeout=60, **kw):
    return app.send_task("docconv.convert", args=[str(src)], kwargs=kw).get(timeout=timeout * SLOW)


def test_stores_one_row_per_document(store_worker, app, pg_server, docs):
    store_worker()
    src = docs / "a.pdf"
    r = convert(app, src, format="text", output="postgresql:documents")
    inline = convert(app, src, format="text")
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert r["table"] == "documents" and isinstance(r["id"], int)
    assert r["sha256"] == sha and r["deduplicated"] is False
    assert "content" not in r and r["pages"] == 2 and r["bytes"] > 0
    rows = pg_server.sql("SELECT id, source, sha256, format, content, metadata, page_count,"
                         " ocr_pages, warnings, created_at FROM documents")
    assert len(rows) == 1
    rid, source, rsha, fmt, content, meta, pages, ocr, warnings, created = rows[0]
    assert rid == r["id"] and source == str(src) and rsha == sha and fmt == "text"
    assert content == inline["content"]
    assert isinstance(meta, dict) and meta["title"] == "Stored"
    assert meta["author"] == "Docstore Tests"
    assert pages == 2 and ocr == [] and isinstance(warnings, list) and created is not None
    # json content is stored as its JSON text; schema.table names work too
    j = convert(app, src, format="json", output="postgresql:store.docs_json")
    (content,) = pg_server.sql(f"SELECT content FROM store.docs_json WHERE id = {j['id']}")[0]
    assert json.loads(content)["pages"][0]["number"] == 1


def test_dedup_returns_the_stored_row(store_worker, app, pg_server, docs):
    store_worker()
    first = convert(app, docs / "a.pdf", output="postgresql:documents", dedup=True)
    again = convert(app, docs / "a.pdf", output="postgresql:documents", dedup=True)
    assert first["deduplicated"] is False and again["deduplicated"] is True
    assert again["id"] == first["id"] and again["sha256"] == first["sha256"]
    assert pg_server.sql("SELECT count(*) FROM documents")[0][0] == 1
    # another format of the same bytes is another document
    other = convert(app, docs / "a.pdf", format="text", output="postgresql:documents", dedup=True)
    assert other["deduplicated"] is False and other["id"] != first["id"]
    # without dedup the row is converted again and refreshed in place, still one per format
    redo = convert(app, docs / "a.pdf", output="postgresql:documents")
    assert redo["id"] == first["id"]
    assert pg_server.sql("SELECT count(*) FROM documents")[0][0] == 2


def test_concurrent_workers_store_a_document_once(store_worker, app, pg_server, docs):
    # two worker processes (two children each) race on the same document and an empty
    # database: the table is created once and the UNIQUE constraint keeps one row
    store_worker(name="w1")
    store_worker(name="w2")
    sigs = [app.signature("docconv.convert", args=[str(docs / "a.pdf")],
                          kwargs={"output": "postgresql:race", "dedup": True})
            for _ in range(24)]
    results = group(sigs).apply_async().get(timeout=120 * SLOW)
    assert len({r["id"] for r in results}) == 1
    assert sum(not r["deduplicated"] for r in results) == 1
    assert pg_server.sql("SELECT count(*) FROM race")[0][0] == 1
    # one connection per pool child (2 workers x 2 children), not one per task
    conns = pg_server.sql("SELECT count(*) FROM pg_stat_activity"
                          " WHERE application_name = 'cworker-docstore'")[0][0]
    assert 1 <= conns <= 4


def batch_status(pg, batch_id, *extra):
    p = run_cworker(["batch", "status", batch_id, "--database", pg.url(), *extra])
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_batch_status_counts_done_and_failed(store_worker, app, pg_server, docs):
    store_worker()
    sources = [docs / f"b{i}.pdf" for i in range(4)] + [docs / "broken.pdf"]
    pending = [app.send_task("docconv.convert", args=[str(s)],
                             kwargs={"output": "postgresql:documents", "batch": "nightly-1",
                                     "batch_total": 6})
               for s in sources]
    outcomes = []
    for p in pending:
        try:
            outcomes.append(p.get(timeout=60 * SLOW)["id"])
        except Exception as e:  # the broken document
            outcomes.append(type(e).__name__)
    assert outcomes[-1] == "DocumentError"
    text = batch_status(pg_server, "nightly-1")
    assert "done: 4" in text and "failed: 1" in text and "total: 6" in text
    assert "pending: 1" in text and "documents/s" in text
    assert "broken.pdf" in text and "DocumentError" in text
    js = json.loads(batch_status(pg_server, "nightly-1", "--json"))
    assert js["done"] == 4 and js["failed"] == 1 and js["total"] == 6 and js["pending"] == 1
    assert js["documents_per_second"] > 0
    assert js["failures"][0]["source"] == str(docs / "broken.pdf")
    rows = pg_server.sql("SELECT count(*) FROM documents WHERE batch = 'nightly-1'")
    assert rows[0][0] == 4
    # a group without batch= is its own batch (Celery messages carry no group size)
    res = group(app.signature("docconv.convert", args=[str(docs / "a.pdf")],
                              kwargs={"output": "postgresql:documents"})
                for _ in range(2)).apply_async()
    res.get(timeout=60 * SLOW)
    js = json.loads(batch_status(pg_server, res.id, "--json"))
    assert js["done"] == 2 and js["failed"] == 0 and js["total"] is None
    # an unknown batch is empty, not an error
    js = json.loads(batch_status(pg_server, "no-such-batch", "--json"))
    assert js["done"] == 0 and js["failed"] == 0


def test_batch_cli_errors_are_clear(pg_server):
    needs_docstore()
    p = run_cworker(["batch", "status", "x"])
    assert p.returncode == 64 and "CWORKER_DATABASE_URL" in p.stderr
    p = run_cworker(["batch", "status", "x", "--database", "redis://127.0.0.1/0"])
    assert p.returncode == 64 and "postgresql" in p.stderr
    p = run_cworker(["batch", "status", "x", "--database",
                     "postgresql://u:hunter2@127.0.0.1:1/db"])
    assert p.returncode == 1 and "cannot connect" in p.stderr and "hunter2" not in p.stderr
    p = run_cworker(["batch", "status", "x", "--database",
                     "postgresql://127.0.0.1:1/db?sslmode=disable&password=hunter3"])
    assert p.returncode == 1 and "password=**" in p.stderr and "hunter3" not in p.stderr


@pytest.mark.parametrize("table", ['docs"; DROP TABLE x; --', "1docs", "a.b.c", "",
                                   "x" * 64, "bad-name", "sch.", ".tbl"])
def test_bad_table_names_are_refused(store_worker, app, pg_server, docs, table):
    store_worker(concurrency=1)
    with pytest.raises(ValueError, match="not a table name"):
        convert(app, docs / "a.pdf", output="postgresql:" + table)
    # the worker keeps serving
    assert convert(app, docs / "a.pdf", output="postgresql:documents")["id"] >= 1
    assert pg_server.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                         " AND tablename NOT IN ('documents', 'cworker_batch_items')")[0][0] == 0


def test_bad_arguments_fail_clearly(store_worker, app, docs):
    store_worker(concurrency=1)
    with pytest.raises(TypeError, match="need output"):
        convert(app, docs / "a.pdf", dedup=True)
    with pytest.raises(TypeError, match="dedup"):
        convert(app, docs / "a.pdf", output="postgresql:documents", dedup="yes")
    with pytest.raises(ValueError, match="batch_total"):
        convert(app, docs / "a.pdf", output="postgresql:documents", batch="b", batch_total=-1)


def test_no_database_configured(redis_server, cworker_factory, app, docs):
    needs_docstore()
    cworker_factory(["-c", "1", "--docconv-roots", str(docs)], redis=redis_server)
    with pytest.raises(ValueError, match="database_url"):
        convert(app, docs / "a.pdf", output="postgresql:documents")


def test_database_down_fails_clearly_and_recovers(store_worker, app, pg_server, docs):
    w = store_worker(concurrency=1)
    assert convert(app, docs / "a.pdf", output="postgresql:documents")["id"] >= 1
    pg_server.stop()
    t0 = time.monotonic()
    with pytest.raises(Exception) as exc:
        convert(app, docs / "b0.pdf", output="postgresql:documents")
    assert type(exc.value).__name__ == "DatabaseError"
    assert "cannot connect" in str(exc.value) or "terminat" in str(exc.value) or \
        "closed" in str(exc.value)
    assert time.monotonic() - t0 < 40 * SLOW
    assert w.alive()
    pg_server.start()
    # the child reconnects on the next task
    r = convert(app, docs / "b1.pdf", output="postgresql:documents")
    assert r["deduplicated"] is False
    assert pg_server.sql("SELECT count(*) FROM documents")[0][0] == 2


def test_password_is_not_logged(redis_server, pg_server, cworker_factory, app, docs):
    needs_docstore()
    w = cworker_factory(["-c", "1", "--docconv-roots", str(docs)], redis=redis_server,
                        env={"CWORKER_DATABASE_URL":
                             f"db+postgresql://postgres:s3cretpw@127.0.0.1:{free_port_of(pg_server)}/x"})
    with pytest.raises(Exception) as exc:
        convert(app, docs / "a.pdf", output="postgresql:documents", batch="b")
    assert "s3cretpw" not in str(exc.value) and "**" in str(exc.value)
    wait_for(lambda: "docconv.convert" in w.log(), 10, what="task logged")
    assert "s3cretpw" not in w.log()


def free_port_of(pg):
    # a port nothing listens on: the server's port + 1 is free in practice; use a fresh one
    from conftest import free_port
    return free_port()


def test_postgres_url_forms_accepted(store_worker, app, pg_server, docs):
    store_worker(url=pg_url(pg_server))
    assert convert(app, docs / "a.pdf", output="postgresql:documents")["id"] >= 1


def test_bad_database_url_stops_the_worker(redis_server, docs):
    needs_docstore()
    p = run_cworker(["-b", redis_server.url(), "--docconv-roots", str(docs),
                     "--database-url", "mysql://u:pw@127.0.0.1/x"], timeout=20)
    assert p.returncode != 0 and "postgresql" in p.stderr and ":pw@" not in p.stderr


def test_hostile_metadata_is_stored(store_worker, app, pg_server, docs):
    # control characters and quotes in metadata: stored as jsonb, read back intact
    make_pdf(docs / "nul.pdf", ["Odd metadata."], title="Bad\x01\x00Title \"'; --")
    store_worker(concurrency=1)
    r = convert(app, docs / "nul.pdf", format="json", output="postgresql:documents")
    (meta,) = pg_server.sql(f"SELECT metadata FROM documents WHERE id = {r['id']}")[0]
    assert meta["title"].startswith("Bad")


def test_server_restart_between_tasks_is_invisible(store_worker, app, pg_server, docs):
    # the child's connection is dead after the restart: the statement fails, the child
    # reconnects, prepares again and retries once; the task succeeds
    store_worker(concurrency=1)
    first = convert(app, docs / "b0.pdf", output="postgresql:documents", batch="r")
    pg_server.stop()
    pg_server.start()
    second = convert(app, docs / "b1.pdf", output="postgresql:documents", batch="r")
    assert second["id"] != first["id"]
    assert pg_server.sql("SELECT count(*) FROM documents")[0][0] == 2
    assert json.loads(batch_status(pg_server, "r", "--json"))["done"] == 2
