#!/usr/bin/python3
"""Bulk load into the PostgreSQL document store: rows/s from cworker -c 2
against a stock Python Celery worker (prefork -c 2) that converts with
PyMuPDF and inserts with psycopg2, same PostgreSQL, same documents, one run.

Usage: /usr/bin/python3 bench/docstore_bench.py [--docs 400] [--pages 2]
       [--rounds 3] [--cworker build/src/cworker] [--short]
--short: 20 documents, one round (the CI smoke).

One throwaway redis-server and one throwaway PostgreSQL cluster (initdb in a
temporary directory, loopback, fsync off, as in the tests). Each document is
one docconv.convert(source, format="text", ocr="never",
output="postgresql:TABLE") task; each worker writes its own table. The
messages are published onto a held list first and RENAMEd onto the worker's
queue at once (as noop_bench.py does), so the clock covers only fetch,
convert, INSERT, result and ack: from the RENAME until every result key
exists; then the table must hold one row per document. Both workers run at once on their own queues; rounds
alternate between them (the idle one waits on an empty queue) and the best round of
each is reported, which evens out a noisy shared machine.
"""

import argparse
import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

import psycopg2
import redis as redis_client
from celery import Celery

from docconv_bench import HERE, free_port, make_corpus, wait_ready
from harness import stop_worker  # noqa: E402


class Postgres:
    """initdb + pg_ctl in a temporary directory (as the postgres user when we are root)."""

    def __init__(self, tmp):
        self.bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        self.port = free_port()
        self.dir = os.path.join(tmp, "pg")
        os.mkdir(self.dir)
        self.as_user = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = os.path.join(self.dir, "data")
        self.run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync",
                 "-E", "UTF8")
        self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "-o",
                 f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                 "start")

    def run(self, cmd, *args):
        subprocess.run(self.as_user + [os.path.join(self.bindir, cmd), *args], check=True,
                       capture_output=True, timeout=120)

    def url(self):
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def count(self, table):
        with psycopg2.connect(self.url()) as c, c.cursor() as cur:
            cur.execute(f"SELECT count(*), count(DISTINCT sha256) FROM {table}")
            return cur.fetchone()

    def stop(self):
        subprocess.run(self.as_user + [os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                                       "-m", "fast", "-w", "stop"], capture_output=True)


