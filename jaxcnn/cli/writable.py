"""The check every command makes of a folder it will write to, before any work is done."""

from __future__ import annotations

import os
import tempfile


def writable_dir(path: str, what: str) -> None:
    """Creates ``path`` if needed and checks that a file can be written there; a one-line error naming ``what``
    (the option or setting that gave the path) otherwise."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".jaxcnn-write-test"):
            pass
    except OSError as e:
        raise ValueError(f"{what} {path} is not a writable directory ({e.strerror or e})") from None
