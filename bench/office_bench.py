#!/usr/bin/python3
"""DOCX to Markdown: cworker against pandoc, for structure and for speed.

Usage: /usr/bin/python3 bench/office_bench.py [--docs 40] [--cworker build/src/cworker]
       [--skip-speed] [--short]
--short: 6 documents (the CI smoke).

1. Agreement.  A corpus of generated DOCX files (python3-docx: headings of
   levels 1-3, bullet and numbered lists with a second level, tables, some
   with merged cells, bold and italic runs) is converted by cworker
   (docconv.convert, format="markdown") and by `pandoc -f docx -t gfm`.
   From each Markdown the script extracts headings (level, text), list items
   (depth, ordered, text) and table cells (table, row, text); the scores are
   F1 between the two extractions, and also against what the generator put in
   (the ground truth), so a disagreement can be told apart from an error.
2. Speed.  files/s for the same corpus: cworker -c 2 against a stock Celery
   worker (-c 2, prefork) whose docconv.convert runs pandoc
   (bench/py_office_app.py), both with prefetch 1 and one redis-server; the
   clock runs from the first send to the last result.
"""

import argparse
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter

import docx
from celery import Celery

from harness import stop_worker  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORDS = ("plan budget review quarter region market launch hiring product customer supply "
         "risk audit growth margin team office cloud design report").split()


def phrase(rnd, n=4):
    return " ".join(rnd.choice(WORDS) for _ in range(n)).capitalize()


def make_doc(path, rnd):
    """One document and its ground truth (headings, list items, table cells)."""
    d = docx.Document()
    truth = {"headings": [], "items": [], "cells": []}
    tables = 0
    for _ in range(rnd.randint(3, 6)):
        level = rnd.randint(1, 3)
        h = phrase(rnd, 3)
        d.add_heading(h, level)
        truth["headings"].append((level, h))
        p = d.add_paragraph(phrase(rnd, 8) + " ")
        p.add_run(phrase(rnd, 2).lower()).bold = True
        p.add_run(" " + phrase(rnd, 5).lower() + ".").italic = rnd.random() < 0.5
        kind = rnd.choice(["bullet", "number", "table", "none"])
        if kind in ("bullet", "number"):
            base = "List Bullet" if kind == "bullet" else "List Number"
            for _ in range(rnd.randint(2, 4)):
                t = phrase(rnd, 3)
                d.add_paragraph(t, style=base)
                truth["items"].append((0, kind == "number", t))
                if kind == "bullet" and rnd.random() < 0.4:
                    s = phrase(rnd, 2)
                    d.add_paragraph(s, style=base + " 2")
                    truth["items"].append((1, False, s))
        elif kind == "table":
            rows, cols = rnd.randint(2, 4), rnd.randint(2, 4)
            t = d.add_table(rows=rows, cols=cols)
            merged = rnd.random() < 0.3 and cols >= 2
            for r in range(rows):
                for c in range(cols):
                    if merged and r == 0 and c == 1:
                        continue
                    t.cell(r, c).text = phrase(rnd, 1)
            if merged:
                text = t.cell(0, 0).text
                t.cell(0, 0).merge(t.cell(0, 1)).text = text
            for r in range(rows):
                seen = set()
                for c in range(cols):
                    cell = t.cell(r, c)
                    if id(cell._tc) in seen:
                        continue
                    seen.add(id(cell._tc))
                    truth["cells"].append((tables, r, cell.text))
            tables += 1
    d.save(path)
    return truth


# ---- extraction from Markdown ------------------------------------------------------------

def clean(s):
    s = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", s)
    s = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", s)
    s = re.sub(r"<[^>]+>", " ", s)
    s = s.replace("\\", "").replace("**", "").replace("*", "").replace("_", "")
    return " ".join(s.split())


def extract(md):
    out = {"headings": [], "items": [], "cells": []}
    table, row, in_table = -1, 0, False
    for line in md.splitlines():
        m = re.match(r"^(#{1,6}) (.*)", line)
        if m:
            out["headings"].append((len(m.group(1)), clean(m.group(2))))
        m = re.match(r"^( *)([-*+]|\d+[.)])\s+(.*)", line)
        if m and not line.lstrip().startswith("|"):
            depth = 0 if len(m.group(1)) < 2 else 1  # the generator nests one level
            out["items"].append((depth, m.group(2)[0].isdigit(), clean(m.group(3))))
        if line.lstrip().startswith("|"):
            if not in_table:
                table, row, in_table = table + 1, 0, True
            cells = [c for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if all(re.fullmatch(r"\s*:?-{3,}:?\s*", c) for c in cells):
                continue
            for c in cells:
                if clean(c):
                    out["cells"].append((table, row, clean(c)))
            row += 1
        else:
            in_table = False
    # pandoc writes tables with merged cells as HTML
    for t_html in re.findall(r"<table>.*?</table>", md, re.S):
        table += 1
        for r, tr in enumerate(re.findall(r"<tr[^>]*>(.*?)</tr>", t_html, re.S)):
            for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, re.S):
                if clean(cell):
                    out["cells"].append((table, r, clean(cell)))
    return out


