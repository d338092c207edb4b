"""docconv.* tasks end to end: a corpus generated here with Debian's PyMuPDF
(python3-fitz) with known text, converted by cworker for a stock Python
producer; OCR accuracy, hostile documents, storage roots, soft limits."""

import json
import os
import time

import pytest

from conftest import SLOW, run_cworker

fitz = pytest.importorskip("fitz")

HEADING = "Quarterly Report"
SUB = "Summary of Results"
BODY = ["Revenue grew in every region during the quarter.",
        "Costs were flat and margins improved by two points.",
        "The board approved the new warehouse in Lyon."]
ITEMS = ["First item of the list", "Second item of the list"]
SCAN_LINES = ["The quick brown fox jumps over the lazy dog.",
              "Pack my box with five dozen liquor jugs.",
              "Sphinx of black quartz, judge my vow."]


def needs_docconv():
    p = run_cworker(["--list-tasks"])
    if "docconv.convert" not in p.stdout:
        pytest.skip("cworker built without docconv (MuPDF/Tesseract/libcurl missing)")


def text_page(doc, lines, size=11, top=72):
    page = doc.new_page(width=612, height=792)
    y = top
    for text, sz, font in lines:
        page.insert_text((72, y), text, fontsize=sz, fontname=font)
        y += sz * 1.8
    return page


def make_text_pdf(path):
    doc = fitz.open()
    text_page(doc, [(HEADING, 24, "hebo"), (SUB, 16, "hebo")] +
              [(line, 11, "helv") for line in BODY])
    text_page(doc, [(line, 11, "helv") for line in BODY[:1]] +
              [("- " + item, 11, "helv") for item in ITEMS])
    doc.set_metadata({"title": "Q3", "author": "Finance Team"})
    doc.save(path)


def scan_of(lines):
    """A 300 dpi grayscale image of text, as a scanner would produce (no text layer)."""
    src = fitz.open()
    text_page(src, [(line, 14, "helv") for line in lines])
    pix = src[0].get_pixmap(dpi=300, colorspace=fitz.csGRAY)
    return pix.tobytes("png")


