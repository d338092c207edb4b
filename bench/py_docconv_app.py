"""The stock-Python side of bench/docconv_bench.py: a Celery app whose
`docconv.convert` converts PDFs with PyMuPDF 1.21 (Debian's python3-fitz), the
way a Python document pipeline would do it without extra libraries.

format="text": page.get_text("text") per page, pages joined by a form feed.

format="markdown" (pdf_markdown below; pymupdf4llm is not in Debian 12): one
page.get_text("dict") per page, image blocks not requested. Then
- the body size is the font size (rounded to 0.5 pt) holding the most
  characters in the document; sizes at least 1 pt above it are heading sizes,
  the three largest become `#`, `##`, `###` (smaller ones `###` too);
- a text block whose dominant size is a heading size and that holds under 200
  characters is a heading line; any other block is a paragraph: its lines are
  joined with spaces, a word hyphenated at a line end is joined back;
- a line starting with a bullet (•, ◦, ▪, –, ·) starts a `- ` item;
- spans flagged bold are wrapped in `**`, italic in `*` (runs of the same
  style merged first);
- pages are separated by a `---` line.
No tables, running headers, columns or figures: it writes MuPDF's blocks in
MuPDF's order. cworker's markdown does all of those, so it does more work per
page than this task. OCR is not implemented here (the bench compares OCR with
the tesseract CLI instead)."""

import os
from collections import Counter

import fitz
from celery import Celery

app = Celery("py_docconv", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BROKER"])
app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                worker_hijack_root_logger=False)

# "dict" output without the image blocks (their bytes would be copied into Python)
DICT_FLAGS = fitz.TEXTFLAGS_DICT & ~fitz.TEXT_PRESERVE_IMAGES
BULLETS = ("•", "◦", "▪", "–", "·")


def _page_blocks(page, sizes):
    """[[line, ...], ...] per text block, a line being [(text, size, bold, italic), ...];
    counts characters per size into `sizes`."""
    blocks = []
    for b in page.get_text("dict", flags=DICT_FLAGS)["blocks"]:
        if b["type"] != 0:
            continue
        lines = []
        for ln in b["lines"]:
            spans = []
            for s in ln["spans"]:
                if not s["text"]:
                    continue
                size = round(s["size"] * 2) / 2
                sizes[size] += len(s["text"])
                spans.append((s["text"], size, bool(s["flags"] & 16), bool(s["flags"] & 2)))
            if spans:
                lines.append(spans)
        if lines:
            blocks.append(lines)
    return blocks


def _line_markdown(spans):
    out = []
    i = 0
    while i < len(spans):
        bold, italic = spans[i][2], spans[i][3]
        j = i
        while j < len(spans) and spans[j][2] == bold and spans[j][3] == italic:
            j += 1
        text = "".join(s[0] for s in spans[i:j])
        core = text.strip()
        if core and (bold or italic):
            mark = "**" if bold else "*"
            if bold and italic:
                mark = "***"
            lead = text[:len(text) - len(text.lstrip())]
            trail = text[len(text.rstrip()):]
            text = f"{lead}{mark}{core}{mark}{trail}"
        out.append(text)
        i = j
    return "".join(out).strip()


def _join(lines):
    text = ""
    for ln in lines:
        if not ln:
            continue
        if text.endswith("-") and len(text) > 1 and text[-2].isalpha() and ln[:1].islower():
            text = text[:-1] + ln
        elif text:
            text += " " + ln
        else:
            text = ln
    return text


def pdf_markdown(doc):
    sizes = Counter()
    pages = [_page_blocks(page, sizes) for page in doc]
    body = sizes.most_common(1)[0][0] if sizes else 10.0
    heading_sizes = sorted((s for s in sizes if s >= body + 1), reverse=True)
    level = {s: min(i + 1, 3) for i, s in enumerate(heading_sizes)}
    out_pages = []
    for blocks in pages:
        parts = []
        for lines in blocks:
            chars = Counter()
            for spans in lines:
                for s in spans:
                    chars[s[1]] += len(s[0])
            size = chars.most_common(1)[0][0]
            if size in level and sum(chars.values()) < 200:
                heading = " ".join("".join(s[0] for s in spans).strip() for spans in lines)
                if heading.strip():
                    parts.append("#" * level[size] + " " + heading.strip())
                continue
            item = []
            for spans in lines:
                raw = "".join(s[0] for s in spans).lstrip()
                if raw.startswith(BULLETS):
                    if item:
                        parts.append(_join(item))
                    rest = [s for s in spans if s[0].strip()]
                    rest[0] = (rest[0][0].lstrip()[1:],) + rest[0][1:]
                    item = ["- " + _line_markdown(rest)]
                else:
                    item.append(_line_markdown(spans))
            if item:
                parts.append(_join(item))
        out_pages.append("\n\n".join(p for p in parts if p))
    return "\n\n---\n\n".join(out_pages)


@app.task(name="docconv.convert")
def convert(source, format="text", ocr="never", pages=None, **kw):
    doc = fitz.open(source)
    if format == "markdown":
        content = pdf_markdown(doc)
    else:
        format = "text"
        content = "\f".join(page.get_text("text") for page in doc)
    n = doc.page_count
    doc.close()
    return {"format": format, "pages": n, "content": content, "ocr_pages": [], "warnings": []}
