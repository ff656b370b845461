"""The documentation stays navigable: README.md short, every relative link resolving, and
a troubleshooting entry for every exit status quiesce can return."""
import glob
import os
import re

from quiesce.base.errors import Exit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README_MAX_LINES = 250
# [text](target): the target up to a space or ')'; images the same.
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _pages():
    return [os.path.join(REPO, "README.md"), os.path.join(REPO, "HACKING.md")] + \
        sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))


def _read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _without_code(text):
    """Links inside fenced code blocks are not links."""
    return re.sub(r"```.*?```", "", text, flags=re.S)


def test_readme_is_short():
    lines = _read(os.path.join(REPO, "README.md")).count("\n")
    assert lines <= README_MAX_LINES, "README.md has %d lines; move detail into docs/" % lines


def test_docs_pages_exist():
    names = {os.path.basename(p) for p in _pages()}
    assert {"troubleshooting.md", "vmware-veeam.md", "proxmox.md", "accounts.md"} <= names


def test_relative_links_resolve():
    broken = []
    for page in _pages():
        for target in LINK.findall(_without_code(_read(page))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(page), path))):
                broken.append("%s: %s" % (os.path.relpath(page, REPO), target))
    assert not broken, broken


def test_link_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "x.md"
    page.write_text("see [a](missing.md) and [b](x.md#top)\n")
    targets = LINK.findall(_without_code(page.read_text()))
    assert targets == ["missing.md", "x.md#top"]


def test_troubleshooting_has_an_entry_per_exit_status():
    text = _read(os.path.join(REPO, "docs", "troubleshooting.md"))
    documented = {int(n) for n in re.findall(r"^### Exit (\d+):", text, flags=re.M)}
    assert documented == {int(code) for code in Exit}, sorted(documented ^ {int(code) for code in Exit})
