"""docconv.convert / docconv.info on Office and web documents (issue 17), end to
end: documents generated here with Debian's python3-docx and python3-openpyxl,
slide decks, ODT and ODS through LibreOffice in headless mode, HTML, Markdown
and CSV written by hand; converted by cworker for a stock Python producer and
checked in Markdown and JSON.  Hostile packages (zip bomb, traversal names,
entity expansion, deep nesting, a huge sheet) fail cleanly and the worker
keeps serving; S3 and the document store take these formats too."""

import concurrent.futures
import datetime
import io
import json
import os
import shutil
import subprocess
import zipfile

import pytest

from conftest import SLOW, run_cworker

docx = pytest.importorskip("docx")
openpyxl = pytest.importorskip("openpyxl")

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")
ODP_TEMPLATE = "/usr/lib/libreoffice/share/template/common/presnt/Metropolis.otp"


def needs_docconv():
    p = run_cworker(["--list-tasks"])
    if "docconv.convert" not in p.stdout:
        pytest.skip("cworker built without docconv")


# ---------------------------------------------------------------------------
# generators
# ---------------------------------------------------------------------------

def add_hyperlink(paragraph, url, text):
    """python-docx has no hyperlink API: a w:hyperlink with an external relationship."""
    from docx.opc.constants import RELATIONSHIP_TYPE as RT
    from docx.oxml.shared import OxmlElement, qn
    rid = paragraph.part.relate_to(url, RT.HYPERLINK, is_external=True)
    link = OxmlElement("w:hyperlink")
    link.set(qn("r:id"), rid)
    run = OxmlElement("w:r")
    t = OxmlElement("w:t")
    t.text = text
    run.append(t)
    link.append(run)
    paragraph._p.append(link)


def tiny_png():
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    raw = b"".join(b"\0" + b"\xff\xff\xff" * 4 for _ in range(4))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def make_docx(path):
    d = docx.Document()
    d.core_properties.title = "Annual Plan"
    d.core_properties.author = "Planning Team"
    d.add_heading("Annual Plan", 1)
    p = d.add_paragraph("The plan is ")
    p.add_run("ambitious").bold = True
    p.add_run(" and ")
    p.add_run("careful").italic = True
    p.add_run(". See ")
    add_hyperlink(p, "https://example.com/plan", "the site")
    d.add_heading("Goals", 2)
    d.add_paragraph("Grow revenue", style="List Bullet")
    d.add_paragraph("In Europe", style="List Bullet 2")
    d.add_paragraph("Cut costs", style="List Bullet")
    d.add_heading("Steps", 2)
    for step in ("Hire", "Build", "Ship"):
        d.add_paragraph(step, style="List Number")
    t = d.add_table(rows=3, cols=3)
    for r, row in enumerate([["Quarter", "Target", "Owner"], ["Q1", "10", "Ann"],
                             ["Q2", "20", "Bob"]]):
        for c, text in enumerate(row):
            t.cell(r, c).text = text
    m = d.add_table(rows=2, cols=3)
    m.cell(0, 0).merge(m.cell(0, 1)).text = "Wide"
    m.cell(0, 2).text = "Tall"
    m.cell(0, 2).merge(m.cell(1, 2))
    m.cell(1, 0).text = "a"
    m.cell(1, 1).text = "b"
    img = io.BytesIO(tiny_png())
    d.add_picture(img)
    d.inline_shapes[0]._inline.docPr.set("descr", "Company logo")
    d.save(str(path))


def make_xlsx(path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Budget"
    ws.append(["Item", "Cost", "When"])
    ws.append(["Laptops", 1200, datetime.date(2024, 3, 15)])
    ws.append(["Desks", 300.5, datetime.date(2024, 4, 1)])
    ws.merge_cells("A5:C5")
    ws["A5"] = "Approved"
    other = wb.create_sheet("People")
    other.append(["Name", "Team"])
    other.append(["Ann", "Sales"])
    wb.properties.title = "Budget 2024"
    wb.properties.creator = "Finance"
    wb.save(str(path))


ODF_NS = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
          'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
          'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
          'xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0" '
          'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" '
          'xmlns:dc="http://purl.org/dc/elements/1.1/" '
          'xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0" office:version="1.2"')

