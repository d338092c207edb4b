"""A layout corpus with known ground truth, and the scores of a converter's output on it.

Generated with PyMuPDF (python3-fitz): fitz.Story lays out HTML (tables with and without
rulings, headings, lists, paragraphs that run over page breaks), running headers and "Page N of
M" footers are written on every page afterwards, and multi-column pages are composed from one
page per column drawn in a scrambled order (right column first, the title last), so the content
stream's order is not the reading order.

    truth = generate(folder)                 # writes *.pdf, returns the ground truth
    scores = score(truth, outputs)           # outputs: {name: markdown-ish text}

Used by tests/integration/test_layout.py (thresholds) and bench/layout_score.py (the table
comparing cworker, pdftotext and PyMuPDF).
"""

import os
import random
import re

import fitz

WORDS = ("invoice payment delivery quarter revenue region margin board warehouse contract "
         "customer supplier balance ledger account report summary growth cost price harbour "
         "freight shipment budget forecast audit reserve capital dividend tariff inventory "
         "pallet carrier customs vessel berth crane depot storage transit schedule").split()
LETTER = fitz.paper_rect("letter")
HEADER = "ACME Shipping Group - Annual Report 2026"


def sentence(rnd, n=None):
    words = [rnd.choice(WORDS) for _ in range(n or rnd.randint(8, 16))]
    return " ".join(words).capitalize() + "."


def paragraph(rnd, sentences):
    return " ".join(sentence(rnd) for _ in range(sentences))


def table_rows(rnd, rows, cols):
    head = ["Item", "Place", "Quantity", "Rate", "Owner", "Status"][:cols]
    body = []
    for _ in range(rows - 1):
        row = [rnd.choice(WORDS).capitalize() + " " + rnd.choice(WORDS), rnd.choice(WORDS),
               str(rnd.randint(1, 999)), f"{rnd.randint(0, 99) / 10:.1f}%",
               rnd.choice(WORDS), rnd.choice(["open", "closed", "late"])][:cols]
        body.append(row)
    return [head] + body


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def story_pdf(path, html, css="", header=None):
    """Lay html out on letter pages (1 inch margins); header: add running furniture."""
    story = fitz.Story(html, user_css=css)
    writer = fitz.DocumentWriter(path)
    more = 1
    while more:
        dev = writer.begin_page(LETTER)
        more, _ = story.place(LETTER + (72, 72, -72, -72))
        story.draw(dev)
        writer.end_page()
    writer.close()
    doc = fitz.open(path)
    if header:
        for i, page in enumerate(doc):
            page.insert_text((72, 40), header, fontsize=9, fontname="helv")
            page.insert_text((460, 40), "Confidential", fontsize=9, fontname="helv")
            page.insert_text((270, 765), f"Page {i + 1} of {len(doc)}", fontsize=9,
                             fontname="helv")
        doc.save(path + ".tmp")
        doc.close()
        os.replace(path + ".tmp", path)
        doc = fitz.open(path)
    return doc


def split_paragraphs(doc, paras):
    """The paragraphs no single text block of the PDF holds whole: split by a break."""
    blocks = [norm(b[4]) for page in doc for b in page.get_text("blocks") if b[6] == 0]
    return [p for p in paras if not any(norm(p) in b for b in blocks)]


