"""`make help` is the map a newcomer reads first: it must list every make target the README
names, and name only targets the Makefile has."""

import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def help_targets():
    out = subprocess.run(["make", "--no-print-directory", "-C", ROOT, "help"], check=True,
                         capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        # "make cli         build ...; make completions: ..." names two.
        names.update(re.findall(r"(?:^|; )make ([a-z0-9][a-z0-9.-]*)", line))
    return names


def readme_targets():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return set(re.findall(r"`make ([a-z0-9][a-z0-9.-]*)`", text)) | \
        set(re.findall(r"^make ([a-z0-9][a-z0-9.-]*)", text, re.M))


def makefile_targets():
    text = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
    return set(re.findall(r"^([a-z0-9][a-z0-9.-]*):", text, re.M))


def test_make_help_lists_every_target_the_readme_names():
    missing = sorted(readme_targets() - help_targets())
    assert not missing, f"README names make targets that `make help` does not list: {missing}"


def test_make_help_names_only_real_targets():
    unknown = sorted(help_targets() - makefile_targets())
    assert not unknown, f"`make help` lists targets the Makefile does not have: {unknown}"
