#!/usr/bin/python3
"""Document conversion throughput: cworker vs a stock Python Celery worker
running PyMuPDF, on one throwaway redis-server and one corpus, in one run;
then OCR seconds per page: cworker vs the tesseract CLI.

Usage: /usr/bin/python3 bench/docconv_bench.py [--corpus generated|debian|DIR]
       [--format text,markdown] [--docs 40] [--pages 10] [--max-pages N]
       [--rounds 1] [--ocr-pages 3] [--ocr-rounds 1] [--cworker build/src/cworker]
       [--list] [--json FILE] [--short]

Corpus: `generated` (default) writes --docs PDFs of --pages text pages with
PyMuPDF; `debian` takes the PDF manuals of the installed Debian documentation
packages (scripts/install-bench-corpus.sh) under /usr/share/doc,
/usr/share/R/doc, /usr/share/pari/doc and /usr/share/maxima, gunzipping
.pdf.gz; DIR takes every PDF (or .pdf.gz) under DIR. Files are copied into a
temporary directory and deduplicated (same bytes, or same size and page
count); --max-pages N keeps a deterministic sample of about N pages.

Both workers: -c 2, prefetch multiplier 1, each on its own queue, results in
the same Redis. Each document is one docconv.convert(source, format=F,
ocr="never") task, sent largest first; the clock runs from the first send to
the last result, after two warm-up documents. --rounds N repeats each batch,
the two workers taking turns (the idle one waits on its queue), and keeps the
fastest of each.
The Python side is bench/py_docconv_app.py (text: page.get_text(); markdown: a
span-based converter over page.get_text("dict")). CPU ms/page is utime+stime
of the worker (master and children) over the batch, from /proc: on a shared
machine it moves less than pages/s. After the batches it reads VmRSS and
VmHWM of each pool child.

OCR: 300 dpi grayscale PNGs (the generated corpus: one US-letter page of 30
lines; a real corpus: --ocr-pages pages evenly spaced over all its pages)
through docconv.convert(ocr="always") (task round trip) and through
`tesseract page.png out`, both with OMP_THREAD_LIMIT=1, one page at a time,
alternating page by page, wall and CPU time.

--short: the CI smoke (4 generated PDFs x 2 pages, both formats, one OCR page);
it prints the same tables and ratios, which mean little at that size.
"""

import argparse
import gzip
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import fitz
from celery import Celery

from harness import children_of, stop_worker  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORDS = ("invoice payment delivery quarter revenue region margin board warehouse contract "
         "customer supplier balance ledger account report summary growth cost price").split()
DEBIAN_ROOTS = ("/usr/share/doc", "/usr/share/R/doc", "/usr/share/pari/doc", "/usr/share/maxima")


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


def collect_pdfs(roots, folder):
    """Copy (gunzip) every distinct PDF under roots into folder; returns the
    list of (path in folder, original path)."""
    seen = set()
    out = []
    for root in roots:
        for dirpath, _dirs, names in sorted(os.walk(root)):
            for name in sorted(names):
                if not (name.endswith(".pdf") or name.endswith(".pdf.gz")):
                    continue
                src = os.path.join(dirpath, name)
                try:
                    with open(src, "rb") as f:
                        data = f.read()
                    if name.endswith(".gz"):
                        data = gzip.decompress(data)
                except (OSError, EOFError):
                    continue
                digest = hashlib.sha256(data).hexdigest()
                if digest in seen or not data.startswith(b"%PDF"):
                    continue
                seen.add(digest)
                base = name[:-3] if name.endswith(".gz") else name
                dst = os.path.join(folder, f"{os.path.basename(dirpath)}--{base}")
                while os.path.exists(dst):
                    dst = dst[:-4] + "_.pdf"
                with open(dst, "wb") as f:
                    f.write(data)
                out.append((dst, src))
    return out


def load_corpus(a, folder):
    """[(path, pages, bytes, original)] of the documents to convert."""
    if a.corpus == "generated":
        make_corpus(folder, a.docs, a.pages)
        files = [(os.path.join(folder, f), None) for f in sorted(os.listdir(folder))]
    else:
        roots = DEBIAN_ROOTS if a.corpus == "debian" else (a.corpus,)
        files = collect_pdfs([r for r in roots if os.path.isdir(r)], folder)
    docs = []
    seen = set()
    for path, orig in files:
        try:
            d = fitz.open(path)
            n = 0 if d.needs_pass else d.page_count
            d.close()
        except Exception as e:  # noqa: BLE001 - a file MuPDF cannot open is left out
            print(f"skipping {orig or path}: {e}", file=sys.stderr)
            continue
        size = os.path.getsize(path)
        # R ships its reference manual twice (refman.pdf, fullrefman.pdf: same size and
        # pages, a few bytes apart): same byte count and page count is the same document
        if n and (a.corpus == "generated" or (size, n) not in seen):
            seen.add((size, n))
            docs.append((path, n, size, orig or path))
    if a.max_pages:
        # a deterministic sample: documents in order of their content hash until N pages
        docs.sort(key=lambda d: hashlib.sha256(open(d[0], "rb").read()).hexdigest())
        keep, total = [], 0
        for d in docs:
            if total >= a.max_pages:
                break
            keep.append(d)
            total += d[1]
        docs = keep
    if not docs:
        raise SystemExit(f"no PDFs in corpus {a.corpus!r} (for debian: "
                         "bash scripts/install-bench-corpus.sh)")
    return docs


