#!/usr/bin/env python3
"""Checks the links of the project's Markdown: README.md, CHANGELOG.md, benches/README.md and
every page of the book (docs/src/**/*.md).

- Every relative link or image target must exist, resolved against the file that holds it.
- Every `#anchor`, into the same file or into another Markdown file, must be the slug of one of
  that file's headings (GitHub's and mdBook's rule: lowercase, punctuation other than `-` and
  `_` dropped, spaces to `-`; a repeated heading gets `-1`, `-2`...).
- Every page in docs/src/ must be listed in docs/src/SUMMARY.md.

External links (http, https, mailto) are not fetched. Code blocks and inline code are skipped.
Only the standard library is used. Prints each broken link and exits 1 if there is any.

    python3 tests/check_links.py
"""

import re
import sys
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "docs" / "src"

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets
# (e.g. an image inside a link).
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_LINK = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def files_to_check():
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benches" / "README.md"]
    files += sorted(BOOK.rglob("*.md"))
    return files


def prose_lines(text, blank_code=True):
    """(line number, line) outside fenced code blocks, inline code blanked out unless
    `blank_code` is false (headings keep their code's text in their slug)."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE.match(line)
        if fence:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            continue
        if opened:
            fence = opened.group(1)
            continue
        yield number, INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line) if blank_code else line


def slug(heading):
    """The anchor GitHub and mdBook give a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "")
    text = text.strip().lower()
    out = []
    for ch in text:
        if ch.isalnum() or ch in "-_":
            out.append(ch)
        elif ch.isspace():
            out.append("-")
    return "".join(out)


_anchors = {}


def anchors(path):
    """Every heading slug of a Markdown file (and explicit id/name attributes)."""
    if path not in _anchors:
        seen = {}
        found = set()
        text = path.read_text(encoding="utf-8")
        previous = ""
        for _, line in prose_lines(text, blank_code=False):
            match = HEADING.match(line)
            title = None
            if match:
                title = match.group(2)
            elif SETEXT.match(line) and previous.strip() and not previous.lstrip().startswith(("|", "-", "*")):
                title = previous.strip()
            if title is not None:
                base = slug(title)
                count = seen.get(base, 0)
                seen[base] = count + 1
                found.add(base if count == 0 else f"{base}-{count}")
            for attribute in re.findall(r"""\b(?:id|name)\s*=\s*["']([^"']+)["']""", line):
                found.add(attribute)
            previous = line
        _anchors[path] = found
    return _anchors[path]


def targets(text):
    """(line number, target) of every link, image and reference definition."""
    for number, line in prose_lines(text):
        for match in INLINE_LINK.finditer(line):
            yield number, match.group(1)
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            yield number, definition.group(1)
        for match in HTML_LINK.finditer(line):
            yield number, match.group(1)


def check_file(path):
    problems = []
    text = path.read_text(encoding="utf-8")
    for number, target in targets(text):
        target = target.strip()
        if target.startswith("<") and target.endswith(">"):
            target = target[1:-1]
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        if not target:
            problems.append(f"{where}: empty link target")
            continue
        if EXTERNAL.match(target) or target.startswith("//"):
            continue
        file_part, _, anchor = target.partition("#")
        file_part = unquote(file_part.split("?", 1)[0])
        if file_part.startswith("/"):
            problems.append(f"{where}: absolute path (use a path relative to the file)")
            continue
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{where}: {resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved} does not exist")
            continue
        if anchor:
            if resolved.is_dir() or resolved.suffix.lower() != ".md":
                problems.append(f"{where}: an anchor into a file that is not Markdown")
            elif unquote(anchor) not in anchors(resolved):
                problems.append(f"{where}: no heading '#{anchor}' in {resolved.relative_to(ROOT)}")
    return problems


def check_summary():
    summary = BOOK / "SUMMARY.md"
    if not summary.exists():
        return [f"{summary.relative_to(ROOT)} is missing"]
    listed = set()
    for _, target in targets(summary.read_text(encoding="utf-8")):
        file_part = unquote(target.partition("#")[0])
        if file_part and not EXTERNAL.match(file_part):
            listed.add((BOOK / file_part).resolve())
    problems = []
    for page in sorted(BOOK.rglob("*.md")):
        if page.name == "SUMMARY.md":
            continue
        if page.resolve() not in listed:
            problems.append(f"{page.relative_to(ROOT)}: not listed in {summary.relative_to(ROOT)}")
    return problems


def main():
    problems = []
    checked = 0
    for path in files_to_check():
        if not path.exists():
            problems.append(f"{path.relative_to(ROOT)}: missing")
            continue
        checked += 1
        problems += check_file(path)
    problems += check_summary()
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} broken link(s) in {checked} files", file=sys.stderr)
        return 1
    print(f"links ok in {checked} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
