"""docs/architecture.md and the ADRs, held to the source tree they describe.

Everything here is read from the tree as it is, so moving a package, adding a
port or writing an ADR fails a test that says which line of the docs to change.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "convtrack"
DOC = ROOT / "docs" / "architecture.md"
ADRS = ROOT / "docs" / "adr"
ADR_INDEX = ADRS / "README.md"

MERMAID_BLOCK = re.compile(r"^```mermaid\n(.*?)^```", re.S | re.M)
TABLE_NAME = re.compile(r"^\| `([^`]+)` \|", re.M)
ADR_FILE = re.compile(r"^(\d{4})-[a-z0-9-]+\.md$")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The body of one ``## heading`` section."""
    parts = text.split(f"\n## {heading}\n", 1)
    assert len(parts) == 2, f"{DOC.name} has no section '## {heading}'"
    return parts[1].split("\n## ", 1)[0]


def diagram() -> str:
    blocks = MERMAID_BLOCK.findall(doc_text())
    assert len(blocks) == 1, f"{DOC.name} must hold exactly one mermaid block, not {len(blocks)}"
    return str(blocks[0])


def source_tree() -> set[str]:
    """Every package under src/convtrack (a directory holding Python code, with or
    without its ``__init__.py``) as ``a/b/``, and every top-level module but
    ``__init__.py`` as ``name.py``."""
    names = {
        path.parent.relative_to(PACKAGE).as_posix() + "/"
        for path in PACKAGE.rglob("*.py")
        if path.parent != PACKAGE and "__pycache__" not in path.parts
    }
    return names | {path.name for path in PACKAGE.glob("*.py") if path.name != "__init__.py"}


def ports() -> dict[str, list[str]]:
    """The abstract classes of every ``base.py``, by the package that holds it."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("base.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [
            node.name
            for node in tree.body
            if isinstance(node, ast.ClassDef)
            and any(ast.unparse(base) in ("ABC", "abc.ABC") for base in node.bases)
        ]
        if names:
            found[path.parent.relative_to(PACKAGE).as_posix() + "/"] = names
    return found


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_the_source_tree_is_what_the_test_reads() -> None:
    # A check over an empty or wrong tree would pass whatever the doc says.
    tree = source_tree()
    assert {"collect/", "log/", "process/", "store/hot/", "deliver/", "config.py"} <= tree
    assert "__init__.py" not in tree
    assert {"LogConsumer", "EventLog"} <= set(ports()["log/"])


def test_every_package_and_module_is_in_the_table_of_packages() -> None:
    named = TABLE_NAME.findall(section(doc_text(), "The packages"))
    tree = source_tree()
    missing = sorted(tree - set(named))
    gone = sorted(set(named) - tree)
    twice = sorted({name for name in named if named.count(name) > 1})
    assert not missing, f"{DOC.name}, 'The packages': add a row for each of {missing}"
    assert not gone, f"{DOC.name}, 'The packages': {gone} no longer exist; rename or remove"
    assert not twice, f"{DOC.name}, 'The packages': {twice} have more than one row"


def test_one_flowchart_names_every_port_and_the_package_that_holds_it() -> None:
    chart = diagram()
    assert chart.lstrip().startswith("flowchart"), "the diagram must be a mermaid flowchart"
    for package, names in ports().items():
        assert package in chart, f"the diagram does not name {package}, which holds ports {names}"
        for name in names:
            assert re.search(rf"\b{name}\b", chart), f"the diagram does not name the port {name}"


def test_every_adr_is_numbered_in_order_and_in_the_index() -> None:
    index = ADR_INDEX.read_text(encoding="utf-8")
    files = sorted(path.name for path in ADRS.glob("*.md") if path != ADR_INDEX)
    numbers = []
    for name in files:
        match = ADR_FILE.match(name)
        assert match, f"docs/adr/{name}: name it NNNN-short-title.md"
        number = int(match.group(1))
        numbers.append(number)
        title = (ADRS / name).read_text(encoding="utf-8").splitlines()[0]
        assert title.startswith(f"# {number}. "), f"docs/adr/{name}: head it '# {number}. Title'"
        assert f"]({name})" in index, f"docs/adr/README.md does not link {name}"
    assert numbers == list(range(1, len(numbers) + 1)), f"ADR numbers have gaps: {numbers}"


def test_the_links_of_these_docs_resolve_and_the_readme_lists_the_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documentation = readme.split("\n## Documentation\n", 1)[1].split("\n## ", 1)[0]
    assert "(docs/architecture.md)" in documentation, "README.md's Documentation list lacks it"
    checked = 0
    for page in [DOC, *sorted(ADRS.glob("*.md"))]:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # another site
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            where = f"{page.relative_to(ROOT)} links {target}"
            assert linked.exists(), f"{where}: no such file"
            if anchor and linked.suffix == ".md":
                assert anchor in anchors(linked), f"{where}: no such heading"
            checked += 1
    assert checked > 10  # the pattern found the links
