"""A stock Python Celery app that registers cworker's built-in task names.

Used for mixed deployments (a Python worker and cworker on one broker) and by
bench/noop_bench.py. Configured from the environment:

  CW_TEST_BROKER               broker URL (default redis://127.0.0.1:6379/0)
  CW_TEST_BACKEND              result backend URL (default: none)
  CW_TEST_VISIBILITY_TIMEOUT   broker_transport_options.visibility_timeout
  CW_TEST_RESULT_EXPIRES       result_expires (seconds)
  CW_TEST_RESULT_EXTENDED      result_extended (1 = on)
  CW_TEST_QUEUE_MAX_PRIORITY   task_queue_max_priority (AMQP x-max-priority)

Run: PYTHONPATH=tests/integration /usr/bin/python3 -m celery -A cw_pyworker_app worker ...
"""

import os
import time

from celery import Celery

app = Celery("cw_pyworker_app",
             broker=os.environ.get("CW_TEST_BROKER", "redis://127.0.0.1:6379/0"),
             backend=os.environ.get("CW_TEST_BACKEND") or None)
app.conf.accept_content = ["json"]
app.conf.task_serializer = "json"
app.conf.result_serializer = "json"
app.conf.worker_hijack_root_logger = True
app.conf.worker_redirect_stdouts = False
if os.environ.get("CW_TEST_VISIBILITY_TIMEOUT"):
    app.conf.broker_transport_options = {
        "visibility_timeout": float(os.environ["CW_TEST_VISIBILITY_TIMEOUT"])}
if os.environ.get("CW_TEST_RESULT_EXPIRES"):
    app.conf.result_expires = int(os.environ["CW_TEST_RESULT_EXPIRES"]) or None
if os.environ.get("CW_TEST_QUEUE_MAX_PRIORITY"):
    app.conf.task_queue_max_priority = int(os.environ["CW_TEST_QUEUE_MAX_PRIORITY"])
if os.environ.get("CW_TEST_RESULT_EXTENDED") == "1":
    app.conf.result_extended = True


@app.task(name="cworker.noop")
def noop():
    return None


@app.task(name="cworker.echo")
def echo(value):
    return value


@app.task(name="cworker.add")
def add(a, b):
    return a + b


@app.task(name="cworker.sleep")
def sleep(seconds, value=None):
    time.sleep(seconds)
    return value


@app.task(name="cworker.getpid")
def getpid():
    return os.getpid()


@app.task(name="cworker.fail")
def fail(exc_type, message):
    import builtins
    cls = getattr(builtins, exc_type, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = type(exc_type, (Exception,), {})
    raise cls(message)
