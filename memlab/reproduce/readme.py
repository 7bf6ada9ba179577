"""The claims table of README.md, generated from results/*.json so that the README cannot drift from results/."""

from __future__ import annotations

from pathlib import Path

from memlab.analysis.tables import markdown_table
from memlab.errors import ConfigError
from memlab.reproduce.claim import load_result

START, END = "<!-- claims:start -->", "<!-- claims:end -->"
HEADER = ["claim", "source", "the source says", "memlab measured", "verdict", "parts decided", "scale", "details"]
REPOSITORY = Path(__file__).resolve().parents[2]  # the checkout whose README.md and results/ go together


def claims_table(results_dir: str | Path, link_prefix: str | None = None) -> str:
    """One row per results/<claim>.json, by claim name; the last column links its .md (under `link_prefix`,
    by default the results directory as given, or its name when that is absolute)."""
    results_dir = Path(results_dir)
    if link_prefix is None:
        link_prefix = results_dir.name if results_dir.is_absolute() else results_dir.as_posix()
    rows = []
    for path in sorted(results_dir.glob("*.json")):
        r = load_result(path)
        link = f"[{r.claim}.md]({link_prefix}/{r.claim}.md)"
        decided, total = r.decided()
        parts = f"{decided} of {total}" if total else "predates the evidence checks (protocol 1)"
        rows.append([f"`{r.claim}`", r.source, r.source_number, r.measured, f"**{r.verdict}**", parts, r.scale, link])
    return markdown_table(HEADER, rows)


def update_readme(readme_path: str | Path, results_dir: str | Path, link_prefix: str | None = None) -> bool:
    """Replace the text between the claims markers with `claims_table`; True when the file changed."""
    path = Path(readme_path)
    text = path.read_text()
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ConfigError(f"{path}: expected one {START} line followed by one {END} line around the claims table")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    new = f"{head}{START}\n{claims_table(results_dir, link_prefix)}\n{END}{tail}"
    if new != text:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(new)
        tmp.replace(path)
    return new != text


def update_repository_readme(out: str | Path) -> bool:
    """Regenerate the repository's README table, only when `out` is the repository's own results/ (a run with any
    other --out changes nothing outside it); the table is built from every results file there, so no claim whose
    results exist is dropped. True when README.md changed."""
    readme, results = REPOSITORY / "README.md", REPOSITORY / "results"
    if Path(out).resolve() != results.resolve() or not has_markers(readme):
        return False
    return update_readme(readme, results, link_prefix="results")


def has_markers(readme_path: str | Path) -> bool:
    path = Path(readme_path)
    return path.is_file() and START in (text := path.read_text()) and END in text
