#!/usr/bin/env python3
"""Fail when `cworker --help` lists a flag or config key that the man page
cworker(1) misses, or when groff reports warnings rendering it.

Usage: check_manpage.py CWORKER_EXE docs/cworker.1"""
import re
import shutil
import subprocess
import sys

exe, page_path = sys.argv[1], sys.argv[2]
help_text = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
with open(page_path, encoding="utf-8") as f:
    roff = f.read()

# roff to words: \- is a hyphen, \fB..\fR are font changes, macros start lines
text = re.sub(r"\\f[BIRP]", "", roff).replace("\\-", "-").replace("\\e", "\\")
text = re.sub(r"^\.[A-Z]{1,2} ?", "", text, flags=re.M)

flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", help_text))
shorts = set(re.findall(r"^\s+(-[A-Za-z]),", help_text, re.M))
keys = set(re.findall(r"\[([a-z_.]+)(?:,|\])", help_text))
envs = set(re.findall(r"env ([A-Z_]+)", help_text))
if not flags or not keys:
    print("could not parse --help output", file=sys.stderr)
    sys.exit(1)


def present(word):
    return re.search(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", text) is not None


missing = sorted(x for x in flags | shorts | keys | envs if not present(x))
if missing:
    print(f"{page_path} misses: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)

version = re.search(r"cworker (\S+)", subprocess.run([exe, "--version"], capture_output=True,
                                                     text=True, check=True).stdout).group(1)
th = re.search(r'^\.TH CWORKER 1 "[^"]*" "cworker ([^"]+)"', roff, re.M)
if not th or th.group(1) != version:
    print(f"{page_path}: .TH names version {th.group(1) if th else '?'}, "
          f"cworker --version says {version}", file=sys.stderr)
    sys.exit(1)

summary = (f"{len(flags) + len(shorts)} flags, {len(keys)} config keys and "
           f"{len(envs)} variables in {page_path}")
# without man the groff warnings go unchecked: a skip (77), never a silent pass
if not shutil.which("man"):
    print(f"{summary}; SKIP: man not installed, groff warnings not checked")
    sys.exit(77)
r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", page_path],
                   capture_output=True, text=True, env={"MANWIDTH": "80", "LC_ALL": "C.UTF-8",
                                                        "PATH": "/usr/bin:/bin"})
if r.returncode != 0 or r.stderr.strip():
    print(f"man -l {page_path}: exit {r.returncode}\n{r.stderr}", file=sys.stderr)
    sys.exit(1)
print(summary)
