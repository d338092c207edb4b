"""Packaging and deployment files (packaging/, examples/compose/):

- the systemd units pass `systemd-analyze verify` and have the settings the
  operations guide promises (notify, watchdog, warm-shutdown timeout, hardening);
- every Kubernetes manifest and the Compose file parse (Debian's python3-yaml)
  and agree with each other and with the worker's config (probe paths, ports,
  grace period above task_time_limit, KEDA on the `celery` list);
- the Containerfile has a non-root user, STOPSIGNAL and a health check;
- the Debian package builds with dpkg-buildpackage, installs with dpkg -i, the
  installed /usr/bin/cworker runs a task a Python producer sends to a
  throwaway redis-server, and dpkg -r / --purge remove it cleanly;
- cworker-dev carries the task module headers and cworker.pc: installed next
  to cworker, `pkg-config --cflags cworker` works and a module built with it
  loads into the installed worker.

The .deb test installs into the real system (root only). It always purges
what it installed; run it again after an interrupted run and it starts over.
Set CW_SKIP_DEB=1 to leave it out.
"""

import configparser
import glob
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PKG = os.path.join(REPO, "packaging")

# the integration suite's process helpers (redis-server, ManagedProcess, Celery app)
_spec = importlib.util.spec_from_file_location(
    "cw_integration_helpers", os.path.join(REPO, "tests", "integration", "conftest.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)

yaml = pytest.importorskip("yaml", reason="python3-yaml is not installed")


def read(*parts):
    with open(os.path.join(REPO, *parts), encoding="utf-8") as f:
        return f.read()


def meson_version():
    return re.search(r"version\s*:\s*'([^']+)'", read("meson.build")).group(1)


def conf_values(text):
    """key = value lines of a cworker config file (before any [section])."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            break
        if not line or line[0] in "#;" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def seconds(value):
    """systemd time span ('10min', '30s', '5min 30s', '90') in seconds."""
    total = 0.0
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 0.001}
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(num) * units[unit]
    return total


# ---------------------------------------------------------------------------
# version and man page
# ---------------------------------------------------------------------------

def test_changelog_version_matches_meson():
    first = read("packaging", "debian", "changelog").splitlines()[0]
    m = re.match(r"cworker \(([^)]+)\) \S+; urgency=", first)
    assert m, first
    assert m.group(1).split("-")[0] == meson_version()
    assert read("packaging", "debian", "source", "format").strip() == "3.0 (native)"


def test_manpage_version_matches_meson():
    assert f'"cworker {meson_version()}"' in read("docs", "cworker.1")


# ---------------------------------------------------------------------------
# systemd units
# ---------------------------------------------------------------------------

UNITS = ["cworker.service", "cworker@.service"]


def parse_unit(name):
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str
    cp.read_string(read("packaging", "systemd", name))
    return cp


def test_systemd_analyze_verify(tmp_path):
    sa = shutil.which("systemd-analyze")
    if not sa:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    # an offline root: the system's unit tree, the units under test and an
    # executable at /usr/bin/cworker (only its presence is checked)
    root = tmp_path / "root"
    (root / "lib" / "systemd").mkdir(parents=True)
    shutil.copytree("/lib/systemd/system", root / "lib" / "systemd" / "system", symlinks=True)
    etc = root / "etc" / "systemd" / "system"
    etc.mkdir(parents=True)
    for u in UNITS:
        shutil.copy(os.path.join(PKG, "systemd", u), etc / u)
    (root / "usr" / "bin").mkdir(parents=True)
    stub = root / "usr" / "bin" / "cworker"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    r = subprocess.run([sa, "verify", "--man=no", f"--root={root}",
                        "cworker.service", "cworker@documents.service"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        f"systemd-analyze verify: exit {r.returncode}\n{r.stdout}{r.stderr}"


@pytest.mark.parametrize("name", UNITS)
def test_unit_settings(name):
    u = parse_unit(name)
    s = u["Service"]
    assert s["Type"] == "notify"
    assert s["KillSignal"] == "SIGTERM"
    assert s["KillMode"] == "mixed"          # SIGTERM to the master only
    assert s["Restart"] == "on-failure"
    assert s["User"] == "cworker"
    # above the master's 60 s of blocking result-backend retries
    assert seconds(s["WatchdogSec"]) >= 90
    # the warm shutdown waits for running tasks: well above a typical limit
    assert seconds(s["TimeoutStopSec"]) >= 300
    # SIGTERM is Celery 5.5's soft shutdown; systemd waits the soft timeout + a margin
    env = dict(kv.split("=", 1) for kv in s["Environment"].split())
    assert env["REMAP_SIGTERM"] == "SIGQUIT"
    soft = float(env["CWORKER_SOFT_SHUTDOWN_TIMEOUT"])
    assert soft >= 300 and seconds(s["TimeoutStopSec"]) >= soft + 30, (soft, s["TimeoutStopSec"])
    for key, want in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                      ("PrivateTmp", "yes"), ("ProtectHome", "yes")]:
        assert s[key] == want, key
    assert "/srv/cworker" in s["ReadWritePaths"]
    assert s["StateDirectory"] == "cworker"
    assert u["Install"]["WantedBy"] == "multi-user.target"
    exec_start = s["ExecStart"]
    assert exec_start.startswith("/usr/bin/cworker ")
    if "@" in name:
        assert "/etc/cworker/%i.conf" in exec_start
        assert "%i@%H" in exec_start and "/var/lib/cworker/%i.state" in exec_start
        assert s["EnvironmentFile"] == "-/etc/cworker/%i.env"
    else:
        assert "/etc/cworker/cworker.conf" in exec_start
        assert s["EnvironmentFile"] == "-/etc/cworker/cworker.env"


def test_default_config_loads():
    """The packaged /etc/cworker/cworker.conf is accepted by the worker."""
    helpers.need_cworker()
    r = helpers.run_cworker(["--config", os.path.join(PKG, "cworker.conf"), "--list-tasks"])
    assert r.returncode == 0, r.stderr
    assert "cworker.add" in r.stdout


# ---------------------------------------------------------------------------
# Kubernetes, Compose, Containerfile
# ---------------------------------------------------------------------------

def k8s_docs():
    docs = []
    for path in sorted(glob.glob(os.path.join(PKG, "kubernetes", "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            for d in yaml.safe_load_all(f):
                if d is not None:
                    docs.append((os.path.basename(path), d))
    return docs


def by_kind(kind):
    found = [d for _, d in k8s_docs() if d.get("kind") == kind]
    assert found, f"no {kind} in packaging/kubernetes"
    return found


def test_k8s_yaml_parses_with_kind_and_name():
    docs = k8s_docs()
    assert len(docs) >= 6
    for fname, d in docs:
        assert d.get("apiVersion") and d.get("kind"), fname
        if d["kind"] != "Kustomization":
            assert d["metadata"]["name"], fname
    kust = by_kind("Kustomization")[0]
    files = {os.path.basename(p) for p in glob.glob(os.path.join(PKG, "kubernetes", "*.yaml"))}
    assert set(kust["resources"]) == files - {"kustomization.yaml"}


def test_k8s_deployment_probes_grace_resources():
    dep = by_kind("Deployment")[0]
    cm = by_kind("ConfigMap")[0]
    conf = conf_values(cm["data"]["cworker.conf"])
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]

    # probes on the health endpoint, on the port the config listens on
    port = int(conf["http_listen"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == port
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] in ("http", port), probe
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/path"] == "/metrics" and int(ann["prometheus.io/port"]) == port

    # warm shutdown: the grace period outlasts the longest task
    grace = spec["terminationGracePeriodSeconds"]
    assert grace > float(conf["task_time_limit"]) + 10, (grace, conf["task_time_limit"])
    # soft shutdown: SIGTERM waits the soft timeout (no shorter than the task limit), then
    # gives acks_late messages back; the grace period is that plus a margin
    env = {e["name"]: e["value"] for e in c.get("env", [])}
    assert env["REMAP_SIGTERM"] == "SIGQUIT"
    soft = float(env["CWORKER_SOFT_SHUTDOWN_TIMEOUT"])
    assert soft >= float(conf["task_time_limit"]) and grace >= soft + 30, (soft, grace)
    assert float(conf["task_soft_time_limit"]) < float(conf["task_time_limit"])

    # resources: set, and the limit holds every child at its docconv ceiling
    res = c["resources"]
    for k in ("requests", "limits"):
        assert res[k]["cpu"] and res[k]["memory"], k

    def mib(q):
        m = re.fullmatch(r"(\d+)(Mi|Gi)", q)
        return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)

    children = int(conf["worker_concurrency"])
    assert mib(res["limits"]["memory"]) >= children * int(conf["docconv_memory_limit"]) + 64
    assert mib(res["requests"]["memory"]) <= mib(res["limits"]["memory"])
    assert int(conf["worker_child_memory_limit"]) // 1024 * children < mib(res["limits"]["memory"])

    # config from the ConfigMap, URLs from the Secret
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert mounts["config"] == "/etc/cworker"
    assert c["args"][:2] == ["--config", "/etc/cworker/cworker.conf"]
    secret = by_kind("Secret")[0]
    assert c["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]
    assert {"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"} <= set(secret["stringData"])
    assert conf["docconv_roots"] in mounts.values()

    # non-root, matching the image's uid
    assert spec["securityContext"]["runAsNonRoot"] is True
    uid = re.search(r"--uid (\d+)", read("packaging", "container", "Containerfile")).group(1)
    assert spec["securityContext"]["runAsUser"] == int(uid)
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_k8s_keda_scales_on_celery_list():
    so = by_kind("ScaledObject")[0]
    dep = by_kind("Deployment")[0]
    assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    (t,) = so["spec"]["triggers"]
    assert t["type"] == "redis"
    assert t["metadata"]["listName"] == "celery"
    assert int(t["metadata"]["listLength"]) > 0
    ta = by_kind("TriggerAuthentication")[0]
    assert t["authenticationRef"]["name"] == ta["metadata"]["name"]
    assert so["spec"]["minReplicaCount"] >= 1
    assert so["spec"]["maxReplicaCount"] > so["spec"]["minReplicaCount"]


def test_compose_file():
    with open(os.path.join(REPO, "examples", "compose", "compose.yaml"), encoding="utf-8") as f:
        comp = yaml.safe_load(f)
    svc = comp["services"]
    assert set(svc) >= {"redis", "cworker", "producer", "flower"}
    cw = svc["cworker"]
    assert cw["stop_signal"] == "SIGTERM"
    assert any("/health/live" in part for part in cw["healthcheck"]["test"])
    cmd = cw["command"]
    assert "--http" in cmd and cmd[cmd.index("--http") + 1].endswith(":9808")
    assert cw["environment"]["CELERY_BROKER_URL"].startswith("redis://redis:")
    assert "flower" in svc["flower"]["image"]
    assert os.path.exists(os.path.join(REPO, "examples", "compose", svc["producer"]["build"]
                                       ["context"], "Containerfile"))
    for name, s in svc.items():
        for p in s.get("ports", []):
            assert str(p).startswith("127.0.0.1:"), f"{name} publishes {p} beyond loopback"


def test_containerfile():
    text = read("packaging", "container", "Containerfile")
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) >= 2, "expected a build stage and a runtime stage"
    runtime = text[text.rindex("\nFROM "):]
    assert re.search(r"^STOPSIGNAL SIGTERM$", runtime, re.M)
    user = re.search(r"^USER\s+(\S+)", runtime, re.M)
    assert user and user.group(1).split(":")[0] not in ("root", "0")
    hc = re.search(r"^HEALTHCHECK .*\n?.*", runtime, re.M)
    assert hc and "/health/live" in runtime[hc.start():runtime.index("\n", hc.end())]
    # the tool the health check runs is installed in the runtime stage
    assert re.search(r"apt-get install[^\n]*\n[^\n]*\bcurl\b", runtime)
    # runtime image: no compilers or -dev packages
    assert "build-essential" not in runtime and "-dev" not in runtime
    assert "cworker_*.deb" in runtime
    assert os.access(os.path.join(PKG, "container", "build.sh"), os.X_OK)


# ---------------------------------------------------------------------------
# the Debian package: build, install, run, remove, purge
# ---------------------------------------------------------------------------

def dpkg(*args, check=True):
    """dpkg with a retry while another apt/dpkg holds the lock."""
    deadline = time.monotonic() + 180
    while True:
        r = subprocess.run(["dpkg", *args], capture_output=True, text=True,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if r.returncode != 0 and "lock" in r.stderr and time.monotonic() < deadline:
            time.sleep(2)
            continue
        if check:
            assert r.returncode == 0, f"dpkg {' '.join(args)}: exit {r.returncode}\n{r.stdout}{r.stderr}"
        return r


def installed(package="cworker"):
    r = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    if os.environ.get("CW_SKIP_DEB") == "1":
        pytest.skip("CW_SKIP_DEB=1")
    if os.geteuid() != 0:
        pytest.skip("the .deb test installs into the system: run as root")
    for tool in ("dpkg-buildpackage", "dh", "dpkg-deb"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (scripts/install-deps.sh)")
    out = tmp_path_factory.mktemp("deb")
    env = {**os.environ, "DEB_BUILD_OPTIONS": "nocheck parallel=2"}
    r = subprocess.run(["bash", os.path.join(PKG, "build-deb.sh"), str(out)],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, f"build-deb.sh failed:\n{r.stdout}\n{r.stderr}"
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                          text=True, check=True).stdout.strip()
    path = out / f"cworker_{meson_version()}_{arch}.deb"
    assert path.exists(), f"{path.name} not produced: {sorted(os.listdir(out))}"
    return str(path)


def test_deb_contents(deb):
    files = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True,
                           check=True).stdout
    for p in ["./usr/bin/cworker", "./usr/lib/cworker/cworker-docconv.so",
              "./usr/share/man/man1/cworker.1.gz",
              "./etc/cworker/cworker.conf", "./etc/cworker/cworker.env",
              "./lib/systemd/system/cworker.service", "./lib/systemd/system/cworker@.service"]:
        assert re.search(r"\s" + re.escape(p) + r"$", files, re.M), f"{p} missing:\n{files}"
    conffiles = subprocess.run(["dpkg-deb", "-I", deb, "conffiles"], capture_output=True,
                               text=True, check=True).stdout.split()
    assert set(conffiles) == {"/etc/cworker/cworker.conf", "/etc/cworker/cworker.env"}
    fields = subprocess.run(["dpkg-deb", "-f", deb, "Package", "Version", "Depends"],
                            capture_output=True, text=True, check=True).stdout
    assert f"Version: {meson_version()}" in fields
    # libtesseract and libpq5 come from cworker-docconv.so's own needs; libcurl4 and libpq5
    # are opened with dlopen() by the worker, so the package names them itself
    for lib in ("libhiredis", "libjansson4", "adduser", "libtesseract5", "libcurl4", "libpq5"):
        assert lib in fields, fields


@pytest.fixture
def installed_deb(deb):
    """dpkg -i the package; purge it afterwards whatever happened."""
    if installed("cworker-dev"):
        dpkg("--purge", "cworker-dev")  # depends on cworker: it goes first
    if installed():
        dpkg("--purge", "cworker")     # left over from an interrupted run
    try:
        dpkg("-i", deb)
        yield deb
    finally:
        if installed():
            dpkg("--purge", "cworker", check=False)


def test_deb_install_run_remove_purge(installed_deb, tmp_path):
    assert installed().startswith("ii"), installed()
    exe = "/usr/bin/cworker"
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and meson_version() in r.stdout, r
    # postinst: the system user, its state directory, the credentials file's mode
    pw = subprocess.run(["getent", "passwd", "cworker"], capture_output=True, text=True)
    assert pw.returncode == 0, "postinst did not create the cworker user"
    assert pw.stdout.split(":")[5] == "/var/lib/cworker"
    st = os.stat("/var/lib/cworker")
    assert st.st_uid == int(pw.stdout.split(":")[2])
    env_st = os.stat("/etc/cworker/cworker.env")
    assert env_st.st_mode & 0o777 == 0o640
    # the installed units, now against the real binary and man page
    if shutil.which("systemd-analyze"):
        v = subprocess.run(["systemd-analyze", "verify", "/lib/systemd/system/cworker.service"],
                           capture_output=True, text=True, timeout=60)
        assert v.returncode == 0, v.stdout + v.stderr
    if shutil.which("man"):
        m = subprocess.run(["man", "-w", "cworker"], capture_output=True, text=True)
        assert m.stdout.strip() == "/usr/share/man/man1/cworker.1.gz", m

    # a round trip through the installed binary: Python producer -> redis -> cworker
    if helpers._IMPORT_ERROR:
        pytest.skip(f"/usr/bin/python3 lacks a dependency: {helpers._IMPORT_ERROR}")
    redis = helpers.RedisServer(str(tmp_path / "redis"))
    worker = None
    app = None
    try:
        conf = tmp_path / "worker.conf"
        # the packaged config with this test's redis and a writable state file
        text = open("/etc/cworker/cworker.conf", encoding="utf-8").read()
        text = re.sub(r"^broker_url = .*$", f"broker_url = {redis.url()}", text, flags=re.M)
        text = re.sub(r"^worker_state_db = .*$", f"worker_state_db = {tmp_path}/state", text,
                      flags=re.M)
        conf.write_text(text)
        worker = helpers.ManagedProcess(
            "installed-cworker",
            [exe, "--config", str(conf), "--result-backend", redis.url(1), "-c", "2",
             "-n", "deb-test@%h", "--docconv-roots", str(tmp_path)],
            str(tmp_path / "cworker.log"), env=helpers.clean_env())
        worker.wait_log(r"ready\.", timeout=20)
        app = helpers.make_app(redis.url(), redis.url(1))
        assert app.send_task("cworker.add", args=(2, 3)).get(timeout=20) == 5
        assert app.send_task("cworker.echo", args=({"ü": [1, 2]},)).get(timeout=20) == {"ü": [1, 2]}
        # the conversion code, loaded by a child from /usr/lib/cworker/cworker-docconv.so
        pdf = tmp_path / "tiny.pdf"
        pdf.write_bytes(b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
                        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
                        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
                        b"trailer<</Root 1 0 R>>\n%%EOF\n")
        info = app.send_task("docconv.info", args=[str(pdf)]).get(timeout=30)
        assert info["page_count"] == 1, info
        assert worker.stop(signal.SIGTERM, timeout=20) == 0
    finally:
        if app is not None:
            helpers.close_app(app)
        if worker is not None:
            worker.kill()
        redis.stop()

    # remove: the program goes, the conffiles stay
    dpkg("-r", "cworker")
    assert not os.path.exists(exe)
    assert not os.path.exists("/lib/systemd/system/cworker.service")
    assert os.path.exists("/etc/cworker/cworker.conf")
    assert installed().startswith("rc"), installed()
    # purge: conffiles, state directory and the package's record go
    dpkg("--purge", "cworker")
    assert not os.path.exists("/etc/cworker")
    assert not os.path.exists("/var/lib/cworker")
    assert installed() == "" or installed().startswith("un"), installed()


# ---------------------------------------------------------------------------
# cworker-dev: headers and cworker.pc for task modules
# ---------------------------------------------------------------------------

DEV_HEADERS = ["task.h", "module.h", "log.h"]


@pytest.fixture(scope="module")
def dev_deb(deb):
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                          text=True, check=True).stdout.strip()
    path = os.path.join(os.path.dirname(deb), f"cworker-dev_{meson_version()}_{arch}.deb")
    assert os.path.exists(path), \
        f"cworker-dev not produced: {sorted(os.listdir(os.path.dirname(deb)))}"
    return path


def test_dev_deb_contents(deb, dev_deb):
    files = subprocess.run(["dpkg-deb", "-c", dev_deb], capture_output=True, text=True,
                           check=True).stdout
    for h in DEV_HEADERS:
        assert re.search(rf"\s\./usr/include/cworker/{h}$", files, re.M), f"{h} missing:\n{files}"
    assert re.search(r"\s\./usr/lib/(?:[a-z0-9_]+-linux-gnu[a-z0-9_]*/)?pkgconfig/cworker\.pc$",
                     files, re.M), files
    assert "./usr/share/doc/cworker-dev/modules.md" in files
    assert "/usr/share/doc/cworker-dev/examples/probe/probe.c" in files
    # no program, no config in the -dev package
    assert "./usr/bin/" not in files and "./etc/" not in files
    fields = subprocess.run(["dpkg-deb", "-f", dev_deb, "Version", "Depends"],
                            capture_output=True, text=True, check=True).stdout
    assert f"Version: {meson_version()}" in fields
    assert f"cworker (= {meson_version()})" in fields and "libjansson-dev" in fields, fields
    # the module directory belongs to cworker itself
    main_files = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True,
                                check=True).stdout
    assert re.search(r"\s\./usr/lib/cworker/modules/$", main_files, re.M), main_files


def test_dev_deb_pkg_config_and_a_module(installed_deb, dev_deb, tmp_path):
    for tool in ("pkg-config", "cc"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    try:
        dpkg("-i", dev_deb)
        assert installed("cworker-dev").startswith("ii"), installed("cworker-dev")

        def pc(*args):
            r = subprocess.run(["pkg-config", *args, "cworker"], capture_output=True, text=True)
            assert r.returncode == 0, f"pkg-config {' '.join(args)} cworker: {r.stderr}"
            return r.stdout.strip()
        # /usr/include is the compiler's own: pkg-config may print nothing, but it succeeds
        cflags = pc("--cflags").split()
        assert pc("--modversion") == meson_version()
        assert pc("--variable=moduledir") == "/usr/lib/cworker/modules"
        # a module built against the installed headers only, loaded by the installed worker
        so = tmp_path / "testmod.so"
        r = subprocess.run(["cc", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", *cflags,
                            "-o", str(so), os.path.join(REPO, "tests", "modules", "testmod.c")],
                           capture_output=True, text=True, cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr
        r = subprocess.run(["/usr/bin/cworker", "--task-module", str(so), "--list-tasks"],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        assert re.search(r"^testmod\.add\s+testmod\s", r.stdout, re.M), r.stdout
        # and from the package's module directory, without naming it
        shutil.copy(so, "/usr/lib/cworker/modules/testmod.so")
        try:
            r = subprocess.run(["/usr/bin/cworker", "--list-tasks"], capture_output=True,
                               text=True, timeout=20)
            assert r.returncode == 0 and "testmod.whoami" in r.stdout, r.stdout + r.stderr
        finally:
            os.unlink("/usr/lib/cworker/modules/testmod.so")
        dpkg("-r", "cworker-dev")
        assert not os.path.exists("/usr/include/cworker")
    finally:
        if installed("cworker-dev"):
            dpkg("--purge", "cworker-dev", check=False)
