"""Footprint (issue 19): the master never maps the conversion code, its libraries or the ones
only some configurations need (libcurl, libpq); a child loads cworker-docconv.so on its first
docconv task, and only that child has it.  Plus the ways the loader can be pointed elsewhere
or fail."""
import os
import time

import pytest

from conftest import SLOW, descendants, run_cworker

# what an idle worker on a Redis broker must not map
HEAVY = ("cworker-docconv.so", "libtesseract", "liblept", "libgomp", "libstdc++", "libharfbuzz",
         "libfreetype", "libcurl", "libpq", "libgnutls", "libkrb5", "libldap")
# a one-page PDF (MuPDF repairs the missing cross-reference table)
TINY_PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
            b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
            b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
            b"trailer<</Root 1 0 R>>\n%%EOF\n")


def needs_docconv():
    p = run_cworker(["--list-tasks"])
    if "docconv.convert" not in p.stdout:
        pytest.skip("cworker built without docconv")


def mapped(pid):
    """Basenames of the files mapped by pid."""
    with open(f"/proc/{pid}/maps") as f:
        return {os.path.basename(p[5]) for p in (line.split() for line in f) if len(p) > 5}


def heavy(pid):
    maps = mapped(pid)
    # the sanitizers' runtime (ASan/UBSan builds) brings libstdc++ itself
    sanitized = any(m.startswith(("libasan", "libubsan")) for m in maps)
    return sorted(m for m in maps if any(m.startswith(h) for h in HEAVY)
                  and not (sanitized and m.startswith("libstdc++")))


def children(pid, n, timeout=10):
    end = time.monotonic() + timeout * SLOW
    while time.monotonic() < end:
        kids = descendants(pid)
        if len(kids) >= n:
            return kids
        time.sleep(0.05)
    raise AssertionError(f"expected {n} children of {pid}, found {descendants(pid)}")


@pytest.fixture
def docs(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "tiny.pdf").write_bytes(TINY_PDF)
    return root


def test_idle_worker_maps_no_conversion_code(redis_server, cworker_factory, app, docs):
    needs_docconv()
    w = cworker_factory(["-c", "2", "--prefetch-multiplier", "1", "--docconv-roots", str(docs)],
                        redis=redis_server)
    kids = children(w.pid, 2)
    for pid in [w.pid] + kids:
        assert heavy(pid) == [], f"process {pid} maps {heavy(pid)}"

    info = app.send_task("docconv.info", args=[str(docs / "tiny.pdf")]).get(timeout=30 * SLOW)
    assert info["page_count"] == 1

    loaded = [pid for pid in kids if "cworker-docconv.so" in mapped(pid)]
    assert len(loaded) == 1, {pid: heavy(pid) for pid in kids}
    assert any(m.startswith("libtesseract") for m in mapped(loaded[0]))
    assert heavy(w.pid) == [], "the master loaded conversion code"
    other = [pid for pid in kids if pid not in loaded]
    assert all(heavy(pid) == [] for pid in other), {pid: heavy(pid) for pid in other}
    # and the same child keeps it warm for the next task
    again = app.send_task("docconv.info", args=[str(docs / "tiny.pdf")]).get(timeout=30 * SLOW)
    assert again["page_count"] == 1


def test_docconv_library_setting(redis_server, cworker_factory, app, docs, tmp_path):
    """docconv_library names the file; a path that is not there stops the worker at start,
    one that is not a docconv build fails the docconv tasks only."""
    needs_docconv()
    missing = tmp_path / "nowhere" / "cworker-docconv.so"
    p = run_cworker(["-b", redis_server.url(), "--docconv-library", str(missing)])
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "docconv" in p.stderr and str(missing) in p.stderr, p.stderr
    p = run_cworker(["-b", redis_server.url()], env={"CWORKER_DOCCONV_LIBRARY": str(missing)})
    assert p.returncode == 1 and str(missing) in p.stderr, p.stderr

    bogus = tmp_path / "bogus.so"
    bogus.write_bytes(b"not a shared object")
    w = cworker_factory(["-c", "1", "--docconv-roots", str(docs), "--docconv-library",
                         str(bogus)], redis=redis_server)
    with pytest.raises(Exception) as ei:
        app.send_task("docconv.info", args=[str(docs / "tiny.pdf")]).get(timeout=30 * SLOW)
    assert type(ei.value).__name__ == "ImportError" and str(bogus) in str(ei.value)
    # the worker keeps serving everything else
    assert app.send_task("cworker.add", args=(2, 3)).get(timeout=20 * SLOW) == 5
    assert w.alive()


def test_batch_finds_the_module(tmp_path):
    """`cworker batch` loads cworker-docconv.so too (here only to print its usage)."""
    needs_docconv()
    p = run_cworker(["batch", "--help"])
    if "batch" not in (p.stdout + p.stderr):
        pytest.skip("no document store in this build")
    assert "cannot find" not in p.stderr and "cannot load" not in p.stderr, p.stderr
    p = run_cworker(["batch", "--help"],
                    env={"CWORKER_DOCCONV_LIBRARY": str(tmp_path / "missing.so")})
    assert p.returncode == 1 and "missing.so" in p.stderr, p.stderr
