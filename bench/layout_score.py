#!/usr/bin/python3
"""Layout scores (issue 16) of cworker's Markdown next to pdftotext and PyMuPDF get_text(),
on the generated corpus of tests/layout/layout_corpus.py (ground truth known), plus the Debian
documentation PDFs found under /usr/share/doc (robustness: converted without error, and the
tables found there).

Usage: /usr/bin/python3 bench/layout_score.py [--cworker build/src/cworker]
       [--before OLD_CWORKER] [--json out.json]

--before scores another cworker binary too (e.g. one built from the commit before the layout
pass) for the "before" column.  pdftotext comes from poppler-utils.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import fitz
from celery import Celery

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "layout"))
sys.path.insert(0, HERE)
import layout_corpus  # noqa: E402
from docconv_bench import free_port, wait_ready  # noqa: E402
from harness import stop_worker  # noqa: E402

KEYS = [("ruled_cell_f1", "ruled table cell F1"), ("unruled_cell_f1", "unruled table cell F1"),
        ("furniture_removed", "pages with header/footer removed"),
        ("body_paragraphs_lost", "paragraphs with a sentence cut or lost"),
        ("rejoined", "split paragraphs rejoined"), ("reading_order", "multi-column order right"),
        ("headings", "headings as Markdown"), ("list_items", "list items as Markdown")]


def run_cworker(exe, url, root, tmp, files, label):
    log = os.path.join(tmp, label + ".log")
    cw = subprocess.Popen([exe, "-b", url, "--result-backend", url, "-c", "2",
                           "--prefetch-multiplier", "1", "-l", "info", "--docconv-roots", root,
                           "-Q", label, "-n", label + "@%h"],
                          stderr=open(log, "w"), env=dict(os.environ, OMP_THREAD_LIMIT="1"))
    try:
        wait_ready(log, cw, "ready.")
        app = Celery(broker=url, backend=url)
        out = {}
        for f in files:
            r = app.send_task("docconv.convert", args=[f], kwargs={"ocr": "never"},
                              queue=label).get(timeout=600)
            out[f] = r["content"]
        return out
    finally:
        stop_worker(cw)


def pdftotext(path):
    if not shutil.which("pdftotext"):
        return None
    return subprocess.run(["pdftotext", path, "-"], capture_output=True, text=True).stdout


def pymupdf(path):
    return "\f".join(page.get_text() for page in fitz.open(path))


def fmt(v):
    return "n/a" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cworker", default=os.path.join(HERE, "..", "build", "src", "cworker"))
    ap.add_argument("--before")
    ap.add_argument("--json")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cw-layout-")
    root = os.path.join(tmp, "corpus")
    os.mkdir(root)
    truth = layout_corpus.generate(root)
    debian = sorted(glob.glob("/usr/share/doc/**/*.pdf", recursive=True))[:10]
    for i, d in enumerate(debian):
        shutil.copy(d, os.path.join(root, f"debian{i}.pdf"))
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", tmp],
                             stdout=subprocess.DEVNULL)
    results = {}
    try:
        import time
        time.sleep(0.3)
        names = list(truth)
        files = [os.path.join(root, n) for n in names]
        dfiles = [os.path.join(root, f"debian{i}.pdf") for i in range(len(debian))]
        tools = [("cworker", a.cworker)] + ([("cworker-before", a.before)] if a.before else [])
        debian_out = {}
        for label, exe in tools:
            out = run_cworker(exe, url, root, tmp, files + dfiles, label.replace("-", "_"))
            results[label] = layout_corpus.score(truth, {n: out[f] for n, f in
                                                         zip(names, files)})
            debian_out[label] = [out[f] for f in dfiles]
        if shutil.which("pdftotext"):
            results["pdftotext"] = layout_corpus.score(truth, {n: pdftotext(f) for n, f in
                                                               zip(names, files)})
        results["PyMuPDF get_text()"] = layout_corpus.score(
            truth, {n: pymupdf(f) for n, f in zip(names, files)})
    finally:
        stop_worker(redis)
    cols = list(results)
    print(f"{'score':<40}" + "".join(f"{c:>20}" for c in cols))
    for k, label in KEYS:
        print(f"{label:<40}" + "".join(f"{fmt(results[c][k]):>20}" for c in cols))
    s = results[cols[0]]
    print(f"\ncorpus: {len(truth)} PDFs, {s['split_paragraphs']} paragraphs split by a "
          f"page or column break")
    for label, outs in debian_out.items():
        tables = sum(len(layout_corpus.md_tables(o)) for o in outs)
        print(f"{label}: {len(debian)} Debian documentation PDFs converted, "
              f"{tables} Markdown tables found")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    shutil.rmtree(tmp, ignore_errors=True)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
