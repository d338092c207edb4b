"""Task modules (docs/modules.md): C tasks built out of tree against the
installed headers, loaded by cworker and called from Python Celery.

The session fixture `kit` does a real `meson install --destdir` of the build
the suite runs against (the directory holding build.ninja above
CWORKER_EXE), compiles tests/modules/*.c with `cc $(pkg-config --cflags
cworker)` against that install, and builds examples/modules/probe with its
own Makefile. Then: results, Python exceptions (builtin and custom),
declared-parameter TypeErrors identical to Python's, retry, soft time limit
cancellation, progress seen by AsyncResult and by an event receiver, the
life-cycle hooks and [module:NAME] settings, a crash costing only its task,
`--list-tasks` naming each task's module, and every refused module stopping
the worker with exit status 1 and its reason.
"""

import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from conftest import CWORKER_EXE, PYTHON, REPO, SLOW, need_cworker, run_cworker, wait_for
from test_monitoring import Events

MODULES_SRC = os.path.join(REPO, "tests", "modules")
PROBE_SRC = os.path.join(REPO, "examples", "modules", "probe")
CFLAGS = ["-shared", "-fPIC", "-fvisibility=hidden", "-O1", "-g", "-Wall", "-Wextra", "-Werror",
          "-Wstrict-prototypes", "-Wmissing-prototypes"]


def _run(argv, env=None, cwd=None, timeout=300):
    p = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(argv)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def _build_dir():
    """The meson build directory CWORKER_EXE belongs to."""
    d = os.path.dirname(os.path.abspath(CWORKER_EXE))
    while d != os.path.dirname(d):
        if os.path.exists(os.path.join(d, "build.ninja")):
            return d
        d = os.path.dirname(d)
    pytest.fail(f"no build.ninja above {CWORKER_EXE}: cannot `meson install` that build")


class Kit:
    """The install, the pkg-config environment and the built modules."""

    def __init__(self, root):
        self.root = root
        self.destdir = os.path.join(root, "destdir")
        _run(["meson", "install", "-C", _build_dir(), "--no-rebuild", "--quiet",
              "--destdir", self.destdir, "--tags", "devel"])
        pcs = glob.glob(os.path.join(self.destdir, "**", "pkgconfig", "cworker.pc"),
                        recursive=True)
        assert len(pcs) == 1, f"meson install put cworker.pc at {pcs}"
        self.pc = pcs[0]
        # a DESTDIR install: the .pc names the final prefix; the sysroot maps it here
        self.env = dict(os.environ, PKG_CONFIG_SYSROOT_DIR=self.destdir,
                        PKG_CONFIG_PATH=os.path.dirname(self.pc))
        self.cflags = self.pkg_config("--cflags", "cworker").split()
        self.mods = {}

    def pkg_config(self, *args):
        return _run(["pkg-config", *args], env=self.env).strip()

    def cc(self, name):
        out = os.path.join(self.root, f"{name}.so")
        _run(["cc", *CFLAGS, *self.cflags, "-o", out, os.path.join(MODULES_SRC, f"{name}.c")],
             env=self.env)
        self.mods[name] = out
        return out

    def build_probe(self):
        """examples/modules/probe with its own Makefile, in a copy (the tree stays clean)."""
        work = os.path.join(self.root, "probe")
        shutil.copytree(PROBE_SRC, work)
        _run(["make", "CFLAGS=-O2 -g -Wall -Wextra -Werror"], env=self.env, cwd=work)
        self.mods["probe"] = os.path.join(work, "probe.so")
        self.probe_dir = work