SLIDES = [("Opening Slide", [("Point one", ["Sub point"]), ("Point two", [])], "Say hello"),
          ("Second Slide", [("Alpha", []), ("Beta", [])], "Wrap up")]


def make_odp(path):
    """A deck on LibreOffice's own template (its master pages give real placeholders)."""
    def esc(s):
        return s.replace("&", "&amp;").replace("<", "&lt;")
    pages = []
    for i, (title, bullets, notes) in enumerate(SLIDES, 1):
        items = "".join(
            f"<text:list-item><text:p>{esc(b)}</text:p>" +
            ("<text:list>" + "".join(f"<text:list-item><text:p>{esc(s)}</text:p>"
                                     "</text:list-item>" for s in sub) + "</text:list>"
             if sub else "") + "</text:list-item>" for b, sub in bullets)
        pages.append(
            f'<draw:page draw:name="page{i}" draw:master-page-name="Metropolis" '
            'presentation:presentation-page-layout-name="AL1T2">'
            '<draw:frame presentation:style-name="pr1" draw:layer="layout" svg:width="14.8cm" '
            'svg:height="2cm" svg:x="6.6cm" svg:y="0.6cm" presentation:class="title">'
            f'<draw:text-box><text:p>{esc(title)}</text:p></draw:text-box></draw:frame>'
            '<draw:frame presentation:style-name="pr2" draw:layer="layout" svg:width="25cm" '
            'svg:height="10cm" svg:x="1.4cm" svg:y="3.8cm" presentation:class="outline">'
            f'<draw:text-box><text:list>{items}</text:list></draw:text-box></draw:frame>'
            '<presentation:notes><draw:frame presentation:style-name="pr3" draw:layer="layout" '
            'svg:width="17cm" svg:height="14cm" svg:x="2cm" svg:y="13cm" '
            'presentation:class="notes">'
            f'<draw:text-box><text:p>{esc(notes)}</text:p></draw:text-box></draw:frame>'
            '</presentation:notes></draw:page>')
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ODF_NS}>'
        '<office:automatic-styles>'
        '<style:style style:name="pr1" style:family="presentation" '
        'style:parent-style-name="Metropolis-title"/>'
        '<style:style style:name="pr2" style:family="presentation" '
        'style:parent-style-name="Metropolis-outline1"/>'
        '<style:style style:name="pr3" style:family="presentation" '
        'style:parent-style-name="Metropolis-notes"/>'
        '</office:automatic-styles><office:body><office:presentation>' + "".join(pages) +
        '</office:presentation></office:body></office:document-content>')
    meta = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-meta {ODF_NS}>'
            '<office:meta><dc:title>Team Deck</dc:title>'
            '<meta:initial-creator>Deck Author</meta:initial-creator></office:meta>'
            '</office:document-meta>')
    with zipfile.ZipFile(ODP_TEMPLATE) as t, zipfile.ZipFile(str(path), "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.presentation")
        for info in t.infolist():
            if info.filename in ("mimetype", "content.xml", "meta.xml"):
                continue
            data = t.read(info.filename)
            if info.filename == "META-INF/manifest.xml":
                data = data.replace(b"presentation-template", b"presentation")
            z.writestr(info.filename, data, zipfile.ZIP_DEFLATED)
        z.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
        z.writestr("meta.xml", meta, zipfile.ZIP_DEFLATED)


def soffice_convert(src, fmt, outdir):
    """LibreOffice headless: src converted to fmt in outdir (its own profile dir)."""
    profile = outdir / "lo-profile"
    subprocess.run([SOFFICE, f"-env:UserInstallation=file://{profile}", "--headless",
                    "--convert-to", fmt, "--outdir", str(outdir), str(src)],
                   check=True, capture_output=True, timeout=180)
    out = outdir / (src.stem + "." + fmt.split(":")[0])
    assert out.exists(), f"LibreOffice did not write {out}"
    return out


