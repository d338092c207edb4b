#!/usr/bin/python3
"""Send cworker's example tasks from a stock Python Celery producer and print the results.

Usage:
    /usr/bin/python3 examples/producer.py [BROKER_URL [RESULT_BACKEND_URL]]

The URLs default to $CELERY_BROKER_URL / $CELERY_RESULT_BACKEND, then to
redis://127.0.0.1:6379/0 (the backend defaults to the broker URL). Tasks are
sent by name with `send_task`, so this process needs no task code: any worker
that registers these names -- cworker or a Python worker -- can run them.
Exit status 0 when every result is what it should be.
"""

import os
import sys

from celery import Celery

TIMEOUT = float(os.environ.get("PRODUCER_TIMEOUT", "30"))


def main(argv):
    broker = argv[1] if len(argv) > 1 else os.environ.get("CELERY_BROKER_URL",
                                                           "redis://127.0.0.1:6379/0")
    backend = argv[2] if len(argv) > 2 else os.environ.get("CELERY_RESULT_BACKEND", broker)
    app = Celery("producer", broker=broker, backend=backend)
    app.conf.task_serializer = "json"
    app.conf.accept_content = ["json"]

    failures = 0

    def check(label, got, ok):
        nonlocal failures
        print(f"  {label:<44} -> {got!r}" + ("" if ok else "   <-- UNEXPECTED"))
        failures += not ok

    print(f"sending example tasks to {redact(broker)}")

    # Plain values: arguments travel as JSON, results come back as JSON.
    r = app.send_task("cworker.add", args=(2, 3))
    got = r.get(timeout=TIMEOUT)
    check("cworker.add(2, 3)", got, got == 5)

    doc = {"title": "Grüße 🌍", "pages": [1, 2, 3], "ratio": 0.25, "draft": None}
    got = app.send_task("cworker.echo", args=(doc,)).get(timeout=TIMEOUT)
    check("cworker.echo({...})", got, got == doc)

    # Many tasks at once: they run in parallel in the worker's children.
    rs = [app.send_task("cworker.add", args=(i, i)) for i in range(100)]
    got = [x.get(timeout=TIMEOUT) for x in rs]
    check("100 x cworker.add(i, i): sum", sum(got), got == [2 * i for i in range(100)])

    pids = {app.send_task("cworker.getpid").get(timeout=TIMEOUT) for _ in range(8)}
    check("cworker.getpid() x 8: distinct pids", sorted(pids), len(pids) >= 1)

    # Failures arrive as Python exceptions of the same type.
    try:
        app.send_task("cworker.fail", args=("ValueError", "example failure")).get(timeout=TIMEOUT)
        check("cworker.fail('ValueError', ...)", "no exception", False)
    except ValueError as e:
        check("cworker.fail('ValueError', ...) raised", e, True)

    # Document conversion tasks are added here when the docconv tasks land.

    app.close()
    print("all example tasks OK" if not failures else f"{failures} example task(s) FAILED")
    return 1 if failures else 0


def redact(url):
    """Never print a password: redis://:secret@host -> redis://:**@host."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        auth, host = rest.rsplit("@", 1)
        if ":" in auth:
            auth = auth.split(":", 1)[0] + ":**"
        return f"{scheme}://{auth}@{host}"
    return url


if __name__ == "__main__":
    sys.exit(main(sys.argv))
