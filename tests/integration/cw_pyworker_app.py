"""A stock Python Celery app that registers cworker's built-in task names.

Used for mixed deployments (a Python worker and cworker on one broker) and by
bench/noop_bench.py. Configured from the environment:

  CW_TEST_BROKER               broker URL (default redis://127.0.0.1:6379/0)
  CW_TEST_BACKEND              result backend URL (default: none)
  CW_TEST_VISIBILITY_TIMEOUT   broker_transport_options.visibility_timeout
  CW_TEST_RESULT_EXPIRES       result_expires (seconds)
  CW_TEST_RESULT_EXTENDED      result_extended (1 = on)
  CW_TEST_QUEUE_MAX_PRIORITY   task_queue_max_priority (AMQP x-max-priority)
  CW_TEST_ACKS_LATE            task_acks_late (1 = on)
  CW_TEST_MASTER_NAME          Sentinel master_name for the broker and the result backend
  CW_TEST_SSL_CA               CA file: broker_use_ssl / redis_backend_use_ssl with
                               ssl_cert_reqs = required (rediss:// URLs)
  CW_TEST_QUORUM_QUEUES        comma-separated queue names declared as quorum queues, with
                               per-consumer QoS as Celery 5.5 applies to them (5.2 always asks
                               RabbitMQ for global QoS, which quorum queues refuse)

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
if os.environ.get("CW_TEST_ACKS_LATE") == "1":
    app.conf.task_acks_late = True
if os.environ.get("CW_TEST_MASTER_NAME"):
    _opts = {"master_name": os.environ["CW_TEST_MASTER_NAME"]}
    app.conf.broker_transport_options = {**(app.conf.broker_transport_options or {}), **_opts}
    app.conf.result_backend_transport_options = _opts
if os.environ.get("CW_TEST_SSL_CA"):
    import ssl
    _ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": os.environ["CW_TEST_SSL_CA"]}
    app.conf.broker_use_ssl = _ssl
    app.conf.redis_backend_use_ssl = _ssl
if os.environ.get("CW_TEST_QUORUM_QUEUES"):
    from kombu import Exchange, Queue
    from kombu.transport import pyamqp
    app.conf.task_queues = [Queue(q, Exchange(q), routing_key=q,
                                  queue_arguments={"x-queue-type": "quorum"})
                            for q in os.environ["CW_TEST_QUORUM_QUEUES"].split(",")]
    # Celery 5.5 (worker_detect_quorum_queues) turns global QoS off for quorum queues
    pyamqp.Transport.qos_semantics_matches_spec = lambda self, connection: True


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
