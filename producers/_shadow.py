"""One clear line instead of an ImportError traceback when a folder named ``pvekvm`` in the
current directory (a checkout, say) hides the installed package: Python imports from the current
folder first, and that folder, having no ``__init__.py``, is taken for a namespace package."""

from __future__ import annotations

import sys
from importlib.util import find_spec


def refuse_shadowed() -> None:
    """Exit 2 with one line (a command being started: ``python -m ...``), or raise ImportError
    (an import from a program), when ``pvekvm`` resolves to a plain folder."""
    spec = find_spec("pvekvm")
    if spec is None or spec.origin is not None or not spec.submodule_search_locations:
        return
    folder = list(spec.submodule_search_locations)[0]
    argv = sys.orig_argv
    prog = f"python -m {argv[argv.index('-m') + 1]}" if "-m" in argv[:-1] else "pvekvm"
    message = (f"{prog}: the folder {folder} (no __init__.py: a checkout?) hides the pvekvm "
               f"package, since Python imports from the current folder first: run from inside "
               f"the checkout (cd {folder}) or from another folder")
    if sys.argv[:1] == ["-m"]:  # python -m is locating the module: a command line
        print(message, file=sys.stderr)
        raise SystemExit(2)
    raise ImportError(message)
