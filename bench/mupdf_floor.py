#!/usr/bin/python3
"""How fast could any MuPDF-based text extractor be? MuPDF's own floor per
page next to PyMuPDF's get_text(), one core, same files, in one run.

Usage: /usr/bin/python3 bench/mupdf_floor.py [--corpus debian|generated|DIR]
       [--max-pages N] [--rounds 3] [--target 1.8] [--short]

Builds bench/mupdf_floor.c with cc against Debian's static MuPDF (the
libraries cworker links) and times, as CPU ms/page over the whole corpus:

  lex    pages loaded, content streams lexed, no operator run
  null   fz_run_page on a device that draws nothing (the whole interpreter)
  stext  fz_run_page on the structured-text device, written as plain text
         with PyMuPDF's flags (what PyMuPDF does, without Python)
  PyMuPDF  page.get_text() in this process (python3-fitz)

Each round runs every mode once, in turn; the fastest round of each is kept.
It prints each figure's ratio to PyMuPDF and what a converter --target times
faster than PyMuPDF would have to spend per page: when that is below `null`,
no converter that interprets the pages with MuPDF can get there.

The corpus is docconv_bench.py's (`debian`: the Debian manuals that
scripts/install-bench-corpus.sh installs). --short: the CI smoke (two
generated PDFs, one round).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import fitz

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from docconv_bench import load_corpus  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PKGS = ["freetype2", "harfbuzz", "libopenjp2", "jbig2dec", "mujs", "gumbo", "libjpeg", "zlib"]


def build(out):
    libs = subprocess.run(["pkg-config", "--libs"] + PKGS, check=True, capture_output=True,
                          text=True).stdout.split()
    cmd = ["cc", "-O2", "-o", out, os.path.join(HERE, "mupdf_floor.c"),
           "-Wl,-Bstatic", "-lmupdf", "-lmupdf-third", "-Wl,-Bdynamic"] + libs + ["-lm",
                                                                                  "-lpthread"]
    subprocess.run(cmd, check=True)


def run_tool(tool, mode, files):
    out = subprocess.run([tool, mode, "1"] + files, check=True, capture_output=True,
                         text=True).stdout.split()
    return int(out[1]), float(out[2])


def run_pymupdf(files):
    t0 = time.process_time()
    pages = 0
    for path in files:
        with fitz.open(path) as doc:
            for page in doc:
                page.get_text()
                pages += 1
    return pages, time.process_time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="debian", help="debian | generated | DIR")
    ap.add_argument("--docs", type=int, default=2, help="generated corpus: documents")
    ap.add_argument("--pages", type=int, default=5, help="generated corpus: pages each")
    ap.add_argument("--max-pages", type=int, default=0, help="sample about N pages")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--target", type=float, default=1.8, help="speed-up over PyMuPDF asked")
    ap.add_argument("--short", action="store_true", help="CI smoke")
    ap.add_argument("--cworker", help="ignored (the bench smokes pass it to every script)")
    a = ap.parse_args()
    if a.short:
        a.corpus, a.rounds = "generated", 1
    tmp = tempfile.mkdtemp(prefix="cw-floor-")
    try:
        docs = load_corpus(a, tmp)
        files = [d[0] for d in docs]
        tool = os.path.join(tmp, "mupdf_floor")
        build(tool)
        best = {}
        for _ in range(a.rounds):
            for mode in ("lex", "null", "stext", "PyMuPDF"):
                pages, cpu = run_pymupdf(files) if mode == "PyMuPDF" else \
                    run_tool(tool, mode, files)
                ms = cpu * 1e3 / max(pages, 1)
                best[mode] = min(best.get(mode, ms), ms)
        pages = sum(d[1] for d in docs)
        print(f"{len(docs)} documents, {pages} pages, fitz {fitz.VersionBind}, "
              f"best of {a.rounds} rounds, CPU ms/page on one core")
        py = best["PyMuPDF"]
        print(f"{'':8} {'ms/page':>8} {'PyMuPDF / this':>15}")
        for mode in ("lex", "null", "stext", "PyMuPDF"):
            print(f"{mode:8} {best[mode]:8.3f} {py / best[mode]:14.2f}x")
        need = py / a.target
        print(f"x{a.target:g} PyMuPDF's pace needs {need:.3f} ms/page: "
              + ("below the interpreter drawing nothing (null): out of reach of any converter "
                 "that runs the pages through MuPDF" if need < best["null"] else
                 "above the interpreter drawing nothing (null)"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