def make_mixed_pdf(path):
    doc = fitz.open()
    text_page(doc, [(line, 11, "helv") for line in BODY])
    page = doc.new_page(width=612, height=792)
    page.insert_image(page.rect, stream=scan_of(SCAN_LINES))
    doc.save(path)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    make_text_pdf(str(root / "text.pdf"))
    make_mixed_pdf(str(root / "mixed.pdf"))
    doc = fitz.open(str(root / "text.pdf"))
    doc.save(str(root / "locked.pdf"), encryption=fitz.PDF_ENCRYPT_AES_256,
             user_pw="secret", owner_pw="owner")
    data = (root / "text.pdf").read_bytes()
    (root / "truncated.pdf").write_bytes(data[: len(data) // 3])
    (root / "garbage.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(4000))
    (root / "empty.pdf").write_bytes(b"")
    (root / "scan.png").write_bytes(scan_of(SCAN_LINES))
    (root / "out").mkdir()
    return root


@pytest.fixture
def worker(redis_server, cworker_factory, corpus):
    needs_docconv()
    return cworker_factory(["-c", "2", "--docconv-roots", str(corpus)], redis=redis_server)


def convert(app, src, timeout=60, **kw):
    return app.send_task("docconv.convert", args=[str(src)], kwargs=kw).get(timeout=timeout * SLOW)


def cer(got, want):
    """Character error rate: Levenshtein distance / len(want), whitespace collapsed."""
    a, b = " ".join(got.split()), " ".join(want.split())
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1] / max(1, len(b))


def test_info_reads_metadata(worker, app, corpus):
    info = app.send_task("docconv.info", args=[str(corpus / "text.pdf")]).get(timeout=30)
    assert info["page_count"] == 2 and info["title"] == "Q3"
    assert info["author"] == "Finance Team" and info["encrypted"] is False
    assert info["format"].startswith("PDF")


def test_text_output_matches_the_source(worker, app, corpus):
    r = convert(app, corpus / "text.pdf", format="text")
    assert r["format"] == "text" and r["pages"] == 2 and r["ocr_pages"] == []
    pages = r["content"].split("\f")
    assert len(pages) == 2
    lines = [l for l in pages[0].splitlines() if l.strip()]
    assert lines == [HEADING, SUB] + BODY
    lines2 = [l for l in pages[1].splitlines() if l.strip()]
    assert lines2 == BODY[:1] + ["- " + i for i in ITEMS]


def test_markdown_has_headings_lists_and_page_breaks(worker, app, corpus):
    md = convert(app, corpus / "text.pdf")["content"]
    lines = md.splitlines()
    assert f"# {HEADING}" in lines and f"## {SUB}" in lines
    assert lines.index(f"# {HEADING}") < lines.index(f"## {SUB}")
    for item in ITEMS:
        assert f"- {item}" in lines
    assert "---" in lines
    for sentence in BODY:
        assert sentence in md


def test_json_and_html_structure(worker, app, corpus):
    j = convert(app, corpus / "text.pdf", format="json")["content"]
    page = j["pages"][0]
    assert page["number"] == 1 and page["width"] == 612 and page["ocr"] is False
    spans = [s for b in page["blocks"] if b["type"] == "text"
             for l in b["lines"] for s in l["spans"]]
    head = [s for s in spans if s["text"].strip() == HEADING][0]
    assert head["size"] == pytest.approx(24, abs=0.5) and head["flags"]["bold"] is True
    assert len(head["bbox"]) == 4 and head["bbox"][0] == pytest.approx(72, abs=2)
    html = convert(app, corpus / "text.pdf", format="html")["content"]
    assert f"<h1>{HEADING}</h1>" in html and "<li>" in html


def test_ocr_auto_reads_only_the_scanned_page(worker, app, corpus):
    t0 = time.monotonic()
    r = convert(app, corpus / "mixed.pdf", format="text", timeout=120)
    ocr_seconds = time.monotonic() - t0
    assert r["ocr_pages"] == [2]
    page1, page2 = r["content"].split("\f")
    assert [l for l in page1.splitlines() if l.strip()] == BODY
    rate = cer(page2, "\n".join(SCAN_LINES))
    assert rate <= 0.02, (rate, page2)
    print(f"OCR of one 300 dpi page through cworker: {ocr_seconds:.2f} s, CER {rate:.4f}")
    j = convert(app, corpus / "mixed.pdf", format="json", pages=[2], timeout=120)["content"]
    words = [s for b in j["pages"][0]["blocks"] for l in b["lines"] for s in l["spans"]]
    assert j["pages"][0]["ocr"] is True and words and all(0 <= w["confidence"] <= 100
                                                          for w in words)


def test_ocr_never_and_always(worker, app, corpus):
    r = convert(app, corpus / "mixed.pdf", format="text", ocr="never")
    assert r["ocr_pages"] == [] and r["content"].split("\f")[1].strip() == ""
    r = convert(app, corpus / "scan.png", format="text", ocr="auto", timeout=120)
    assert r["ocr_pages"] == [1] and cer(r["content"], "\n".join(SCAN_LINES)) <= 0.02
    r = convert(app, corpus / "text.pdf", format="text", ocr="always", pages=[1], timeout=120)
    assert r["ocr_pages"] == [1] and HEADING in r["content"]


def test_passwords(worker, app, corpus):
    from celery.exceptions import CeleryError  # noqa: F401  (exceptions arrive by name)
    with pytest.raises(Exception) as ei:
        convert(app, corpus / "locked.pdf")
    assert type(ei.value).__name__ == "PasswordRequired" and "password" in str(ei.value)
    with pytest.raises(Exception) as ei:
        convert(app, corpus / "locked.pdf", password="wrong")
    assert type(ei.value).__name__ == "PasswordRequired" and "wrong" in str(ei.value)
    r = convert(app, corpus / "locked.pdf", password="secret", format="text")
    assert HEADING in r["content"]
    info = app.send_task("docconv.info", args=[str(corpus / "locked.pdf"), "secret"]).get(
        timeout=30)
    assert info["encrypted"] is True


@pytest.mark.parametrize("name", ["garbage.pdf", "empty.pdf"])
def test_hostile_documents_fail_cleanly(worker, app, corpus, name):
    with pytest.raises(Exception) as ei:
        convert(app, corpus / name)
    assert type(ei.value).__name__ == "DocumentError"
    # the worker keeps serving
    assert convert(app, corpus / "text.pdf", format="text", pages=[1])["pages"] == 1


def test_truncated_pdf_is_repaired_or_refused(worker, app, corpus):
    try:
        r = convert(app, corpus / "truncated.pdf", format="text")
    except Exception as e:  # noqa: BLE001
        assert type(e).__name__ == "DocumentError"
    else:
        assert r["warnings"], "a repaired document must say so"


def test_storage_roots_are_enforced(worker, app, corpus, tmp_path):
    outside = tmp_path / "outside.pdf"
    outside.write_bytes((corpus / "text.pdf").read_bytes())
    with pytest.raises(PermissionError):
        convert(app, outside)
    with pytest.raises(PermissionError):
        convert(app, str(corpus) + "/../outside.pdf")
    os.symlink(outside, corpus / "link.pdf")
    with pytest.raises(PermissionError):
        convert(app, corpus / "link.pdf")
    with pytest.raises(FileNotFoundError):
        convert(app, corpus / "missing.pdf")
    with pytest.raises(ValueError):
        convert(app, corpus / "text.pdf", format="docx")


def test_output_is_written_to_storage(worker, app, corpus):
    out = corpus / "out" / "sub" / "text.md"
    r = convert(app, corpus / "text.pdf", output=str(out))
    assert "content" not in r and r["output"] == str(out) and r["bytes"] == out.stat().st_size
    assert out.read_text().startswith(f"# {HEADING}")
    r = app.send_task("docconv.render", args=[str(corpus / "text.pdf")],
                      kwargs={"pages": [2], "dpi": 72, "output": str(corpus / "out" / "img")}
                      ).get(timeout=30)
    png = corpus / "out" / "img" / "page-0002.png"
    assert r["pages"][0]["output"] == str(png) and png.read_bytes()[:4] == b"\x89PNG"
    assert r["pages"][0]["width"] == 612


def test_soft_time_limit_cancels_ocr(worker, app, corpus):
    from celery.exceptions import SoftTimeLimitExceeded
    t0 = time.monotonic()
    with pytest.raises(SoftTimeLimitExceeded):
        app.send_task("docconv.convert", args=[str(corpus / "mixed.pdf")],
                      kwargs={"ocr": "always", "dpi": 600},
                      soft_time_limit=0.5).get(timeout=60 * SLOW)
    # MuPDF's cookie and Tesseract's cancel callback stop the work; where neither can (one
    # huge image draw, layout analysis) the child abandons the task after 100 ms
    late = time.monotonic() - t0 - 0.5
    print(f"soft limit to SoftTimeLimitExceeded at the client: {late * 1000:.0f} ms")
    assert late < 0.2 + 0.3 * (SLOW - 1) + 0.1  # 200 ms budget, plus the result round trip
    assert convert(app, corpus / "text.pdf", format="text", pages=[1])["pages"] == 1


def test_other_input_formats(worker, app, corpus):
    import io
    import zipfile
    scan = (corpus / "scan.png").read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:          # a comic book archive of two scans
        z.writestr("p1.png", scan)
        z.writestr("p2.png", scan)
    (corpus / "book.cbz").write_bytes(buf.getvalue())
    (corpus / "story.fb2").write_text(
        '<?xml version="1.0" encoding="utf-8"?><FictionBook xmlns="http://www.gribuv.com/'
        'FictionBook/2.0"><body><section><title><p>Chapter One</p></title>'
        '<p>It was a bright cold day in April.</p></section></body></FictionBook>')
    r = convert(app, corpus / "book.cbz", format="text", timeout=120)
    assert r["pages"] == 2 and r["ocr_pages"] == [1, 2]
    assert cer(r["content"].split("\f")[1], "\n".join(SCAN_LINES)) <= 0.02
    r = convert(app, corpus / "story.fb2", format="markdown")
    assert "Chapter One" in r["content"] and "bright cold day in April" in r["content"]
    try:
        from PIL import Image
    except ImportError:
        return
    img = Image.open(corpus / "scan.png")
    img.save(corpus / "two.tiff", save_all=True, append_images=[img])
    r = convert(app, corpus / "two.tiff", format="text", pages=[2], timeout=120)
    assert r["ocr_pages"] == [2] and cer(r["content"], "\n".join(SCAN_LINES)) <= 0.02


def test_page_count_cap(redis_server, cworker_factory, app, corpus):
    needs_docconv()
    cworker_factory(["-c", "1", "--docconv-roots", str(corpus), "--docconv-max-pages", "1"],
                    redis=redis_server)
    with pytest.raises(Exception) as ei:
        convert(app, corpus / "text.pdf")
    assert type(ei.value).__name__ == "ResourceLimit" and "2 pages" in str(ei.value)


def test_memory_cap_is_a_resource_limit(redis_server, cworker_factory, app, corpus):
    needs_docconv()
    cworker_factory(["-c", "1", "--docconv-roots", str(corpus), "--docconv-memory-limit", "16"],
                    redis=redis_server)
    with pytest.raises(Exception) as ei:
        convert(app, corpus / "mixed.pdf", format="text", ocr="always", dpi=1200, timeout=120)
    assert type(ei.value).__name__ == "ResourceLimit"
    assert convert(app, corpus / "text.pdf", format="text", pages=[1])["pages"] == 1


def s3_curl(s3, method, key, data=None, secret=None):
    """A signed request with curl's own SigV4 (the verifier wants the payload hash too)."""
    import hashlib
    import subprocess
    body = data or b""
    cmd = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method,
           "--aws-sigv4", "aws:amz:us-east-1:s3",
           "--user", f"{s3.access_key}:{secret or s3.secret_key}",
           "-H", "x-amz-content-sha256: " + hashlib.sha256(body).hexdigest(),
           f"{s3.endpoint}/{s3.bucket}/{key}"]
    if method == "PUT":
        cmd[1:1] = ["--data-binary", "@-"]
    p = subprocess.run(cmd, input=body, capture_output=True, timeout=30)
    out, _, code = p.stdout.rpartition(b"\n")
    return int(code), out


def test_s3_input_and_output_round_trip(redis_server, cworker_factory, app, corpus, s3_server):
    needs_docconv()
    code, _ = s3_curl(s3_server, "PUT", "in/report.pdf", (corpus / "text.pdf").read_bytes())
    assert code == 200
    cworker_factory(["-c", "1", "--s3-endpoint-url", s3_server.endpoint, "--s3-path-style"],
                    redis=redis_server, env=s3_server.env())
    r = convert(app, "s3://cw-test/in/report.pdf", output="s3://cw-test/out/report.md")
    assert r["output"] == "s3://cw-test/out/report.md"
    code, body = s3_curl(s3_server, "GET", "out/report.md")
    assert code == 200 and body.decode().startswith(f"# {HEADING}")
    # inline result straight from S3, and a missing key
    assert HEADING in convert(app, "s3://cw-test/in/report.pdf", format="text")["content"]
    with pytest.raises(FileNotFoundError):
        convert(app, "s3://cw-test/in/missing.pdf")
    # local files are refused when no roots are configured
    with pytest.raises(PermissionError):
        convert(app, corpus / "text.pdf")


def test_s3_wrong_secret_is_refused(redis_server, cworker_factory, app, corpus, s3_server):
    needs_docconv()
    s3_curl(s3_server, "PUT", "in/report.pdf", (corpus / "text.pdf").read_bytes())
    cworker_factory(["-c", "1", "--s3-endpoint-url", s3_server.endpoint, "--s3-path-style"],
                    redis=redis_server, env=s3_server.env(secret="not-the-secret"))
    with pytest.raises(Exception) as ei:
        convert(app, "s3://cw-test/in/report.pdf")
    assert type(ei.value).__name__ == "StorageError"
    assert "SignatureDoesNotMatch" in str(ei.value) and "not-the-secret" not in str(ei.value)


def test_aliases_keep_old_task_names_and_signatures(redis_server, cworker_factory, app,
                                                    corpus, tmp_path):
    needs_docconv()
    conf = tmp_path / "cw.conf"
    conf.write_text(f"docconv_roots = {corpus}\n"
                    "[alias:pipeline.convert_document]\n"
                    "task = docconv.convert\n"
                    "args = -, source, **\n"
                    "soft_time_limit = 120\n"
                    "[alias:legacy.add]\ntask = cworker.add\nargs = a, b\n")
    listed = run_cworker(["--config", str(conf), "--list-tasks"]).stdout
    assert "pipeline.convert_document" in listed and "alias of docconv.convert" in listed
    cworker_factory(["-c", "1", "--config", str(conf)], redis=redis_server)
    # the old producer call: convert_document(job_id, file_path, settings)
    r = app.send_task("pipeline.convert_document",
                      args=["job-17", str(corpus / "text.pdf"), {"format": "text"}]).get(timeout=60)
    assert r["format"] == "text" and HEADING in r["content"]
    assert app.send_task("legacy.add", args=[2, 3]).get(timeout=10) == 5
    with pytest.raises(TypeError):
        app.send_task("pipeline.convert_document", args=[1, 2, 3, 4]).get(timeout=10)


def test_alias_to_an_unknown_task_is_a_usage_error(tmp_path):
    conf = tmp_path / "cw.conf"
    conf.write_text("[alias:old.name]\ntask = no.such.task\n")
    p = run_cworker(["--config", str(conf), "--list-tasks"])
    assert p.returncode == 64 and "no.such.task" in p.stderr
    conf.write_text("[alias:old.name]\nargs = a\n")
    p = run_cworker(["--config", str(conf), "--list-tasks"])
    assert p.returncode == 64 and "needs 'task = NAME'" in p.stderr