HTML = """<!DOCTYPE html><html><head><title>Web Page</title>
<meta name="author" content="Web Author"></head><body>
<h1>Web Title</h1><p>Intro with <strong>strong</strong> and <a href="https://example.org/">a link</a>.</p>
<ol><li>First<ul><li>Inner</li></ul></li><li>Second</li></ol>
<table><tr><th colspan="2">Span</th></tr><tr><td>x</td><td>y</td></tr></table>
<img alt="A chart" src="chart.png"><script>ignored()</script></body></html>"""

MARKDOWN = "# Notes\n\nSome text here.\n\n- one\n- two\n  - two and a half\n"
CSV = "name,qty\napple,3\n\"pear, green\",5\n"


@pytest.fixture(scope="module")
def office_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("office")
    make_docx(root / "plan.docx")
    make_xlsx(root / "budget.xlsx")
    (root / "page.html").write_text(HTML)
    (root / "notes.md").write_text(MARKDOWN)
    (root / "data.csv").write_text(CSV)
    (root / "plain.txt").write_text("Just a line of text.\n\nAnd another paragraph.\n")
    # names say nothing: the bytes decide
    shutil.copy(root / "plan.docx", root / "plan.bin")
    if SOFFICE:
        # LibreOffice computes formulas: its XLSX carries cached values
        wb = openpyxl.Workbook()
        wb.active.append([2, 3, "=A1*B1"])
        wb.save(str(root / "formula.xlsx"))
        jobs = [("plan.docx", "odt", "plan.odt"), ("budget.xlsx", "ods", "budget.ods"),
                ("formula.xlsx", "ods", None)]
        if os.path.exists(ODP_TEMPLATE):
            make_odp(root / "deck.odp")
            jobs.append(("deck.odp", "pptx", "deck.pptx"))

        def run(i, job):   # each in its own directory and profile: they run side by side
            src, fmt, dst = job
            out = soffice_convert(root / src, fmt, root / f"lo{i}")
            if dst:
                shutil.copy(out, root / dst)
            return out
        for d in (root / f"lo{i}" for i in range(len(jobs))):
            d.mkdir()
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as ex:
            outs = list(ex.map(run, range(len(jobs)), jobs))
        shutil.copy(soffice_convert(outs[2], "xlsx", root / "lo0"), root / "cached.xlsx")
    write_hostile(root)
    return root


@pytest.fixture
def worker(redis_server, cworker_factory, office_dir):
    needs_docconv()
    return cworker_factory(["-c", "1", "--docconv-roots", str(office_dir)], redis=redis_server)


def convert(app, src, timeout=60, **kw):
    return app.send_task("docconv.convert", args=[str(src)], kwargs=kw).get(timeout=timeout * SLOW)


def needs_soffice(path):
    if not SOFFICE or not path.exists():
        pytest.skip("LibreOffice (soffice) not installed")


# ---------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------

def test_docx_markdown_structure(worker, app, office_dir):
    r = convert(app, office_dir / "plan.docx")
    md = r["content"]
    assert r["format"] == "markdown" and r["pages"] == 1 and r["ocr_pages"] == []
    lines = md.splitlines()
    assert lines[0] == "# Annual Plan"
    assert "## Goals" in lines and "## Steps" in lines
    assert "The plan is **ambitious** and *careful*. See [the site](https://example.com/plan)" \
        in md
    # nested bullets and numbering
    i = lines.index("- Grow revenue")
    assert lines[i + 1] == "  - In Europe" and lines[i + 2] == "- Cut costs"
    assert "1. Hire\n2. Build\n3. Ship" in md
    assert "| Quarter | Target | Owner |\n| --- | --- | --- |\n| Q1 | 10 | Ann |" in md
    assert "![Company logo](image1.png)" in md
    meta = r["metadata"]
    assert meta["title"] == "Annual Plan" and meta["author"] == "Planning Team"
    assert meta["format"] == "DOCX" and meta["page_count"] == 1 and meta["encrypted"] is False


