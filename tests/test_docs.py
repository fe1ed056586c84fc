"""The README is the front door and docs/ holds the rest: links resolve, headings exist, tables and code
fences are well formed, every page is reachable from the README, the README stays short."""
import glob
import os
import re

import pytest
from conftest import ROOT

README = os.path.join(ROOT, "README.md")
README_MAX_LINES = 250
DOC_PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))

# === Markdown reading (the subset GitHub renders that these pages use) ===

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
TABLE_SEPARATOR = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?$")


def prose_lines(text):
    """(line number, line) outside fenced code blocks; raises AssertionError on a fence left open."""
    lines, fence_start, fence = [], None, None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence, fence_start = match.group(1), number
        elif fence is not None and match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                and line.strip() == match.group(1):
            fence = None
        elif fence is None:
            lines.append((number, line))
    assert fence is None, f"code fence opened on line {fence_start} is never closed"
    return lines


def github_anchor(heading_text):
    """GitHub's heading id: rendered text, lowercased, punctuation dropped (letters, digits, '_', '-' and
    spaces stay), each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading_text)  # a link renders as its text
    text = INLINE_CODE.sub(lambda m: m.group(2), text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text):
    """Every heading id of a page; repeated headings get GitHub's -1, -2... suffixes."""
    seen, result = {}, set()
    for _, line in prose_lines(text):
        match = HEADING.match(line)
        if not match:
            continue
        base = github_anchor(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(text):
    """(line number, target) of every inline link and image outside code."""
    found = []
    for number, line in prose_lines(text):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            found.append((number, match.group(2)))
    return found


def broken_links(path):
    """'file:line: target (why)' for every relative link of a Markdown file that does not resolve."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    problems = []
    for number, target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:: not checked offline
            continue
        file_part, _, anchor = target.partition("#")
        where = f"{os.path.relpath(path, ROOT)}:{number}: {target}"
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(resolved):
            problems.append(f"{where} (no file {os.path.relpath(resolved, ROOT)})")
            continue
        if anchor:
            if not resolved.endswith(".md"):
                problems.append(f"{where} (an anchor into a file that is not Markdown)")
                continue
            with open(resolved, encoding="utf-8") as handle:
                if anchor not in anchors(handle.read()):
                    problems.append(f"{where} (no heading with id #{anchor})")
    return problems


def table_problems(text):
    """'line N: why' for every table whose separator is missing or whose rows have another cell count."""
    problems, block = [], []

    def cells(row):
        row = row.strip()
        row = row.removeprefix("|")
        row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
        return len(re.split(r"(?<!\\)\|", row))

    def check(rows):
        if not rows:
            return
        (first, header), rest = rows[0], rows[1:]
        if not rest or not TABLE_SEPARATOR.match(rest[0][1].strip()):
            problems.append(f"line {first}: table without a |---| separator row under its header")
            return
        want = cells(header)
        for number, row in rest:
            if cells(row) != want:
                problems.append(f"line {number}: {cells(row)} cells, the header has {want}")

    for number, line in prose_lines(text):
        if line.lstrip().startswith("|"):
            block.append((number, line))
        else:
            check(block)
            block = []
    check(block)
    return problems


# === The pages ===

def all_pages():
    return [README, *DOC_PAGES]


def test_docs_folder_has_pages():
    assert len(DOC_PAGES) >= 5, DOC_PAGES


@pytest.mark.parametrize("path", all_pages(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_and_anchors_resolve(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", all_pages(), ids=lambda p: os.path.relpath(p, ROOT))
def test_tables_and_code_fences_are_well_formed(path):
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    assert table_problems(text) == []  # prose_lines inside also fails on an unclosed fence


def test_readme_is_short():
    with open(README, encoding="utf-8") as handle:
        count = len(handle.read().splitlines())
    assert count < README_MAX_LINES, f"README.md has {count} lines; move detail to docs/"


def test_every_doc_page_is_linked_from_the_readme():
    with open(README, encoding="utf-8") as handle:
        targets = {os.path.normpath(os.path.join(ROOT, t.partition("#")[0])) for _, t in links(handle.read())}
    assert [os.path.relpath(p, ROOT) for p in DOC_PAGES if p not in targets] == []


def test_readme_test_command_is_the_one_ci_runs():
    with open(README, encoding="utf-8") as handle:
        readme = handle.read()
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as handle:
        ci = handle.read()
    command = "python -m pytest -q tests"
    assert command in ci and command in readme
    assert 'python -m pytest -q -m "not slow" tests' in readme


# === The checks themselves catch what they should ===

def test_anchor_rule_matches_github_examples():
    assert github_anchor("Online augmentation: `train.py --augment`") == "online-augmentation-trainpy---augment"
    assert github_anchor("Check a data set: `tools/verify_dataset.py`") == "check-a-data-set-toolsverify_datasetpy"
    assert github_anchor("Scaling, precision, schedules, fine-tuning") == "scaling-precision-schedules-fine-tuning"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_checkers_report_broken_links_tables_and_fences(tmp_path):
    (tmp_path / "other.md").write_text("# Real heading\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#real-heading) [gone](missing.md) [bad anchor](other.md#nope)\n"
                    "[self](#page) `[in code](nowhere.md)`\n\n# Page\n\n```sh\n[in a fence](nowhere.md)\n```\n")
    problems = broken_links(str(page))
    assert len(problems) == 2, problems
    assert "missing.md" in problems[0] and "#nope" in problems[1]
    assert table_problems("| a | b |\n|---|---|\n| 1 | 2 |\n") == []
    assert table_problems("| a | b |\n|---|---|\n| 1 | 2 | 3 |\n") == ["line 3: 3 cells, the header has 2"]
    assert table_problems("| a | b |\n| 1 | 2 |\n")[0].startswith("line 1: table without")
    with pytest.raises(AssertionError, match="never closed"):
        prose_lines("text\n```sh\ncode\n")