def run_batch(app, r, files, table, queue):
    """Publish one task per file onto a held list, RENAME it onto the worker's queue (all
    messages appear at once: producer speed is not measured), stop the clock when every
    result key holds a final state (cworker stores PROGRESS while a document converts, so
    a key can exist before its result). Returns (seconds, distinct row ids)."""
    hold = queue + "_held"
    ids = [app.send_task("docconv.convert", args=[f], queue=hold,
                         kwargs={"format": "text", "ocr": "never",
                                 "output": f"postgresql:{table}"}).id for f in files]
    keys = [f"celery-task-meta-{i}" for i in ids]
    t0 = time.monotonic()
    r.rename(hold, queue)
    while True:
        if sum(r.exists(*keys[i:i + 500]) for i in range(0, len(keys), 500)) == len(keys):
            metas = [json.loads(m) for m in r.mget(keys)]
            if all(m["status"] in ("SUCCESS", "FAILURE") for m in metas):
                break
        if time.monotonic() - t0 > 600:
            raise SystemExit(f"{queue}: results missing after 600 s")
        time.sleep(0.005)
    secs = time.monotonic() - t0
    bad = [m for m in metas if m["status"] != "SUCCESS"]
    if bad:
        raise SystemExit(f"{queue}: {len(bad)} tasks failed, e.g. {bad[0]}")
    return secs, len({m["result"]["id"] for m in metas})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--pages", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cworker", default=os.path.join(HERE, "..", "build", "src", "cworker"))
    ap.add_argument("--short", action="store_true", help="CI smoke: 20 documents, one round")
    a = ap.parse_args()
    if a.short:
        a.docs, a.rounds = 20, 1
    tmp = tempfile.mkdtemp(prefix="cw-dsbench-")
    os.chmod(tmp, 0o755)
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", tmp],
                             stdout=subprocess.DEVNULL)
    procs, pg = [redis], None
    try:
        pg = Postgres(tmp)
        corpus = os.path.join(tmp, "corpus")
        os.mkdir(corpus)
        os.chmod(corpus, 0o755)
        make_corpus(corpus, a.docs + 2, a.pages)
        files = [os.path.join(corpus, f) for f in sorted(os.listdir(corpus))]
        warm, files = files[:2], files[2:]
        app = Celery(broker=url, backend=url)
        r = redis_client.Redis(host="127.0.0.1", port=port)

        log = os.path.join(tmp, "cworker.log")
        cw = subprocess.Popen([a.cworker, "-b", url, "--result-backend", url, "-c", "2",
                               "--prefetch-multiplier", "1", "-l", "info", "-Q", "cw",
                               "--docconv-roots", tmp, "-n", "bench-cw@%h",
                               "--database-url", pg.url()],
                              stderr=open(log, "w"), env=env)
        procs.append(cw)
        log = os.path.join(tmp, "py.log")
        py = subprocess.Popen(["/usr/bin/python3", "-m", "celery", "-A", "py_docstore_app",
                               "worker", "-P", "prefork", "-c", "2", "--prefetch-multiplier", "1",
                               "-l", "info", "-Q", "py", "-n", "bench-py@%h", "--without-gossip",
                               "--without-mingle", "--without-heartbeat"],
                              stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=HERE,
                              env=dict(env, BENCH_BROKER=url, BENCH_DATABASE=pg.url(),
                                       PYTHONPATH=HERE))
        procs.append(py)
        wait_ready(os.path.join(tmp, "cworker.log"), cw, "ready.")
        wait_ready(log, py, "ready.")
        # warm up: both children of each worker connected, tables created, statements prepared
        for q in ("cw", "py"):
            run_batch(app, r, warm, f"{q}_warm", q)
        # rounds alternate between the workers (the idle one waits on its own
        # empty queue); each round writes a fresh table; the best round of each is reported
        rounds = {"cworker": [], "python": []}
        for i in range(a.rounds):
            for k, q in (("cworker", "cw"), ("python", "py")):
                table = f"{q}_docs_{i}"
                secs, ids = run_batch(app, r, files, table, q)
                rows, distinct = pg.count(table)
                if rows != a.docs or distinct != a.docs or ids != a.docs:
                    raise SystemExit(f"{k}: {rows} rows ({distinct} distinct, {ids} ids) "
                                     f"for {a.docs} documents")
                rounds[k].append(secs)
        results = {k: (min(v), a.docs) for k, v in rounds.items()}

        print(f"\n{a.docs} PDFs x {a.pages} pages, docconv.convert(format='text', ocr='never', "
              f"output='postgresql:TABLE'), -c 2 --prefetch-multiplier 1, one PostgreSQL")
        print(f"best of {a.rounds} alternating rounds; all rounds (s): "
              + "; ".join(f"{k} " + " ".join(f"{x:.2f}" for x in v) for k, v in rounds.items()))
        print(f"{'worker':<30}{'seconds':>9}{'rows':>7}{'rows/s':>9}")
        for k, label in (("cworker", "cworker (MuPDF + libpq, C)"),
                         ("python", "celery + PyMuPDF + psycopg2")):
            secs, rows = results[k]
            print(f"{label:<30}{secs:>9.2f}{rows:>7}{rows / secs:>9.1f}")
        ratio = (results["cworker"][1] / results["cworker"][0]) / (
            results["python"][1] / results["python"][0])
        print(f"cworker / python: rows/s x{ratio:.2f}")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                stop_worker(p)
        if pg:
            pg.stop()
        if os.environ.get("BENCH_KEEP"):
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