def test_docx_json_blocks_and_merged_cells(worker, app, office_dir):
    r = convert(app, office_dir / "plan.bin", format="json")
    page = r["content"]["pages"][0]
    kinds = [b["type"] for b in page["blocks"]]
    assert kinds[:3] == ["heading", "paragraph", "heading"]
    assert page["blocks"][0] == {"type": "heading", "level": 1, "text": "Annual Plan",
                                 "spans": [{"text": "Annual Plan", "bold": False,
                                            "italic": False}]}
    spans = page["blocks"][1]["spans"]
    assert {"text": "ambitious", "bold": True, "italic": False} in spans
    assert any(s.get("href") == "https://example.com/plan" for s in spans)
    lists = [b for b in page["blocks"] if b["type"] == "list"]
    assert lists[0]["ordered"] is False and lists[1]["ordered"] is True
    nested = lists[0]["items"][0]["blocks"]
    assert nested[0]["text"] == "Grow revenue" and nested[1]["type"] == "list"
    assert nested[1]["items"][0]["blocks"][0]["text"] == "In Europe"
    tables = [b for b in page["blocks"] if b["type"] == "table"]
    merged = tables[1]
    assert merged["columns"] == 3
    assert merged["rows"][0] == [{"text": "Wide", "colspan": 2, "rowspan": 1},
                                 {"text": "Tall", "colspan": 1, "rowspan": 2}]
    assert [c["text"] for c in merged["rows"][1]] == ["a", "b"]


def test_docx_html_and_text(worker, app, office_dir):
    html = convert(app, office_dir / "plan.docx", format="html")["content"]
    assert "<h1>Annual Plan</h1>" in html and "<strong>ambitious</strong>" in html
    assert '<th colspan="2">Wide</th><th rowspan="2">Tall</th>' in html
    assert '<a href="https://example.com/plan">the site</a>' in html
    assert "<ol>\n<li>Hire</li>" in html and '<img alt="Company logo"' in html
    text = convert(app, office_dir / "plan.docx", format="text")["content"]
    assert text.startswith("Annual Plan\n\nThe plan is ambitious and careful. See the site")
    assert "[image: Company logo]" in text


def test_xlsx_sheets_are_pages(worker, app, office_dir):
    r = convert(app, office_dir / "budget.xlsx")
    assert r["pages"] == 2 and r["metadata"]["page_count"] == 2
    assert r["metadata"]["title"] == "Budget 2024" and r["metadata"]["format"] == "XLSX"
    md = r["content"]
    first, second = md.split("\n---\n")
    assert first.startswith("# Budget\n\n| Item | Cost | When |")
    assert "| Laptops | 1200 | 2024-03-15 |" in first and "| Desks | 300.5 | 2024-04-01 |" in first
    assert "# People" in second and "| Ann | Sales |" in second
    j = convert(app, office_dir / "budget.xlsx", format="json", pages=[2])["content"]
    assert [p["number"] for p in j["pages"]] == [2] and j["pages"][0]["title"] == "People"
    t = convert(app, office_dir / "budget.xlsx", format="json", pages=[1])["content"]
    table = t["pages"][0]["blocks"][0]
    approved = [c for row in table["rows"] for c in row if c["text"] == "Approved"]
    assert approved == [{"text": "Approved", "colspan": 3, "rowspan": 1}]
    with pytest.raises(ValueError):
        convert(app, office_dir / "budget.xlsx", pages=[3])


def test_xlsx_formulas_give_cached_values(worker, app, office_dir):
    needs_soffice(office_dir / "cached.xlsx")
    md = convert(app, office_dir / "cached.xlsx")["content"]
    assert "| 2 | 3 | 6 |" in md


def test_pptx_slides_titles_bullets_notes(worker, app, office_dir):
    needs_soffice(office_dir / "deck.pptx")
    r = convert(app, office_dir / "deck.pptx")
    assert r["pages"] == 2 and r["metadata"]["format"] == "PPTX"
    assert r["metadata"]["title"] == "Team Deck"
    one, two = r["content"].split("\n---\n")
    assert one.startswith("# Opening Slide\n\n- Point one\n  - Sub point\n- Point two\n")
    assert "> Say hello" in one
    assert two.strip().startswith("# Second Slide") and "- Alpha\n- Beta" in two
    j = convert(app, office_dir / "deck.pptx", format="json")["content"]
    assert [p["title"] for p in j["pages"]] == ["Opening Slide", "Second Slide"]
    assert j["pages"][1]["notes"][0]["text"] == "Wrap up"
    info = app.send_task("docconv.info", args=[str(office_dir / "deck.pptx")]).get(timeout=30)
    assert info["page_count"] == 2 and info["format"] == "PPTX"


