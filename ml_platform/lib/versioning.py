"""Code versions and git commits recorded in lineage."""

from __future__ import annotations

import hashlib
import inspect
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Final


def code_version_of(*modules: ModuleType) -> str:
    """Return a short digest of the source of ``modules``.

    An asset's code version is the digest of the ``lib`` modules that compute it, so any change to
    its logic marks its partitions stale in Dagster, and an unchanged module keeps its version.
    """
    digest = hashlib.sha256()
    for module in sorted(modules, key=lambda m: m.__name__):
        digest.update(module.__name__.encode())
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:16]


def code_version_of_names(*names: str) -> str:
    """:func:`code_version_of` for modules named by their import path, without importing them.

    The same digest as :func:`code_version_of` gives for the imported modules; assets whose code
    imports torch or mlflow use it, so loading the Definitions stays free of heavy imports.
    """
    import importlib.util

    digest = hashlib.sha256()
    for name in sorted(names):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"no source for module {name!r}")
        digest.update(name.encode())
        digest.update(Path(spec.origin).read_text(encoding="utf-8").encode())
    return digest.hexdigest()[:16]


#: Where this code lives: the checkout holding the ``ml_platform`` package (for an installed wheel,
#: ``site-packages``). Not the data root (``MLP_ROOT_DIR``), which may be anywhere.
CODE_ROOT: Final = Path(__file__).resolve().parents[2]


def git_commit(code_root: Path = CODE_ROOT) -> str:
    """Return ``HEAD``'s commit of the checkout the code runs from, with ``-dirty`` when it has changes.

    The commit is read where the code lives (:data:`CODE_ROOT`), never from the data root, so a
    project whose ``MLP_ROOT_DIR`` is elsewhere still records the code that produced it. Returns
    ``"unavailable"`` when ``code_root`` is not the top of a git checkout (an installed wheel, an
    image without ``.git``; a ``site-packages`` inside some other checkout is not taken for its
    commit): set ``MLP_GIT_COMMIT`` there, for example at image build time.
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(code_root), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()

    try:
        top = git("rev-parse", "--show-toplevel")
        if Path(top).resolve() != code_root.resolve():
            return "unavailable"
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unavailable"
    return f"{head}-dirty" if dirty else head