@pytest.fixture(scope="session")
def kit(tmp_path_factory):
    need_cworker()
    for tool in ("cc", "pkg-config", "meson"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed: cannot build task modules")
    k = Kit(str(tmp_path_factory.mktemp("modules")))
    for name in ("testmod", "badabi", "nosym", "dup"):
        k.cc(name)
    notaso = os.path.join(k.root, "notaso.so")
    shutil.copy(os.path.join(MODULES_SRC, "notaso.so"), notaso)
    k.mods["notaso"] = notaso
    return k


@pytest.fixture(scope="session")
def probe(kit):
    missing = [p for p in ("libcrypto", "libmagic")
               if subprocess.run(["pkg-config", "--exists", p]).returncode != 0]
    if missing or not shutil.which("make"):
        pytest.skip(f"the probe example needs make, libssl-dev and libmagic-dev; missing: "
                    f"{missing or 'make'}")
    kit.build_probe()
    return kit.mods["probe"]


def mod_args(kit, *names):
    out = []
    for n in names:
        out += ["--task-module", kit.mods[n]]
    return out


# -- build and install ---------------------------------------------------------

def test_install_and_pkg_config(kit):
    heads = sorted(os.path.basename(p) for p in glob.glob(
        os.path.join(kit.destdir, "**", "include", "cworker", "*.h"), recursive=True))
    assert heads == ["log.h", "module.h", "task.h"]
    with open(os.path.join(REPO, "meson.build")) as f:
        version = re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)
    assert kit.pkg_config("--modversion", "cworker") == version
    assert any(f.endswith("/include") for f in kit.cflags), kit.cflags
    assert kit.pkg_config("--print-requires", "cworker").startswith("jansson")
    assert kit.pkg_config("--variable=moduledir", "cworker").endswith("/cworker/modules")
    # modules link no cworker library
    assert "-lcworker" not in kit.pkg_config("--libs", "cworker")


def test_list_tasks_names_each_module(kit, probe):
    r = run_cworker(mod_args(kit, "testmod", "probe") + ["--list-tasks"])
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines() if line.strip()}
    assert rows["cworker.add"] == "cworker"
    assert rows["testmod.add"] == "testmod" and rows["testmod.crash"] == "testmod"
    assert rows["probe.stat"] == "probe" and rows["probe.stat_many"] == "probe"
    assert "bind(a, b=None, *, c, d=None)" in r.stdout


def test_modules_from_config_key_and_directory(kit, tmp_path):
    conf = tmp_path / "cw.conf"
    conf.write_text(f"worker_task_modules = {kit.mods['testmod']}\n")
    r = run_cworker(["--config", str(conf), "--list-tasks"])
    assert r.returncode == 0 and "testmod.whoami" in r.stdout, r.stderr
    d = tmp_path / "mods"
    d.mkdir()
    shutil.copy(kit.mods["testmod"], d / "testmod.so")
    (d / "README").write_text("not a module: no .so suffix, not loaded\n")
    r = run_cworker(["--task-modules-dir", str(d), "--list-tasks"])
    assert r.returncode == 0 and "testmod.whoami" in r.stdout, r.stderr
    # named explicitly and found in the directory: loaded once
    r = run_cworker(["--task-module", str(d / "testmod.so"), "--task-modules-dir", str(d),
                     "--list-tasks"])
    assert r.returncode == 0, r.stderr


# -- refusals ------------------------------------------------------------------