def test_odf_documents(worker, app, office_dir):
    needs_soffice(office_dir / "plan.odt")
    odt = convert(app, office_dir / "plan.odt")
    assert odt["metadata"]["format"] == "ODT"
    md = odt["content"]
    assert md.startswith("# Annual Plan") and "## Goals" in md and "**ambitious**" in md
    assert "| Quarter | Target | Owner |" in md and "1. Hire" in md
    ods = convert(app, office_dir / "budget.ods")
    assert ods["pages"] == 2 and "| Laptops | 1200 | 2024-03-15 |" in ods["content"]
    if (office_dir / "deck.odp").exists():
        odp = convert(app, office_dir / "deck.odp", format="json")["content"]
        assert [p["title"] for p in odp["pages"]] == ["Opening Slide", "Second Slide"]
        assert odp["pages"][0]["notes"][0]["text"] == "Say hello"


def test_html_markdown_csv_text(worker, app, office_dir):
    r = convert(app, office_dir / "page.html")
    md = r["content"]
    assert r["metadata"]["title"] == "Web Page" and r["metadata"]["author"] == "Web Author"
    assert md.startswith("# Web Title\n\nIntro with **strong** and [a link](https://example.org/).")
    assert "1. First\n   - Inner\n2. Second" in md
    assert "| Span |  |" in md and "![A chart](chart.png)" in md and "ignored" not in md
    # plain formats pass through in their own format, and get structure in the others
    assert convert(app, office_dir / "notes.md")["content"] == MARKDOWN
    h = convert(app, office_dir / "notes.md", format="html")["content"]
    assert "<h1>Notes</h1>" in h and "<li>two\n<ul>\n<li>two and a half</li>" in h
    assert convert(app, office_dir / "data.csv", format="text")["content"] == CSV
    assert "| pear, green | 5 |" in convert(app, office_dir / "data.csv")["content"]
    j = convert(app, office_dir / "plain.txt", format="json")["content"]
    assert [b["text"] for b in j["pages"][0]["blocks"]] == ["Just a line of text.",
                                                           "And another paragraph."]


def test_info_reads_core_properties(worker, app, office_dir):
    info = app.send_task("docconv.info", args=[str(office_dir / "plan.docx")]).get(timeout=30)
    assert info["title"] == "Annual Plan" and info["author"] == "Planning Team"
    assert info["page_count"] == 1 and info["format"] == "DOCX"
    info = app.send_task("docconv.info", args=[str(office_dir / "budget.xlsx")]).get(timeout=30)
    assert info["page_count"] == 2


# ---------------------------------------------------------------------------
# hostile input
# ---------------------------------------------------------------------------

W_NS = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def package(parts):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<Types xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/content-types"/>')
        for name, data in parts.items():
            z.writestr(name, data)
    return b.getvalue()


def word(body):
    return f'<w:document {W_NS}><w:body>{body}</w:body></w:document>'


def write_hostile(root):
    bomb = word("<w:p><w:r><w:t>" + "A" * (64 << 20) + "</w:t></w:r></w:p>")
    (root / "bomb.docx").write_bytes(package({"word/document.xml": bomb}))
    (root / "traversal.docx").write_bytes(package({"word/document.xml": word(""),
                                                   "../../etc/cron.d/x": "boom"}))
    laughs = ('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
              '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>' +
              word("<w:p><w:r><w:t>&b;</w:t></w:r></w:p>"))
    (root / "laughs.docx").write_bytes(package({"word/document.xml": laughs}))
    deep = word("<w:tbl><w:tr><w:tc>" * 300 + "</w:tc></w:tr></w:tbl>" * 300)
    (root / "deep.docx").write_bytes(package({"word/document.xml": deep}))
    (root / "deep.html").write_text("<html><body>" + "<div>" * 20000 + "x" +
                                    "</div>" * 20000 + "</body></html>")
    s_ns = ('xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"')
    rels = ('<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
            'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
            'officeDocument/2006/relationships/{}" Target="{}"/></Relationships>')
    (root / "huge.xlsx").write_bytes(package({
        "_rels/.rels": rels.format("officeDocument", "xl/workbook.xml"),
        "xl/workbook.xml": f'<workbook {s_ns}><sheets><sheet name="Big" sheetId="1" '
                           'r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": rels.format("worksheet", "worksheets/sheet1.xml"),
        "xl/worksheets/sheet1.xml": f'<worksheet {s_ns}><sheetData><row r="1"><c r="A1">'
                                    '<v>1</v></c></row><row r="1048576"><c r="XFD1048576">'
                                    '<v>2</v></c></row></sheetData></worksheet>'}))
    (root / "broken.docx").write_bytes(package({"word/document.xml": "<w:document"}))
    (root / "legacy.doc").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 1000)


