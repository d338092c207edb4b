"""The stock-Python side of bench/docstore_bench.py: a Celery app whose
`docconv.convert(source, output="postgresql:TABLE")` converts with PyMuPDF
(python3-fitz) and inserts one row with psycopg2, the way a Python document
pipeline would: one connection per pool process, the same table layout and
the same UNIQUE (sha256, format) upsert as cworker's document store."""

import hashlib
import json
import os

import fitz
import psycopg2
from celery import Celery

app = Celery("py_docstore", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BROKER"])
app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                worker_hijack_root_logger=False)

_conn = None
_tables = set()


def connection():
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg2.connect(os.environ["BENCH_DATABASE"])
        _conn.autocommit = True
        _tables.clear()
    return _conn


def ensure(table):
    if table in _tables:
        return
    with connection().cursor() as cur:
        cur.execute("BEGIN; SELECT pg_advisory_xact_lock(8150914);"
                    f"CREATE TABLE IF NOT EXISTS {table} ("
                    " id BIGSERIAL PRIMARY KEY, source TEXT NOT NULL, sha256 CHAR(64) NOT NULL,"
                    " format TEXT NOT NULL, content TEXT NOT NULL, metadata JSONB,"
                    " page_count INTEGER, ocr_pages JSONB, warnings JSONB, batch TEXT,"
                    " task_id TEXT, created_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
                    " UNIQUE (sha256, format)); COMMIT;")
    _tables.add(table)


@app.task(name="docconv.convert", bind=True)
def convert(self, source, format="text", ocr="never", output=None, batch=None, **kw):
    table = output.split(":", 1)[1]
    with open(source, "rb") as f:
        data = f.read()
    sha = hashlib.sha256(data).hexdigest()
    doc = fitz.open(stream=data, filetype="pdf")
    text = "\f".join(page.get_text("text") for page in doc)
    n = doc.page_count
    meta = {k: v for k, v in (doc.metadata or {}).items() if v}
    doc.close()
    ensure(table)
    with connection().cursor() as cur:
        cur.execute(f"INSERT INTO {table} (source, sha256, format, content, metadata, page_count,"
                    " ocr_pages, warnings, batch, task_id) VALUES (%s, %s, %s, %s, %s, %s,"
                    " '[]', '[]', %s, %s) ON CONFLICT (sha256, format) DO UPDATE SET"
                    " content = EXCLUDED.content, created_at = now() RETURNING id",
                    (source, sha, format, text, json.dumps(meta), n, batch, self.request.id))
        rid = cur.fetchone()[0]
    return {"table": table, "id": rid, "sha256": sha, "deduplicated": False, "pages": n}
