#!/usr/bin/env python3
"""Fingerprint stored files with the probe task module from plain Python Celery.

    python3 producer.py [--json] [--many] SOURCE...

SOURCE is what the worker's storage reads: a path under its docconv_roots,
file:///abs, http(s)://... or s3://bucket/key.  Each result is printed as
`sha256  size  mime  source` (or one JSON object per line with --json);
--many sends all sources as one probe.stat_many task and shows its
PROGRESS while it runs.  A source that fails is printed to stderr with its
exception, and the exit status is then 1.

The broker and the result backend come from CELERY_BROKER_URL and
CELERY_RESULT_BACKEND (default: redis://localhost:6379/0 for both).
Nothing here imports the module: the worker owns the task, the producer
only knows its name.
"""

import argparse
import json
import os
import sys
import time

from celery import Celery


def make_app():
    broker = os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0")
    backend = os.environ.get("CELERY_RESULT_BACKEND", broker)
    app = Celery("probe_producer", broker=broker, backend=backend)
    app.conf.task_serializer = "json"
    app.conf.result_serializer = "json"
    app.conf.accept_content = ["json"]
    return app


def show(source, info, as_json):
    if as_json:
        print(json.dumps({"source": source, **info}), flush=True)
    else:
        print(f"{info['sha256']}  {info['size']:>10}  {info['mime'] or '?':<28}  {source}",
              flush=True)


def one_by_one(app, sources, as_json, timeout):
    # send everything first: the worker's pool probes them in parallel
    pending = [(s, app.send_task("probe.stat", args=[s])) for s in sources]
    failed = 0
    for source, r in pending:
        try:
            show(source, r.get(timeout=timeout), as_json)
        except Exception as e:  # the task's exception, rebuilt by Celery
            print(f"{source}: {type(e).__name__}: {e}", file=sys.stderr)
            failed += 1
    return failed


def all_at_once(app, sources, as_json, timeout):
    r = app.send_task("probe.stat_many", args=[sources])
    deadline = time.monotonic() + timeout
    while not r.ready() and time.monotonic() < deadline:
        # two reads of the backend: the task may have ended in between (info is the result)
        state, info = r.state, r.info
        if state == "PROGRESS" and isinstance(info, dict):
            print(f"progress: {info['current']}/{info['total']}", file=sys.stderr)
        time.sleep(0.2)
    try:
        results = r.get(timeout=max(deadline - time.monotonic(), 1))
    except Exception as e:
        print(f"stat_many: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    for source, info in zip(sources, results):
        show(source, info, as_json)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sources", nargs="+", metavar="SOURCE")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--many", action="store_true", help="one probe.stat_many task")
    ap.add_argument("--timeout", type=float, default=60, help="seconds to wait for results")
    a = ap.parse_args()
    app = make_app()
    try:
        run = all_at_once if a.many else one_by_one
        failed = run(app, a.sources, a.json, a.timeout)
    finally:
        app.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