@pytest.mark.parametrize("name,exc,words", [
    ("bomb.docx", "ResourceLimit", "zip bomb"),
    ("traversal.docx", "DocumentError", "unsafe entry name"),
    ("laughs.docx", "DocumentError", "entities"),
    ("deep.docx", "DocumentError", "depth"),
    ("deep.html", "ResourceLimit", "nested"),
    ("huge.xlsx", "ResourceLimit", "cells"),
    ("broken.docx", "DocumentError", "not well-formed"),
    ("legacy.doc", "DocumentError", "legacy binary Office"),
])
def test_hostile_documents_fail_cleanly(worker, app, office_dir, name, exc, words):
    with pytest.raises(Exception) as ei:
        convert(app, office_dir / name)
    assert type(ei.value).__name__ == exc and words in str(ei.value)
    # the worker keeps serving
    assert convert(app, office_dir / "notes.md")["content"] == MARKDOWN


# ---------------------------------------------------------------------------
# storage: S3 and the document store
# ---------------------------------------------------------------------------

def test_s3_round_trip_docx(redis_server, cworker_factory, app, office_dir, s3_server):
    needs_docconv()
    from test_docconv import s3_curl
    code, _ = s3_curl(s3_server, "PUT", "in/plan.docx", (office_dir / "plan.docx").read_bytes())
    assert code == 200
    cworker_factory(["-c", "1", "--s3-endpoint-url", s3_server.endpoint, "--s3-path-style"],
                    redis=redis_server, env=s3_server.env())
    r = convert(app, "s3://cw-test/in/plan.docx", output="s3://cw-test/out/plan.md")
    assert r["output"] == "s3://cw-test/out/plan.md" and r["bytes"] > 0
    code, body = s3_curl(s3_server, "GET", "out/plan.md")
    assert code == 200 and body.decode().startswith("# Annual Plan")


def test_document_store_takes_office_formats(redis_server, pg_server, cworker_factory, app,
                                             office_dir):
    needs_docconv()
    pytest.importorskip("psycopg2")
    p = run_cworker(["--result-backend", "db+postgresql://u@127.0.0.1:1/x", "--list-tasks"])
    if p.returncode != 0:
        pytest.skip("cworker built without PostgreSQL (libpq)")
    cworker_factory(["-c", "1", "--docconv-roots", str(office_dir)], redis=redis_server,
                    env={"CWORKER_DATABASE_URL": pg_server.url()})
    for name in ("plan.docx", "budget.xlsx", "page.html"):
        r = convert(app, office_dir / name, output="postgresql:office_docs")
        assert r["table"] == "office_docs" and r["deduplicated"] is False
    rows = pg_server.sql("SELECT source, content, metadata, page_count FROM office_docs "
                         "ORDER BY id")
    assert [os.path.basename(r[0]) for r in rows] == ["plan.docx", "budget.xlsx", "page.html"]
    assert rows[0][1].startswith("# Annual Plan") and rows[0][2]["format"] == "DOCX"
    assert rows[1][3] == 2 and "# Budget" in rows[1][1]
    j = convert(app, office_dir / "plan.docx", format="json", output="postgresql:office_docs")
    (content,) = pg_server.sql(f"SELECT content FROM office_docs WHERE id = {j['id']}")[0]
    assert json.loads(content)["pages"][0]["blocks"][0]["text"] == "Annual Plan"
