"""The documentation against the code it describes: every flag the README and docs/ give the three main commands
exists in that command's --help, every flag of the three is documented, the generated pages are current, and
the files users look for are there."""

import re

import pytest
import yaml

from .conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _parsers():
    from pbn.evaluate import build_parser as evaluate
    from pbn.train import build_parser as train
    from search.run import build_parser as run

    return {"search/run.py": run(), "pbn.train": train(), "pbn.evaluate": evaluate()}


def _flags(parser) -> set[str]:
    """The long options the command's --help lists."""
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", parser.format_help()))


def _invocations(command: str) -> list[tuple[str, str]]:
    """(file, the text after each mention of `command` up to the end of its code span or line)."""
    found = []
    for path in DOCS:
        for line in path.read_text().splitlines():
            for m in re.finditer(re.escape(command) + r"([^`'\n]*)", line):
                found.append((path.name, m.group(1)))
    return found


@pytest.mark.parametrize("command", ["search/run.py", "pbn.train", "pbn.evaluate"])
def test_every_documented_flag_exists(command):
    known = _flags(_parsers()[command])
    uses = _invocations(command)
    assert uses, f"{command} is not shown anywhere in README.md or docs/"
    for where, text in uses:
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text):
            assert flag in known, f"{where}: `{command} ... {flag}`: no such flag (python {command} --help)"


@pytest.mark.parametrize("command", ["search/run.py", "pbn.train", "pbn.evaluate"])
def test_every_flag_is_documented(command):
    text = "\n".join(p.read_text() for p in DOCS)
    missing = sorted(f for f in _flags(_parsers()[command]) - {"--help"} if f not in text)
    assert not missing, f"{command}'s flags {missing} appear nowhere in README.md or docs/"


def test_generated_pages_are_current():
    from pbn.config import reference_markdown
    from search.results import schema_markdown

    assert (ROOT / "docs" / "config.md").read_text() == reference_markdown(), "python -m pbn.config --markdown"
    assert schema_markdown() in (ROOT / "docs" / "results.md").read_text(), "python -m search.results --markdown"


def test_front_page_licence_and_citation():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in re.findall(r"docs/[\w.]+\.md", readme):
        assert (ROOT / page).is_file(), f"README links {page}, which does not exist"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    paper = cff["preferred-citation"]
    assert paper["year"] == 2019 and [a["family-names"] for a in paper["authors"]] == ["Tang", "Wu"]
    assert "Related Parts" in paper["title"]
