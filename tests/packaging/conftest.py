"""The packaging suite's one hook: a run that skipped everything reports a skip, not a pass."""


def pytest_sessionfinish(session, exitstatus):
    """Nothing passed, something skipped: exit 77 (meson's "skipped")."""
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if exitstatus == 0 and tr is not None and not tr.stats.get("passed") and tr.stats.get("skipped"):
        session.exitstatus = 77