def page_png(path, pno, out):
    doc = fitz.open(path)
    pix = doc[pno].get_pixmap(dpi=300, colorspace=fitz.csGRAY)
    with open(out, "wb") as f:
        f.write(pix.tobytes("png"))
    doc.close()


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


def ocr_inputs(a, docs, tmp):
    """[(png, description)] of the pages both OCR runs read."""
    if a.corpus == "generated":
        scan = os.path.join(tmp, "scan.png")
        make_scan(scan)
        return [(scan, "generated US-letter page, 30 lines")] * a.ocr_pages
    # pages evenly spread over the corpus' pages (documents in name order), so that a
    # document's share of the sample follows its share of the pages
    by_name = sorted(docs, key=lambda d: d[3])
    total = sum(d[1] for d in by_name)
    n = min(a.ocr_pages, total)
    out = []
    for i in range(n):
        at = int((i + 0.5) * total / n)
        for path, pages, _size, orig in by_name:
            if at < pages:
                break
            at -= pages
        png = os.path.join(tmp, f"ocr{i}.png")
        page_png(path, at, png)
        out.append((png, f"{os.path.basename(orig)} p.{at + 1}"))
    return out


def ocr_compare(app, scans, rounds, pid, env, tmp):
    """Per page, cworker's task then the tesseract CLI, alternating (so both see the same
    load); the best wall and CPU time of each over the rounds."""
    cli = shutil.which("tesseract")
    rows = [{"page": desc, "cw_s": 1e9, "cw_cpu": 1e9} for _, desc in scans]
    for _ in range(rounds):
        for row, (png, _) in zip(rows, scans):
            cpu0, t0 = tree_cpu(pid), time.monotonic()
            r = app.send_task("docconv.convert", args=[png], queue="bench-cw",
                              kwargs={"format": "text", "ocr": "always"}).get(timeout=600)
            row["cw_s"] = min(row["cw_s"], time.monotonic() - t0)
            row["cw_cpu"] = min(row["cw_cpu"], tree_cpu(pid) - cpu0)
            row["cw_chars"] = len(r["content"])
            assert r["ocr_pages"] == [1], r
            if not cli:
                continue
            ru0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
            subprocess.run([cli, png, os.path.join(tmp, "cli")], env=env, check=True,
                           capture_output=True)
            wall = time.monotonic() - t0
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
            row["cli_s"] = min(row.get("cli_s", 1e9), wall)
            row["cli_cpu"] = min(row.get("cli_cpu", 1e9), cpu)
            with open(os.path.join(tmp, "cli.txt"), encoding="utf-8") as f:
                row["cli_chars"] = len(f.read())
    return rows


