"""The stock-Python side of bench/office_bench.py: a Celery app whose
`docconv.convert` runs pandoc on the file, the way pandoc-based conversion
services do it today. Markdown (GitHub flavour) only."""

import os
import subprocess

from celery import Celery

app = Celery("py_office", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BROKER"])
app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                worker_hijack_root_logger=False)


@app.task(name="docconv.convert")
def convert(source, format="markdown", **kw):
    p = subprocess.run(["pandoc", "-f", "docx", "-t", "gfm", "--wrap=none", source],
                       check=True, capture_output=True, timeout=120)
    return {"format": "markdown", "pages": 1, "content": p.stdout.decode(), "ocr_pages": [],
            "warnings": []}
