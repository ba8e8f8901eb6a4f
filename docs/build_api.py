"""Build the API reference from docstrings with pdoc: ``python docs/build_api.py [OUT]``.

Documents every public module of ailedger (no part of its dotted name starts with ``_``), except
the CLI's command modules (``ailedger --help`` documents the CLI). Writes HTML into ``OUT``
(default ``docs/api``, which git ignores). ``make docs`` runs it. Exits 1, listing them, if pdoc
warned (a module that does not import, a docstring reference it cannot resolve); with
``--lenient`` it writes the pages anyway and exits 0.
"""

from __future__ import annotations

import pkgutil
import sys
import warnings
from pathlib import Path

#: module prefixes left out of the reference
EXCLUDED = ("ailedger.cli",)


def public_modules() -> list[str]:
    """The dotted names of ailedger's public modules, sorted."""
    import ailedger

    names = ["ailedger"]
    for info in pkgutil.walk_packages(ailedger.__path__, "ailedger."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts):
            continue
        if any(info.name == e or info.name.startswith(e + ".") for e in EXCLUDED):
            continue
        names.append(info.name)
    return sorted(names)


def build(output: Path, modules: list[str] | None = None, *, search: bool = True) -> list[str]:
    """Write the HTML reference of ``modules`` (default: all public ones) into ``output``.

    Returns pdoc's warnings, one line each (empty when all went well); ``search`` writes the
    search index too.
    """
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="restructuredtext", show_source=False, search=search)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*(modules or public_modules()), output_directory=output)
    return [
        f"{w.category.__name__}: {str(w.message).splitlines()[0]}"
        for w in caught
        if ("pdoc" in w.filename or issubclass(w.category, RuntimeWarning))
        # a submodule a package's __all__ names is documented with the package already
        and "has already been added" not in str(w.message)
    ]


def main(argv: list[str]) -> int:
    lenient = "--lenient" in argv
    args = [a for a in argv if a != "--lenient"]
    output = Path(args[0]) if args else Path(__file__).resolve().parent / "api"
    problems = build(output)
    for line in problems:
        print(line, file=sys.stderr)
    print(f"API reference in {output}/index.html", file=sys.stderr)
    return 1 if problems and not lenient else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
