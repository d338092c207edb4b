"""The stock-Python side of bench/docconv_bench.py: a Celery app whose
`docconv.convert` extracts text with PyMuPDF (python3-fitz), the way a
Python document pipeline does it today. Only format="text", no OCR."""

import os

import fitz
from celery import Celery

app = Celery("py_docconv", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BROKER"])
app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                worker_hijack_root_logger=False)


@app.task(name="docconv.convert")
def convert(source, format="text", ocr="never", pages=None, **kw):
    doc = fitz.open(source)
    text = "\f".join(page.get_text("text") for page in doc)
    n = doc.page_count
    doc.close()
    return {"format": "text", "pages": n, "content": text, "ocr_pages": [], "warnings": []}