REFUSALS = {
    "badabi": r"ABI version 999\b.*this worker speaks version 2",
    "nosym": r"missing symbol cworker_module",
    "dup": r"task name 'cworker\.noop' is already registered \(by module cworker\)",
    "notaso": r"not a shared object",
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refused_module_exits_1_with_reason(kit, name):
    # the worker itself (not --list-tasks): it must stop before touching the broker
    r = run_cworker(["-b", "redis://127.0.0.1:1/0", "-l", "info"] + mod_args(kit, name))
    assert r.returncode == 1, f"exit {r.returncode}\n{r.stderr}"
    assert re.search(REFUSALS[name], r.stderr), r.stderr
    assert kit.mods[name] in r.stderr, "the reason names the file"
    assert "ready." not in r.stderr


def test_refused_module_in_directory(kit, tmp_path):
    d = tmp_path / "mods"
    d.mkdir()
    shutil.copy(kit.mods["testmod"], d / "a_testmod.so")
    shutil.copy(kit.mods["badabi"], d / "b_badabi.so")
    r = run_cworker(["--task-modules-dir", str(d), "--list-tasks"])
    assert r.returncode == 1 and "b_badabi.so" in r.stderr and "ABI version 999" in r.stderr, \
        r.stderr


def test_configure_hook_refusal(kit, tmp_path):
    conf = tmp_path / "cw.conf"
    conf.write_text("[module:testmod]\nfail_configure = no database\n")
    r = run_cworker(["--config", str(conf), "-b", "redis://127.0.0.1:1/0"]
                    + mod_args(kit, "testmod"))
    assert r.returncode == 1, r.stderr
    assert "configure failed: asked to fail: no database" in r.stderr, r.stderr


# -- calling module tasks from Python Celery -----------------------------------

@pytest.fixture
def mod_worker(kit, redis_server, cworker_factory, tmp_path):
    """cworker -c 2 -E with testmod and its [module:testmod] settings."""
    marker = tmp_path / "exit-marker"
    conf = tmp_path / "cw.conf"
    conf.write_text(f"[module:testmod]\ngreeting = hello from the config\n"
                    f"exit_marker = {marker}\n")
    w = cworker_factory(["-c", "2", "-E", "-n", "mods@testhost", "--config", str(conf)]
                        + mod_args(kit, "testmod"), redis=redis_server)
    w.exit_marker = marker
    return w


def test_value_result_settings_and_init(mod_worker, app):
    assert app.send_task("testmod.add", args=[2, 40]).get(timeout=10) == 42
    r = app.send_task("testmod.whoami")
    who = r.get(timeout=10)
    assert who["id"] == r.id and who["name"] == "testmod.whoami" and who["retries"] == 0
    assert who["hostname"] == "mods@testhost"
    assert who["greeting"] == "hello from the config"
    assert who["init_pid"] == who["pid"], "init did not run in the child that ran the task"
    assert who["pid"] in mod_worker.children()
    assert "whoami ran in" in mod_worker.log()


def test_exit_hook_runs_in_each_child(mod_worker, app):
    for _ in range(4):
        app.send_task("testmod.whoami").get(timeout=10)
    kids = set(mod_worker.children())
    assert mod_worker.stop(signal.SIGTERM, timeout=20) == 0
    lines = mod_worker.exit_marker.read_text().split()
    pids = {int(p) for p in lines[1::2]}
    assert kids <= pids, f"exit hook ran in {pids}, children were {kids}"


def test_builtin_exception(mod_worker, app):
    with pytest.raises(ValueError) as ei:
        app.send_task("testmod.fail_value", args=["bad input"]).get(timeout=10)
    assert str(ei.value) == "bad input"


def test_custom_exception(mod_worker, app, monkeypatch):
    # a module the producer has imported: AsyncResult.get() raises its class
    mod = types.ModuleType("cwtest_errors")

    class QuotaExceeded(Exception):
        pass
    QuotaExceeded.__module__ = "cwtest_errors"
    mod.QuotaExceeded = QuotaExceeded
    monkeypatch.setitem(sys.modules, "cwtest_errors", mod)
    with pytest.raises(QuotaExceeded) as ei:
        app.send_task("testmod.fail_custom", args=["cwtest_errors", "over quota"]).get(timeout=10)
    assert str(ei.value) == "over quota"
    # a module it has not: Celery makes up a class of that name
    with pytest.raises(Exception) as ei:
        app.send_task("testmod.fail_custom", args=["nowhere.errors", "x"]).get(timeout=10)
    assert type(ei.value).__name__ == "QuotaExceeded" and str(ei.value) == "x"


def bind(a, b=None, *, c, d=None):
    """What testmod.bind declares, for Python's own TypeError texts."""
    return {"a": a, "b": b, "c": c, "d": d}


CALLS = [
    ((1,), {"c": 3}),
    ((1, 2), {"c": 3, "d": 4}),
    ((), {"a": 1, "c": None}),
    ((), {}),
    ((1,), {}),
    ((1, 2, 3), {}),
    ((1,), {"c": 3, "e": 5}),
    ((1,), {"a": 2, "c": 3}),
]


def test_declared_parameters_bind_like_python(mod_worker, app):
    for args, kwargs in CALLS:
        r = app.send_task("testmod.bind", args=list(args), kwargs=kwargs)
        try:
            want = bind(*args, **kwargs)
        except TypeError as e:
            with pytest.raises(TypeError) as ei:
                r.get(timeout=10)
            assert str(ei.value) == str(e), (args, kwargs)
            continue
        got = r.get(timeout=10)
        # left-out optionals are NULL for the task; explicit None is JSON null
        expect = {k: v for k, v in want.items()}
        for k in ("b", "d"):
            if k not in kwargs and not (k == "b" and len(args) > 1):
                expect[k] = "missing"
        assert got == expect, (args, kwargs)
    # a task without params gets args/kwargs as they came
    raw = app.send_task("testmod.raw", args=[1, [2]], kwargs={"x": None}).get(timeout=10)
    assert raw == {"args": [1, [2]], "kwargs": {"x": None}, "arg0_null": True}


def test_too_many_positional_with_keyword_only_text(mod_worker, app):
    with pytest.raises(TypeError) as want:
        bind(1, 2, 3, c=3)
    with pytest.raises(TypeError) as ei:
        app.send_task("testmod.bind", args=[1, 2, 3], kwargs={"c": 3}).get(timeout=10)
    assert str(ei.value) == str(want.value)


def test_retry(mod_worker, app):
    r = app.send_task("testmod.retry_until", args=[3])
    assert r.get(timeout=20) == 3
    with pytest.raises(KeyError) as ei:
        app.send_task("testmod.retry_max", args=[2]).get(timeout=20)
    assert "gave up after 2 retries" in str(ei.value)


def test_soft_time_limit_cancels_the_loop(mod_worker, app):
    t0 = time.monotonic()
    with pytest.raises(SoftTimeLimitExceeded) as ei:
        app.send_task("testmod.loop", args=[30], soft_time_limit=0.5).get(timeout=15)
    assert time.monotonic() - t0 < 5 * SLOW
    assert "loop cancelled after" in str(ei.value)
    assert app.send_task("testmod.loop", args=[0.1]).get(timeout=10) == "finished"


@pytest.fixture
def events(app):
    ev = Events(app)
    yield ev
    ev.close()


def test_progress_seen_by_asyncresult_and_events(mod_worker, app, events):
    steps = 5
    r = app.send_task("testmod.progress", args=[steps, 300])
    seen = []
    deadline = time.monotonic() + 20 * SLOW
    while not r.ready() and time.monotonic() < deadline:
        state, info = r.state, r.info   # two reads: the task may end in between
        if state == "PROGRESS" and isinstance(info, dict):
            seen.append(info)
        time.sleep(0.05)
    assert r.get(timeout=10) == steps
    assert seen, "AsyncResult never showed PROGRESS"
    assert all(i["total"] == steps and 1 <= i["current"] <= steps for i in seen), seen
    assert [i["current"] for i in seen] == sorted(i["current"] for i in seen)

    def progress_events():
        return [e for e in events.of_type("task-progress") if e.get("uuid") == r.id]
    wait_for(lambda: len(progress_events()) >= 2 and
             progress_events()[-1].get("current") == steps, 10, what="task-progress events")
    evs = progress_events()
    assert all(e["total"] == steps and e["hostname"] == "mods@testhost" for e in evs), evs
    assert [e["current"] for e in evs] == sorted(e["current"] for e in evs)
    wait_for(lambda: events.task(r.id) and events.task(r.id).state == "SUCCESS", 10,
             what="task-succeeded after the progress")


def test_custom_state(mod_worker, app, events):
    r = app.send_task("testmod.stage", args=["thumbnails"])

    def staged():
        state, info = r.state, r.info
        return state == "STAGED" and isinstance(info, dict) and info
    info = wait_for(staged, 10, what="STAGED in the result backend")
    assert info["stage"] == "thumbnails" and info["pid"] in mod_worker.children()
    assert r.get(timeout=10) is True
    wait_for(lambda: [e for e in events.of_type("task-staged") if e.get("uuid") == r.id], 10,
             what="task-staged event")


def test_crash_costs_the_task_only(mod_worker, app):
    before = set(wait_for(lambda: len(mod_worker.children()) == 2 and mod_worker.children(),
                          10, what="2 children"))
    with pytest.raises(Exception) as ei:
        app.send_task("testmod.crash").get(timeout=30)
    assert type(ei.value).__name__ == "WorkerLostError", f"{type(ei.value).__name__}: {ei.value}"
    assert mod_worker.alive()
    assert "exited with 'signal 11 (SEGV)'" in mod_worker.log()
    after = set(wait_for(lambda: len(mod_worker.children()) == 2 and mod_worker.children(), 10,
                         what="the pool back to 2 children"))
    assert len(before & after) == 1, (before, after)
    rs = [app.send_task("testmod.add", args=[i, 1]) for i in range(10)]
    assert [x.get(timeout=20) for x in rs] == [i + 1 for i in range(10)]
    # the replacement child ran init too
    who = [app.send_task("testmod.whoami").get(timeout=10) for _ in range(4)]
    assert all(w["init_pid"] == w["pid"] for w in who)


# -- the example module --------------------------------------------------------

@pytest.fixture
def probe_worker(kit, probe, redis_server, cworker_factory, tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    w = cworker_factory(["-c", "2", "--docconv-roots", str(root)] + mod_args(kit, "probe"),
                        redis=redis_server)
    w.root = root
    return w


def sample_files(root):
    png = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
           b"\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00"
           b"\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")
    files = {"notes.txt": (b"plain words for the probe\n" * 100, "text/plain"),
             "pixel.png": (png, "image/png"),
             "data.json": (b'{"a": [1, 2, 3]}\n', "application/json"),
             "empty.bin": (b"", "application/x-empty")}
    for name, (data, _) in files.items():
        (root / name).write_bytes(data)
    return files


def test_probe_example_with_its_producer(probe_worker, redis_server):
    files = sample_files(probe_worker.root)
    env = dict(os.environ, CELERY_BROKER_URL=redis_server.url(),
               CELERY_RESULT_BACKEND=redis_server.url())
    srcs = [str(probe_worker.root / n) for n in sorted(files)]
    p = subprocess.run([PYTHON, os.path.join(PROBE_SRC, "producer.py"), "--json", *srcs,
                        str(probe_worker.root / "missing.pdf")],
                       capture_output=True, text=True, env=env, timeout=60 * SLOW)
    assert p.returncode == 1, "the missing file must make the producer exit 1"
    assert "missing.pdf: FileNotFoundError" in p.stderr, p.stderr
    got = {os.path.basename(d["source"]): d for d in map(json.loads, p.stdout.splitlines())}
    assert sorted(got) == sorted(files)
    for name, (data, mime) in files.items():
        assert got[name]["size"] == len(data), name
        assert got[name]["sha256"] == hashlib.sha256(data).hexdigest(), name
        assert got[name]["mime"] == mime, name
    # the human-readable form and the stat_many path with PROGRESS
    p = subprocess.run([PYTHON, os.path.join(PROBE_SRC, "producer.py"), "--many", *srcs],
                       capture_output=True, text=True, env=env, timeout=60 * SLOW)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == len(files)
    assert lines[0].split()[0] == hashlib.sha256(files[sorted(files)[0]][0]).hexdigest()


def test_probe_errors_are_python_exceptions(probe_worker, app):
    with pytest.raises(FileNotFoundError):
        app.send_task("probe.stat", args=[str(probe_worker.root / "nope")]).get(timeout=10)
    with pytest.raises(PermissionError):
        app.send_task("probe.stat", args=["/etc/hostname"]).get(timeout=10)
    with pytest.raises(TypeError) as ei:
        app.send_task("probe.stat", args=[]).get(timeout=10)
    assert "missing 1 required positional argument: 'source'" in str(ei.value)
