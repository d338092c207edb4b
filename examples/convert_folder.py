#!/usr/bin/python3
"""Convert every document in a folder through cworker and write the outputs.

Usage:
    /usr/bin/python3 examples/convert_folder.py IN_DIR OUT_DIR [BROKER_URL [BACKEND_URL]]
        [--format markdown|text|json|html] [--ocr auto|always|never]

IN_DIR and OUT_DIR must lie under the worker's --docconv-roots. Each input
becomes one docconv.convert task (sent by name: this producer needs no task
code) that writes OUT_DIR/<name>.<ext> itself; the script waits for all of
them and prints pages, OCR'd pages and the time per document. Exit status 0
when every document converted.

    --make-samples   first write a few sample documents into IN_DIR (needs
                     python3-fitz): a text PDF, a PDF whose second page is a
                     scan, and a PNG scan.
"""

import argparse
import os
import sys
import time

from celery import Celery

EXT = {"markdown": ".md", "text": ".txt", "json": ".json", "html": ".html"}


def make_samples(folder):
    import fitz  # python3-fitz

    def page(doc, lines):
        p = doc.new_page(width=612, height=792)
        y = 72
        for text, size, font in lines:
            p.insert_text((72, y), text, fontsize=size, fontname=font)
            y += size * 1.8
        return p

    body = [("Invoices are due within thirty days of delivery.", 11, "helv"),
            ("Late payments carry a fee of one percent per month.", 11, "helv")]
    doc = fitz.open()
    page(doc, [("Payment Terms", 22, "hebo"), ("Overview", 15, "hebo")] + body)
    page(doc, [("- Pay by bank transfer", 11, "helv"), ("- Quote the invoice number", 11, "helv")])
    doc.set_metadata({"title": "Payment Terms", "author": "Accounts"})
    doc.save(os.path.join(folder, "terms.pdf"))

    src = fitz.open()
    page(src, [("Scanned letters become text through Tesseract.", 14, "helv"),
               ("This page has no text layer at all.", 14, "helv")])
    scan = src[0].get_pixmap(dpi=300, colorspace=fitz.csGRAY).tobytes("png")
    with open(os.path.join(folder, "letter.png"), "wb") as f:
        f.write(scan)
    mixed = fitz.open()
    page(mixed, body)
    p = mixed.new_page(width=612, height=792)
    p.insert_image(p.rect, stream=scan)
    mixed.save(os.path.join(folder, "mixed.pdf"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("in_dir")
    ap.add_argument("out_dir")
    ap.add_argument("broker", nargs="?", default=os.environ.get("CELERY_BROKER_URL",
                                                               "redis://127.0.0.1:6379/0"))
    ap.add_argument("backend", nargs="?", default=None)
    ap.add_argument("--format", default="markdown", choices=sorted(EXT))
    ap.add_argument("--ocr", default="auto", choices=["auto", "always", "never"])
    ap.add_argument("--make-samples", action="store_true")
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    in_dir, out_dir = os.path.abspath(a.in_dir), os.path.abspath(a.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if a.make_samples:
        make_samples(in_dir)

    app = Celery("convert_folder", broker=a.broker, backend=a.backend or a.broker)
    jobs = []
    for name in sorted(os.listdir(in_dir)):
        src = os.path.join(in_dir, name)
        if not os.path.isfile(src):
            continue
        dst = os.path.join(out_dir, os.path.splitext(name)[0] + EXT[a.format])
        r = app.send_task("docconv.convert", args=[src],
                          kwargs={"format": a.format, "ocr": a.ocr, "output": dst})
        jobs.append((name, dst, r, time.monotonic()))
    print(f"sent {len(jobs)} documents from {in_dir}")
    failed = 0
    for name, dst, r, t0 in jobs:
        try:
            res = r.get(timeout=a.timeout)
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print(f"  {name:<20} FAILED {type(e).__name__}: {e}")
            continue
        print(f"  {name:<20} {res['pages']} page(s), OCR {res['ocr_pages'] or 'none'}, "
              f"{res['bytes']} bytes -> {dst}  ({time.monotonic() - t0:.2f}s)")
        with open(dst, encoding="utf-8", errors="replace") as f:
            head = f.read(160).replace("\n", " | ")
        print(f"  {'':<20} {head}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
