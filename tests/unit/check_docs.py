#!/usr/bin/env python3
"""Fail when `cworker --help` lists a flag or config key that docs/configuration.md misses."""
import re
import subprocess
import sys

exe, doc = sys.argv[1], sys.argv[2]
help_text = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
with open(doc, encoding="utf-8") as f:
    page = f.read()

flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", help_text))
keys = set(re.findall(r"\[([a-z_.]+)(?:,|\])", help_text))
missing = sorted(x for x in flags | keys if f"`{x}`" not in page)
if not flags or not keys:
    print("could not parse --help output", file=sys.stderr)
    sys.exit(1)
if missing:
    print("docs/configuration.md misses: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)
print(f"{len(flags)} flags and {len(keys)} config keys documented")
