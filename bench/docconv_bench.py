#!/usr/bin/python3
"""Document conversion throughput: cworker vs a stock Python Celery worker
running PyMuPDF, on one throwaway redis-server and one generated corpus, in
one run; then OCR seconds per page: cworker vs the tesseract CLI.

Usage: /usr/bin/python3 bench/docconv_bench.py [--docs 40] [--pages 10]
       [--cworker build/src/cworker] [--ocr-pages 3] [--format text]

Both workers: -c 2, prefetch multiplier 1, results in the same Redis. Each
document is one docconv.convert(source, format="text", ocr="never") task;
the clock runs from the first send to the last result. OCR: the same 300 dpi
scan (a US-letter page of text rendered with PyMuPDF) through
docconv.convert(ocr="always") and through `tesseract scan.png out`, both with
OMP_THREAD_LIMIT=1, one page at a time.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import fitz
from celery import Celery

HERE = os.path.dirname(os.path.abspath(__file__))
WORDS = ("invoice payment delivery quarter revenue region margin board warehouse contract "
         "customer supplier balance ledger account report summary growth cost price").split()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def make_corpus(folder, docs, pages):
    import random
    rnd = random.Random(7)
    for d in range(docs):
        doc = fitz.open()
        for _ in range(pages):
            page = doc.new_page(width=612, height=792)
            page.insert_text((72, 60), f"Section {d}", fontsize=18, fontname="hebo")
            y = 90
            while y < 740:
                line = " ".join(rnd.choice(WORDS) for _ in range(11))
                page.insert_text((72, y), line, fontsize=10, fontname="helv")
                y += 14
        doc.save(os.path.join(folder, f"doc{d:04d}.pdf"))


def make_scan(path):
    src = fitz.open()
    page = src.new_page(width=612, height=792)
    y = 72
    for i in range(30):
        page.insert_text((72, y), f"Line {i}: the quick brown fox jumps over the lazy dog.",
                         fontsize=12, fontname="helv")
        y += 20
    with open(path, "wb") as f:
        f.write(page.get_pixmap(dpi=300, colorspace=fitz.csGRAY).tobytes("png"))


def wait_ready(log, proc, pattern="ready", timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pattern in open(log).read():
            return
        if proc.poll() is not None:
            raise SystemExit(f"worker exited: {open(log).read()[-2000:]}")
        time.sleep(0.1)
    raise SystemExit("worker did not become ready")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_batch(app, files, fmt="text"):
    t0 = time.monotonic()
    rs = [app.send_task("docconv.convert", args=[f], kwargs={"format": fmt, "ocr": "never"})
          for f in files]
    pages = sum(r.get(timeout=600)["pages"] for r in rs)
    return time.monotonic() - t0, pages


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--pages", type=int, default=10)
    ap.add_argument("--ocr-pages", type=int, default=3)
    ap.add_argument("--format", default="text", help="cworker's output format (the Python "
                    "worker always extracts text)")
    ap.add_argument("--cworker", default=os.path.join(HERE, "..", "build", "src", "cworker"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cw-docbench-")
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", tmp],
                             stdout=subprocess.DEVNULL)
    procs = [redis]
    try:
        time.sleep(0.3)
        corpus = os.path.join(tmp, "corpus")
        os.mkdir(corpus)
        make_corpus(corpus, a.docs, a.pages)
        files = [os.path.join(corpus, f) for f in sorted(os.listdir(corpus))]
        app = Celery(broker=url, backend=url)
        results = {}

        log = os.path.join(tmp, "cworker.log")
        cw = subprocess.Popen([a.cworker, "-b", url, "--result-backend", url, "-c", "2",
                               "--prefetch-multiplier", "1", "-l", "info",
                               "--docconv-roots", tmp, "-n", "bench-cw@%h"],
                              stderr=open(log, "w"), env=env)
        procs.append(cw)
        wait_ready(log, cw, "ready.")
        run_batch(app, files[:2])  # warm both children
        results["cworker"] = run_batch(app, files, a.format)

        scan = os.path.join(tmp, "scan.png")
        make_scan(scan)
        t_cw = []
        for _ in range(a.ocr_pages):
            t0 = time.monotonic()
            r = app.send_task("docconv.convert", args=[scan],
                              kwargs={"format": "text", "ocr": "always"}).get(timeout=600)
            t_cw.append(time.monotonic() - t0)
            assert r["ocr_pages"] == [1]
        stop(cw)
        procs.remove(cw)

        log = os.path.join(tmp, "py.log")
        py = subprocess.Popen(["/usr/bin/python3", "-m", "celery", "-A", "py_docconv_app", "worker",
                               "-P", "prefork", "-c", "2", "--prefetch-multiplier", "1",
                               "-l", "info", "-n", "bench-py@%h", "--without-gossip",
                               "--without-mingle", "--without-heartbeat"],
                              stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=HERE,
                              env=dict(env, BENCH_BROKER=url, PYTHONPATH=HERE))
        procs.append(py)
        wait_ready(log, py, "ready.")
        run_batch(app, files[:2])
        results["python"] = run_batch(app, files)
        stop(py)
        procs.remove(py)

        t_cli = []
        if shutil.which("tesseract"):
            for _ in range(a.ocr_pages):
                t0 = time.monotonic()
                subprocess.run(["tesseract", scan, os.path.join(tmp, "cli")], env=env,
                               check=True, capture_output=True)
                t_cli.append(time.monotonic() - t0)

        print(f"\n{a.docs} PDFs x {a.pages} pages, docconv.convert(format='{a.format}', "
              "ocr='never'), "
              f"-c 2 --prefetch-multiplier 1, one redis-server")
        print(f"{'worker':<22}{'seconds':>9}{'pages':>8}{'pages/s':>10}")
        for k, label in (("cworker", "cworker (MuPDF, C)"), ("python", "celery + PyMuPDF")):
            secs, pages = results[k]
            print(f"{label:<22}{secs:>9.2f}{pages:>8}{pages / secs:>10.1f}")
        ratio = (results["cworker"][1] / results["cworker"][0]) / (
            results["python"][1] / results["python"][0])
        print(f"cworker / python: text extraction throughput x{ratio:.2f}")
        cw_ocr = min(t_cw)
        print(f"\nOCR, one 300 dpi US-letter scan (30 lines), best of {a.ocr_pages}:")
        print(f"  cworker docconv.convert(ocr='always'): {cw_ocr:.2f} s/page (task round trip)")
        if t_cli:
            print(f"  tesseract CLI (OMP_THREAD_LIMIT=1):   {min(t_cli):.2f} s/page "
                  f"(process start + model load each time)")
            print(f"  cworker / CLI: x{cw_ocr / min(t_cli):.2f} time per page")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