def wait_ready(log, proc, pattern="ready", timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pattern in open(log).read():
            return
        if proc.poll() is not None:
            raise SystemExit(f"worker exited: {open(log).read()[-2000:]}")
        time.sleep(0.1)
    raise SystemExit("worker did not become ready")


def tree_cpu(pid):
    """utime + stime in seconds of pid and its children (from /proc, 10 ms ticks)."""
    total = 0
    for p in [pid] + sorted(children_of(pid)):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def child_memory(pid):
    """[(VmRSS MiB, VmHWM MiB)] of each child of pid."""
    out = []
    for c in sorted(children_of(pid)):
        vals = {}
        try:
            with open(f"/proc/{c}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("VmRSS", "VmHWM"):
                        vals[k] = int(v.split()[0]) / 1024
        except OSError:
            continue
        if len(vals) == 2:
            out.append((vals["VmRSS"], vals["VmHWM"]))
    return out


def run_batch(app, files, fmt="text", pid=None, queue=None):
    cpu0 = tree_cpu(pid) if pid else 0
    t0 = time.monotonic()
    rs = [app.send_task("docconv.convert", args=[f], kwargs={"format": fmt, "ocr": "never"},
                        queue=queue)
          for f in files]
    pages = chars = 0
    for r in rs:
        v = r.get(timeout=1800)
        pages += v["pages"]
        chars += len(v["content"])
    secs = time.monotonic() - t0
    return secs, pages, chars, (tree_cpu(pid) - cpu0) if pid else 0


def batches(app, a, files, warm, formats, workers):
    """Rounds of every format, the workers taking turns (the idle one waits on its own
    queue), so that both see the same load on a shared machine. {worker: {format: the
    fastest (seconds, pages, chars, cpu)}}, and every round's seconds."""
    for name, (pid, queue) in workers.items():
        run_batch(app, warm, queue=queue)   # one document per child: code, fonts warm
    best = {name: {} for name in workers}
    secs = {(name, fmt): [] for name in workers for fmt in formats}
    for _ in range(a.rounds):
        for fmt in formats:
            for name, (pid, queue) in workers.items():
                r = run_batch(app, files, fmt, pid, queue)
                secs[name, fmt].append(r[0])
                if fmt not in best[name] or r[0] < best[name][fmt][0]:
                    best[name][fmt] = r
    return best, secs


def fmt_mem(mem):
    if not mem:
        return "n/a"
    return ", ".join(f"{rss:.0f}/{hwm:.0f}" for rss, hwm in mem)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="generated", help="generated | debian | DIR")
    ap.add_argument("--docs", type=int, default=40, help="generated corpus: documents")
    ap.add_argument("--pages", type=int, default=10, help="generated corpus: pages each")
    ap.add_argument("--max-pages", type=int, default=0, help="sample about N pages of the corpus")
    ap.add_argument("--format", default="text,markdown", help="comma-separated: text, markdown")
    ap.add_argument("--rounds", type=int, default=1, help="batches per format (best reported)")
    ap.add_argument("--ocr-pages", type=int, default=3)
    ap.add_argument("--ocr-rounds", type=int, default=1, help="OCR runs per page (best reported)")
    ap.add_argument("--cworker", default=os.environ.get(
        "CWORKER_EXE", os.path.join(HERE, "..", "build", "src", "cworker")))
    ap.add_argument("--list", action="store_true", help="print the corpus' files")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--short", action="store_true", help="CI smoke: a few tiny documents")
    a = ap.parse_args()
    if a.short:
        a.docs, a.pages, a.ocr_pages, a.rounds = 4, 2, 1, 1
        if a.corpus != "generated" and not a.max_pages:
            a.max_pages = 20
    formats = [f.strip() for f in a.format.split(",") if f.strip()]
    for f in formats:
        if f not in ("text", "markdown"):
            raise SystemExit(f"--format: {f!r} is not text or markdown")

    tmp = tempfile.mkdtemp(prefix="cw-docbench-")
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", tmp],
                             stdout=subprocess.DEVNULL)
    procs = [redis]
    out = {"corpus": a.corpus, "formats": formats}
    try:
        corpus = os.path.join(tmp, "corpus")
        os.mkdir(corpus)
        docs = load_corpus(a, corpus)
        docs.sort(key=lambda d: (-d[1], d[0]))          # largest first: no long tail
        files = [d[0] for d in docs]
        warm = [d[0] for d in docs[-2:]]                # the two smallest
        total_pages = sum(d[1] for d in docs)
        total_mb = sum(d[2] for d in docs) / 1e6
        out.update(corpus_files=len(docs), corpus_pages=total_pages, corpus_mb=total_mb)
        print(f"corpus {a.corpus}: {len(docs)} files, {total_pages} pages, {total_mb:.1f} MB",
              flush=True)
        if a.list:
            for path, pages, size, orig in sorted(docs, key=lambda d: d[3]):
                print(f"  {pages:6d} pages {size / 1e6:6.2f} MB  {orig}")
        scans = ocr_inputs(a, docs, tmp)
        app = Celery(broker=url, backend=url)
        results = {}
        mem = {}

        log = os.path.join(tmp, "cworker.log")
        cw = subprocess.Popen([a.cworker, "-b", url, "--result-backend", url, "-c", "2",
                               "--prefetch-multiplier", "1", "-l", "info", "-Q", "bench-cw",
                               "--docconv-roots", tmp, "--docconv-inline-max", "0",
                               "-n", "bench-cw@%h"],
                              stderr=open(log, "w"), env=env)
        procs.append(cw)
        wait_ready(log, cw, "ready.")
        log = os.path.join(tmp, "py.log")
        py = subprocess.Popen(["/usr/bin/python3", "-m", "celery", "-A", "py_docconv_app", "worker",
                               "-P", "prefork", "-c", "2", "--prefetch-multiplier", "1",
                               "-Q", "bench-py", "-l", "info", "-n", "bench-py@%h",
                               "--without-gossip", "--without-mingle", "--without-heartbeat"],
                              stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=HERE,
                              env=dict(env, BENCH_BROKER=url, PYTHONPATH=HERE))
        procs.append(py)
        wait_ready(log, py, "ready.")
        results, round_secs = batches(app, a, files, warm, formats,
                                      {"cworker": (cw.pid, "bench-cw"),
                                       "python": (py.pid, "bench-py")})
        mem["cworker"] = child_memory(cw.pid)
        mem["python"] = child_memory(py.pid)
        stop_worker(py)
        procs.remove(py)
        ocr = ocr_compare(app, scans, a.ocr_rounds, cw.pid, env, tmp)
        mem["cworker after OCR"] = child_memory(cw.pid)
        stop_worker(cw)
        procs.remove(cw)

        print(f"\n{a.corpus} corpus, {len(docs)} PDFs, {total_pages} pages, {total_mb:.1f} MB; "
              f"docconv.convert(ocr='never'), -c 2 --prefetch-multiplier 1, one redis-server"
              + (f", best of {a.rounds} rounds" if a.rounds > 1 else ""))
        print(f"{'format':<10}{'worker':<22}{'seconds':>9}{'pages':>8}{'pages/s':>10}"
              f"{'CPU ms/page':>13}{'MB out':>9}")
        out["results"] = {}
        for fmt in formats:
            for k, label in (("cworker", "cworker (MuPDF, C)"), ("python", "celery + PyMuPDF")):
                secs, pages, chars, cpu = results[k][fmt]
                print(f"{fmt:<10}{label:<22}{secs:>9.2f}{pages:>8}{pages / secs:>10.1f}"
                      f"{1000 * cpu / pages:>13.2f}{chars / 1e6:>9.1f}")
                out["results"][f"{k}/{fmt}"] = {"seconds": secs, "pages": pages,
                                                "pages_per_s": pages / secs, "chars": chars,
                                                "cpu_ms_per_page": 1000 * cpu / pages}
        if a.rounds > 1:
            for (k, fmt), v in round_secs.items():
                print(f"  {fmt} {k} rounds (s): " + " ".join(f"{x:.2f}" for x in v))
                out["results"][f"{k}/{fmt}"]["rounds"] = v
        for fmt in formats:
            ratio = (results["cworker"][fmt][1] / results["cworker"][fmt][0]) / (
                results["python"][fmt][1] / results["python"][fmt][0])
            out["results"][f"ratio/{fmt}"] = ratio
            print(f"cworker / python, {fmt}: pages/s x{ratio:.2f}")
        print("(CPU ms/page: utime+stime of the worker's master and children over the batch, "
              "per page)")

        print("\npool children after the batches (cworker also after the OCR below), "
              "VmRSS/VmHWM MiB each:")
        for k, v in mem.items():
            print(f"  {k:<20} {fmt_mem(v)}")
        out["memory_mib"] = {k: [{"rss": r, "hwm": h} for r, h in v] for k, v in mem.items()}

        if ocr:
            best = f", best of {a.ocr_rounds}" if a.ocr_rounds > 1 else ""
            print(f"\nOCR, 300 dpi grayscale PNG, {len(scans)} page(s), one at a time, "
                  f"cworker and the CLI alternating{best}; wall s (CPU s):")
            for row in ocr:
                cli = (f"{row['cli_s']:6.2f} ({row['cli_cpu']:5.2f}) {row['cli_chars']:5d} chars"
                       if "cli_s" in row else "n/a")
                print(f"  {row['page']:<38} cworker {row['cw_s']:6.2f} ({row['cw_cpu']:5.2f}) "
                      f"{row['cw_chars']:5d} chars   CLI {cli}")
            n = len(ocr)
            cw_s = sum(r["cw_s"] for r in ocr) / n
            cw_cpu = sum(r["cw_cpu"] for r in ocr) / n
            out["ocr"] = {"pages": n, "cworker_s_per_page": cw_s, "cworker_cpu_s_per_page": cw_cpu,
                          "rows": ocr}
            print(f"  cworker docconv.convert(ocr='always'): {cw_s:.2f} s/page, CPU {cw_cpu:.2f} s "
                  "(mean; task round trip, engine warm)")
            if all("cli_s" in r for r in ocr):
                cli_s = sum(r["cli_s"] for r in ocr) / n
                cli_cpu = sum(r["cli_cpu"] for r in ocr) / n
                out["ocr"].update(cli_s_per_page=cli_s, cli_cpu_s_per_page=cli_cpu)
                print(f"  tesseract CLI (OMP_THREAD_LIMIT=1):   {cli_s:.2f} s/page, "
                      f"CPU {cli_cpu:.2f} s (mean; process start + model load each time)")
                print(f"  cworker / CLI: x{cw_s / cli_s:.2f} time per page, "
                      f"x{cw_cpu / cli_cpu:.2f} CPU")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                stop_worker(p)
        shutil.rmtree(tmp, ignore_errors=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
