"""Module boundaries of pbn/: what each layer may import, checked on the source (every import statement,
including those inside functions)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PBN = ROOT / "pbn"
DATA = sorted((PBN / "data").glob("*.py"))


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module an `import` or `from ... import` in the file names, absolute (relative imports resolved
    against the file's package under root); `from pkg import name` yields both pkg and pkg.name (name may be
    a module)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
    return out


def test_the_import_parser_sees_every_form(tmp_path):
    pkg = tmp_path / "pbn" / "data"
    pkg.mkdir(parents=True)
    f = pkg / "x.py"
    f.write_text("import pbn.evaluate\nfrom pbn import evaluate\nfrom .. import evaluate as e\n"
                 "def f():\n    from pbn.evaluate import main\n")
    found = imported_modules(f, tmp_path)
    assert found == {"pbn.evaluate", "pbn", "pbn.evaluate.main"}  # `from .. import evaluate`: pbn, pbn.evaluate


@pytest.mark.parametrize("path", DATA, ids=[p.name for p in DATA])
def test_pbn_data_imports_nothing_above_it(path):
    """pbn.data scores with pbn.pck (below it); the prediction-file command pbn.evaluate, training, the model
    and the groupings are above it."""
    above = ("pbn.evaluate", "pbn.train", "pbn.model", "pbn.groups", "search")
    bad = sorted(m for m in imported_modules(path) if any(m == a or m.startswith(a + ".") for a in above))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_pck_is_pure_metric_math():
    """pbn.pck imports only numpy, the standard library and pbn.stats / pbn.skeleton / pbn.metrics."""
    import sys

    allowed = {"pbn.stats", "pbn.skeleton", "pbn.metrics"}
    mods = imported_modules(PBN / "pck.py")
    other = {m.split(".")[0] for m in mods} - set(sys.stdlib_module_names) - {"pbn", "numpy"}
    # `from pbn import stats` names pbn; `from pbn.skeleton import NUM_JOINTS` names pbn.skeleton.NUM_JOINTS
    own = {m for m in mods if m.startswith("pbn.") and m not in allowed and m.rsplit(".", 1)[0] not in allowed}
    assert not other and not own, (other, own)
    assert allowed <= mods


def test_evaluate_scores_with_pck_and_data_uses_it():
    assert "pbn.pck" in imported_modules(PBN / "evaluate.py")
    assert "pbn.pck" in imported_modules(PBN / "data" / "dataset.py")
