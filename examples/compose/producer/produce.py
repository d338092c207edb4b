#!/usr/bin/python3
"""Send cworker.add by name every INTERVAL seconds and print each result:
the Python side of the Compose example (no task code needed)."""
import itertools
import os
import time

from celery import Celery

app = Celery("producer", broker=os.environ["BROKER_URL"], backend=os.environ["BACKEND_URL"])
interval = float(os.environ.get("INTERVAL", "2"))

for i in itertools.count():
    r = app.send_task("cworker.add", args=(i, i))
    try:
        print(f"cworker.add({i}, {i}) = {r.get(timeout=30)}", flush=True)
    except Exception as e:  # keep producing through a worker restart
        print(f"cworker.add({i}, {i}) failed: {e!r}", flush=True)
    time.sleep(interval)