def f1(a, b):
    if not a and not b:
        return 1.0
    ca, cb = Counter(a), Counter(b)
    common = sum((ca & cb).values())
    if not common:
        return 0.0
    p, r = common / sum(ca.values()), common / sum(cb.values())
    return 2 * p * r / (p + r)


def scores(x, y, loose_items=False):
    items = (lambda v: [(o, t) for _, o, t in v]) if loose_items else (lambda v: v)
    return (f1(x["headings"], y["headings"]), f1(items(x["items"]), items(y["items"])),
            f1(x["cells"], y["cells"]))


# ---- workers -------------------------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_ready(log, proc, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if "ready" in open(log).read():
            return
        if proc.poll() is not None:
            raise SystemExit(f"worker exited: {open(log).read()[-2000:]}")
        time.sleep(0.1)
    raise SystemExit("worker did not become ready")


def run_batch(app, files):
    t0 = time.monotonic()
    rs = [app.send_task("docconv.convert", args=[f], kwargs={"format": "markdown"})
          for f in files]
    out = [r.get(timeout=600)["content"] for r in rs]
    return time.monotonic() - t0, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--cworker", default=os.path.join(HERE, "..", "build", "src", "cworker"))
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--short", action="store_true", help="CI smoke: 6 documents")
    a = ap.parse_args()
    if a.short:
        a.docs = 6
    if not shutil.which("pandoc"):
        raise SystemExit("pandoc is not installed (apt-get install pandoc)")
    tmp = tempfile.mkdtemp(prefix="cw-officebench-")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", tmp],
                             stdout=subprocess.DEVNULL)
    procs = [redis]
    try:
        time.sleep(0.3)
        rnd = random.Random(17)
        corpus = os.path.join(tmp, "corpus")
        os.mkdir(corpus)
        files, truths = [], []
        for i in range(a.docs):
            f = os.path.join(corpus, f"doc{i:04d}.docx")
            truths.append(make_doc(f, rnd))
            files.append(f)
        app = Celery(broker=url, backend=url)

        log = os.path.join(tmp, "cworker.log")
        cw = subprocess.Popen([a.cworker, "-b", url, "--result-backend", url, "-c", "2",
                               "--prefetch-multiplier", "1", "-l", "info",
                               "--docconv-roots", tmp, "-n", "bench-cw@%h"],
                              stderr=open(log, "w"))
        procs.append(cw)
        wait_ready(log, cw)
        run_batch(app, files[:2])
        cw_secs, cw_md = run_batch(app, files)
        stop_worker(cw)
        procs.remove(cw)

        pd_md = [subprocess.run(["pandoc", "-f", "docx", "-t", "gfm", "--wrap=none", f],
                                check=True, capture_output=True).stdout.decode() for f in files]
        agree, cw_truth, pd_truth = [], [], []
        for c, p, t in zip(cw_md, pd_md, truths):
            ec, ep = extract(c), extract(p)
            agree.append(scores(ec, ep, loose_items=True))
            cw_truth.append(scores(ec, t))
            pd_truth.append(scores(ep, t, loose_items=True))

        def mean(rows, k):
            return sum(r[k] for r in rows) / len(rows)
        print(f"\n{a.docs} generated DOCX files, Markdown structure (F1, 1.0 = identical)")
        print(f"{'':<26}{'headings':>10}{'list items':>12}{'table cells':>13}")
        for label, rows in (("cworker vs pandoc", agree), ("cworker vs ground truth", cw_truth),
                            ("pandoc vs ground truth", pd_truth)):
            print(f"{label:<26}{mean(rows, 0):>10.3f}{mean(rows, 1):>12.3f}{mean(rows, 2):>13.3f}")
        print("(pandoc and 'cworker vs pandoc' compare list items without their depth: pandoc "
              "reads 'List Bullet 2' as a new list at the same level)")

        if not a.skip_speed:
            log = os.path.join(tmp, "py.log")
            py = subprocess.Popen(["/usr/bin/python3", "-m", "celery", "-A", "py_office_app",
                                   "worker", "-P", "prefork", "-c", "2",
                                   "--prefetch-multiplier", "1", "-l", "info",
                                   "-n", "bench-py@%h", "--without-gossip", "--without-mingle",
                                   "--without-heartbeat"],
                                  stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=HERE,
                                  env=dict(os.environ, BENCH_BROKER=url, PYTHONPATH=HERE))
            procs.append(py)
            wait_ready(log, py)
            run_batch(app, files[:2])
            py_secs, _ = run_batch(app, files)
            stop_worker(py)
            procs.remove(py)
            print(f"\nDOCX -> Markdown, {a.docs} files, -c 2 --prefetch-multiplier 1")
            print(f"{'worker':<28}{'seconds':>9}{'files/s':>10}")
            print(f"{'cworker (libxml2, C)':<28}{cw_secs:>9.2f}{a.docs / cw_secs:>10.1f}")
            print(f"{'celery + pandoc':<28}{py_secs:>9.2f}{a.docs / py_secs:>10.1f}")
            print(f"cworker / pandoc worker: x{py_secs / cw_secs:.1f} files/s")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                stop_worker(p)
        shutil.rmtree(tmp, ignore_errors=True)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