LIGATURES = {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl"}


def norm(s):
    for k, v in LIGATURES.items():
        s = s.replace(k, v)
    s = re.sub(r"-\s*\n\s*(?=[a-z])", "", s)
    return " ".join(s.split())


def table_doc(path, rnd, ruled):
    css = "td, th { border: 1px solid black; padding: 3px; }" if ruled else \
        "td, th { padding: 3px 12px 3px 0; text-align: left; }"
    rows = table_rows(rnd, 7, 4)
    intro, after = paragraph(rnd, 3), paragraph(rnd, 2)
    items = [sentence(rnd, 5)[:-1] for _ in range(3)]
    title, sub = "Port Operations " + rnd.choice(WORDS).capitalize(), "Outlook"
    html = (f"<h1>{title}</h1><p>{intro}</p><table>" +
            "".join("<tr>" + "".join(f"<{'th' if r == 0 else 'td'}>{esc(c)}</"
                                     f"{'th' if r == 0 else 'td'}>" for c in row) + "</tr>"
                    for r, row in enumerate(rows)) +
            f"</table><p>{after}</p><h2>{sub}</h2><ul>" +
            "".join(f"<li>{i}</li>" for i in items) + "</ul>")
    doc = story_pdf(path, html, css)
    doc.close()
    return {"tables": [rows], "ruled": ruled, "paragraphs": [intro, after],
            "headings": [(1, title), (2, sub)], "items": items, "split": []}


def report_doc(path, rnd, pages=6):
    parts, paras, heads, items = [], [], [], []
    title = "Annual Report"
    parts.append(f"<h1>{title}</h1>")
    heads.append((1, title))
    for s in range(pages):
        sub = f"Section {s + 1}: " + rnd.choice(WORDS).capitalize()
        parts.append(f"<h2>{sub}</h2>")
        heads.append((2, sub))
        for _ in range(3):
            p = paragraph(rnd, rnd.randint(4, 7))
            paras.append(p)
            parts.append(f"<p>{p}</p>")
        if s % 2 == 0:
            its = [sentence(rnd, 4)[:-1] for _ in range(2)]
            items += its
            parts.append("<ul>" + "".join(f"<li>{i}</li>" for i in its) + "</ul>")
    doc = story_pdf(path, "".join(parts), "p { text-align: justify; }", header=HEADER)
    n = len(doc)
    split = split_paragraphs(doc, paras)
    furniture = [[HEADER, "Confidential", f"Page {i + 1} of {n}"] for i in range(n)]
    doc.close()
    return {"tables": [], "paragraphs": paras, "headings": heads, "items": items,
            "split": split, "furniture": furniture, "pages": n}


def columns_doc(path, rnd, ncols, pages=2):
    """Pages with a full-width title and ncols columns; the columns drawn right to left."""
    import io
    paras = [paragraph(rnd, rnd.randint(3, 5)) for _ in range(5 * ncols * pages)]
    story = fitz.Story("".join(f"<p>{p}</p>" for p in paras),
                       user_css="p { text-align: justify; font-size: 10pt; }")
    gap, top = 18, 130
    width = (LETTER.width - 144 - gap * (ncols - 1)) / ncols
    bio = io.BytesIO()
    writer = fitz.DocumentWriter(bio)    # one page per column
    layout, more = [], 1
    for pg in range(pages):
        cols = 0
        for c in range(ncols):
            if not more:
                break
            x0 = 72 + c * (width + gap)
            more, _ = story.place(fitz.Rect(x0, top, x0 + width, 720))
            story.draw(writer.begin_page(LETTER))
            writer.end_page()
            cols += 1
        layout.append(cols)
        if not more:
            break
    writer.close()
    src = fitz.open("pdf", bio.getvalue())
    out = fitz.open()
    titles, k = [], 0
    for pg, cols in enumerate(layout):
        page = out.new_page(width=LETTER.width, height=LETTER.height)
        for c in reversed(range(cols)):
            page.show_pdf_page(LETTER, src, k + c)
        k += cols
        title = f"Column Digest {pg + 1}: " + rnd.choice(WORDS).capitalize()
        page.insert_text((72, 90), title, fontsize=20, fontname="hebo")
        titles.append(title)
    out.save(path)
    out.close()
    doc = fitz.open(path)
    text = norm(" ".join(pg.get_text() for pg in doc))
    placed = [p for p in paras if " ".join(norm(p).split()[:8]) in text]
    split = split_paragraphs(doc, placed)
    doc.close()
    return {"tables": [], "paragraphs": placed, "headings": [(1, t) for t in titles],
            "items": [], "split": split, "order": [titles, placed], "columns": ncols}


def generate(folder, seed=16):
    rnd = random.Random(seed)
    truth = {}
    for i in range(3):
        truth[f"ruled{i}.pdf"] = table_doc(os.path.join(folder, f"ruled{i}.pdf"), rnd, True)
        truth[f"unruled{i}.pdf"] = table_doc(os.path.join(folder, f"unruled{i}.pdf"), rnd, False)
    truth["report.pdf"] = report_doc(os.path.join(folder, "report.pdf"), rnd)
    truth["columns2.pdf"] = columns_doc(os.path.join(folder, "columns2.pdf"), rnd, 2)
    truth["columns3.pdf"] = columns_doc(os.path.join(folder, "columns3.pdf"), rnd, 3)
    return truth


# ---- scoring ------------------------------------------------------------------------------

def md_tables(text):
    """Markdown pipe tables in text: lists of rows of cell strings."""
    tables, cur = [], []
    for line in text.splitlines() + [""]:
        s = line.strip()
        if s.startswith("|") and s.endswith("|") and len(s) > 1:
            cells = [c.strip().replace("\\|", "|")
                     for c in re.split(r"(?<!\\)\|", s[1:-1])]
            if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                cur.append(cells)
        elif cur:
            tables.append(cur)
            cur = []
    return tables


def cell_f1(want_tables, got_tables):
    """F1 over (table, row, column, text) cells, each expected table matched to the output
    table sharing most cells."""
    tp = fp = fn = 0
    used = set()
    for want in want_tables:
        wset = {(r, c, norm(x)) for r, row in enumerate(want) for c, x in enumerate(row)}
        best, bi = set(), None
        for i, got in enumerate(got_tables):
            if i in used:
                continue
            gset = {(r, c, norm(x)) for r, row in enumerate(got) for c, x in enumerate(row) if x}
            if len(wset & gset) > len(best & wset):
                best, bi = gset, i
        if bi is not None:
            used.add(bi)
        tp += len(wset & best)
        fn += len(wset - best)
        fp += len(best - wset)
    for i, got in enumerate(got_tables):
        if i not in used:
            fp += sum(1 for row in got for x in row if x)
    if tp == 0:
        return 0.0
    p, r = tp / (tp + fp), tp / (tp + fn)
    return 2 * p * r / (p + r)


def out_paragraphs(text):
    return [norm(p) for p in re.split(r"\n\s*\n|\f", text) if p.strip()]


def score(truth, outputs):
    """Scores over the corpus; outputs maps each file name to its converted text."""
    s = {}
    for kind in ("ruled", "unruled"):
        want, got = [], []
        f1s = []
        for name, t in truth.items():
            if name.startswith(kind):
                f1s.append(cell_f1(t["tables"], md_tables(outputs[name])))
        s[f"{kind}_cell_f1"] = sum(f1s) / len(f1s)
    # furniture: pages whose header, "Confidential" and footer are all gone
    pages = removed = 0
    lost = total_paras = 0
    for name, t in truth.items():
        out = outputs[name]
        for fl in t.get("furniture", []):
            pages += 1
            removed += all(f not in out for f in fl[1:]) and out.count(fl[0]) == 0
        flat = norm(out)
        for p in t["paragraphs"]:
            total_paras += 1
            words = norm(p).split()
            # every body sentence is still there (in order, whatever the paragraphing)
            lost += any(norm(x) not in flat for x in re.split(r"(?<=\.) ", " ".join(words)))
    s["furniture_removed"] = removed / pages if pages else None
    s["body_paragraphs_lost"] = lost
    # rejoin: a paragraph split by a page or column break appears whole in one paragraph
    split = whole = 0
    for name, t in truth.items():
        paras = out_paragraphs(outputs[name])
        for p in t["split"]:
            split += 1
            whole += any(norm(p) in q for q in paras)
    s["rejoined"] = whole / split if split else None
    s["split_paragraphs"] = split
    # reading order: each multi-column document's title and paragraph starts in order
    right = docs = 0
    for name, t in truth.items():
        if "order" not in t:
            continue
        docs += 1
        flat = norm(outputs[name])
        pos, ok = -1, True
        titles, paras = t["order"]
        for x in titles[:1] + paras:
            i = flat.find(" ".join(norm(x).split()[:6]), pos + 1)
            if i <= pos:
                ok = False
                break
            pos = i
        right += ok
    s["reading_order"] = right / docs if docs else None
    # headings and list items as markdown
    hs = hn = ls = ln = 0
    for name, t in truth.items():
        lines = [l.strip() for l in outputs[name].splitlines()]
        for level, h in t["headings"]:
            hn += 1
            hs += ("#" * level + " " + h) in lines
        for it in t["items"]:
            ln += 1
            ls += ("- " + it) in lines
    s["headings"] = hs / hn if hn else None
    s["list_items"] = ls / ln if ln else None
    return s
