"""Pretend that some packages are not installed, to rehearse a machine that lacks them; and say what imports.

``benchmarks/gpu_check.py --dry-run`` copies this file as ``sitecustomize.py`` into a folder put first on
the ``PYTHONPATH`` of its child processes, with ``JAXCNN_BLOCK_MODULES=grain,safetensors,...``: every
Python they start then fails to import those top-level modules (``ModuleNotFoundError``, as on a
machine without them), except from the folders of ``JAXCNN_BLOCK_ALLOW`` (``os.pathsep``-separated:
where the check installed wheels of its own). The environment itself is left as it is.

    python benchmarks/import_block.py grain tensorboardX safetensors     # one JSON line: {module: null | why not}
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import sys

BLOCK_ENV, ALLOW_ENV = "JAXCNN_BLOCK_MODULES", "JAXCNN_BLOCK_ALLOW"


class Blocker:
    """A meta-path finder, first in ``sys.meta_path``: top-level ``blocked`` modules are found only in
    ``allowed`` folders; their submodules follow their package's own path."""

    def __init__(self, blocked, allowed=()):
        self.blocked, self.allowed = set(blocked), [os.path.abspath(p) for p in allowed]

    def find_spec(self, name, path=None, target=None):
        if path is not None or name not in self.blocked:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, self.allowed) if self.allowed else None
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: {BLOCK_ENV})", name=name)
        return spec


def install(blocked, allowed=()) -> Blocker:
    blocker = Blocker(blocked, allowed)
    sys.meta_path.insert(0, blocker)
    for name in list(sys.modules):      # anything imported before (site's own imports) goes too
        if name.partition(".")[0] in blocker.blocked:
            del sys.modules[name]
    return blocker


def missing(modules) -> dict[str, str | None]:
    """``{module: None}`` for each that imports, else the last line of why not."""
    out = {}
    for name in modules:
        try:
            importlib.import_module(name)
            out[name] = None
        except Exception as err:      # an ImportError, or a package that breaks while importing
            out[name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]
    return out


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(missing(sys.argv[1:] if argv is None else argv)))


if os.environ.get(BLOCK_ENV):
    install([m for m in os.environ[BLOCK_ENV].split(",") if m],
            [p for p in os.environ.get(ALLOW_ENV, "").split(os.pathsep) if p])

if __name__ == "__main__":
    main()
