"""Building the ``delay_service`` Bento of one packaged model version: the lock, the context, the build.

No Dagster here; the ``delay_bento`` asset (:mod:`ml_platform.defs.serving.bento`) calls these.

* :func:`runtime_lock`: the Python lock of the Bento, the subset of the resolved set
  (``constraints.txt``) that the service imports at runtime: the closure of :data:`RUNTIME_ROOTS`
  over the installed distributions' requirements, each at its ``constraints.txt`` pin.
  ``torch==2.13.0`` comes from the PyTorch CPU index (``--extra-index-url``, so ``pip install -r``
  picks the ``+cpu`` wheel; the image's uv does the same with
  ``UV_INDEX_STRATEGY=unsafe-best-match``, set for the build). For a CUDA image, replace that line
  with the CUDA index (``https://download.pytorch.org/whl/cu128``; PyPI's own Linux x86_64 wheel is
  the CUDA build) and set ``docker.cuda_version`` in the bentofile.
* :func:`prepare_context`: a build context folder with only what the Bento needs: the
  ``ml_platform`` package's ``*.py`` files (no tests, no storage), ``requirements.lock`` and the
  ``bentofile.yaml``.
* :func:`build_bento`: ``bentoml build`` in a subprocess whose ``BENTOML_HOME`` is the platform's
  (set before BentoML is imported, which a Dagster step process may already have done with another
  home), with ``--arg model_tag=<the packaged model>`` (stored in the Bento: the service serves that
  model, :mod:`ml_platform.serving.service`). The Bento's version is a digest of what it holds
  (model files, lock, source, build options), so building the same thing again finds the Bento
  already in the store instead of making a copy with another tag.

The Docker options keep BentoML's defaults (``python:3.11-slim``, Debian, ``USER bentoml`` with
UID/GID 1034), which ``deploy/bento/base/deployment.yaml`` relies on (``runAsUser: 1034``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Final

#: The service the Bento runs and the Bento's name (the service's ``name``).
SERVICE: Final = "ml_platform.serving.service:DelayService"
BENTO_NAME: Final = "delay_service"
LOCK_FILE: Final = "requirements.lock"
BENTOFILE: Final = "bentofile.yaml"
#: Where torch's CPU wheel comes from (the same index as the Dockerfile's cpu variant).
TORCH_CPU_INDEX: Final = "https://download.pytorch.org/whl/cpu"
#: The distributions the service imports itself (``ml_platform.serving.service`` and the modules it
#: loads: schema, http, batching, predictor, prediction log, online store, packaging, the pyfunc
#: model, settings, metrics); their requirements come with them. ``mlflow`` (not only
#: ``mlflow-skinny``): without a ``model_tag`` the service loads the champion from the registry,
#: whose database stores need SQLAlchemy and alembic; psycopg2 for a PostgreSQL registry.
RUNTIME_ROOTS: Final = (
    "bentoml",
    "torch",
    "mlflow",
    "psycopg2-binary",
    "polars",
    "numpy",
    "pandas",
    "pydantic",
    "pydantic-settings",
    "redis",
    "prometheus-client",
    "PyYAML",
    "starlette",
    # imported by mlflow (mlflow.genai) without being one of its requirements
    "tqdm",
)
#: The source of the Bento, relative to the build context.
SOURCE_INCLUDE: Final = ("ml_platform/**/*.py", LOCK_FILE)
#: BentoML's defaults, written out: the base image the Kubernetes manifests were written for.
DOCKER_OPTIONS: Final = {"distro": "debian", "python_version": "3.11"}
#: The image installs the lock with uv, which by default takes a package only from the first index
#: that has it (the PyTorch index also hosts numpy, pillow, sympy, ... at other versions). The
#: best match over both indexes is what pip does with the lock: the pinned version, and for
#: torch==2.13.0 the CPU index's 2.13.0+cpu. Set for the image build only.
BUILD_ENVS: Final = ({"name": "UV_INDEX_STRATEGY", "value": "unsafe-best-match", "stage": "build"},)
#: Packages ``pip freeze`` (and so ``constraints.txt``) leaves out; pinned at their installed version.
UNLISTED: Final = frozenset({"pip", "setuptools", "wheel"})
_VERSION_RE: Final = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
_BUILD_TIMEOUT_S: Final = 600


class BentoBuildError(RuntimeError):
    """The Bento cannot be built (a lock that disagrees with the resolved set, a failed build)."""


def canonical(name: str) -> str:
    """The normalized name of a distribution (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class PythonLock:
    """The Bento's pinned Python packages."""

    text: str
    #: canonical name -> pinned version
    pins: Mapping[str, str]
    #: installed versions that differ from the pins (the environment drifted from constraints.txt)
    drift: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        """sha256 of the lock file's bytes (UTF-8)."""
        return hashlib.sha256(self.text.encode()).hexdigest()


def read_constraints(path: Path) -> dict[str, tuple[str, str]]:
    """``constraints.txt``: canonical name -> (name as written, version)."""
    pins: dict[str, tuple[str, str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise BentoBuildError(f"{path}: {raw!r} is not a name==version pin")
        pins[canonical(name.strip())] = (name.strip(), version.strip())
    return pins


def _public(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``: the lock pins the public version; the index picks the build."""
    return version.split("+", 1)[0]


def runtime_lock(
    constraints: Path | None = None,
    roots: Iterable[str] = RUNTIME_ROOTS,
    *,
    torch_index: str = TORCH_CPU_INDEX,
) -> PythonLock:
    """The lock of the service's runtime: ``roots`` and their requirements, pinned.

    Which distributions: the closure of ``roots`` over the installed distributions' requirements
    (markers evaluated here: Linux, Python 3.11, as the image). Which versions: the resolved set's,
    ``constraints`` (or the installed ones when it is not given, as in an image without the
    checkout, whose packages were installed from it). A distribution installed at another version
    than ``constraints`` pins is listed in :attr:`PythonLock.drift`; the lock keeps the pin.

    Args:
        constraints: ``constraints.txt``.
        roots: The distributions the service imports.
        torch_index: The extra index torch comes from.

    Raises:
        BentoBuildError: a required distribution is not installed, or ``constraints`` does not pin
            it (except the packages of :data:`UNLISTED`, which ``pip freeze`` omits: they keep
            their installed version).
    """
    from packaging.requirements import Requirement

    resolved = read_constraints(constraints) if constraints is not None else {}
    found: dict[str, tuple[str, str]] = {}
    drift: list[str] = []
    queue: list[tuple[str, frozenset[str], str]] = [(root, frozenset(), "the service") for root in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        name, extras, wanted_by = queue.pop()
        key = canonical(name)
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        try:
            dist = importlib_metadata.distribution(name)
        except importlib_metadata.PackageNotFoundError as exc:
            raise BentoBuildError(f"{name} (required by {wanted_by}) is not installed") from exc
        installed = _public(dist.version)
        if key in resolved:
            written, pinned = resolved[key]
            if pinned != installed and key not in found:
                drift.append(f"{written} {installed} installed, {pinned} in constraints.txt")
        elif resolved and key not in UNLISTED:
            raise BentoBuildError(
                f"{dist.metadata['Name']} (required by {wanted_by}) is not in constraints.txt: the"
                " resolved set lacks a runtime dependency of the service; re-resolve it"
            )
        else:
            written, pinned = str(dist.metadata["Name"]), installed
        found[key] = (written, pinned)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({"extra": extra}) for extra in ("", *sorted(extras))
            ):
                continue
            queue.append((req.name, frozenset(req.extras), f"{dist.metadata['Name']}"))
    lines = [
        "# The Python lock of the delay_service Bento: what the service imports at runtime, with",
        "# their requirements, pinned as in constraints.txt (ml_platform.lib.serving.bento.runtime_lock).",
        "# torch==2.13.0 is the CPU wheel of the PyTorch index below (pip, and uv with",
        "# UV_INDEX_STRATEGY=unsafe-best-match, pick 2.13.0+cpu); for a CUDA image use",
        "# https://download.pytorch.org/whl/cu128 (or PyPI) and set docker.cuda_version in the bentofile.",
        f"--extra-index-url {torch_index}",
        *(f"{written}=={version}" for _, (written, version) in sorted(found.items())),
    ]
    return PythonLock(
        text="\n".join(lines) + "\n",
        pins={k: v for k, (_, v) in sorted(found.items())},
        drift=tuple(sorted(drift)),
    )


@dataclass(frozen=True)
class BuildContext:
    """A folder ``bentoml build`` can run in, and the digest of what it puts in the Bento."""

    path: Path
    bentofile: dict[str, Any]
    #: sha256 over the source files, the lock and the bentofile without its labels
    digest: str
    source_files: int


def prepare_context(
    folder: Path,
    lock: PythonLock,
    *,
    labels: Mapping[str, str],
    package_dir: Path | None = None,
    description: str = "",
) -> BuildContext:
    """Write the build context into ``folder`` (empty or absent).

    Args:
        folder: Where to write it.
        lock: The Python lock (written as ``requirements.lock``).
        labels: The Bento's labels (not part of the digest: two builds of the same content by
            different runs are the same Bento).
        package_dir: The ``ml_platform`` package to copy (default: this installation's).
        description: The Bento's description.
    """
    package = package_dir or Path(__file__).resolve().parents[2]
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    count = 0
    for source in sorted(package.rglob("*.py")):
        relative = source.relative_to(package.parent)
        if "__pycache__" in relative.parts:
            continue
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        data = source.read_bytes()
        target.write_bytes(data)
        digest.update(relative.as_posix().encode() + b"\0" + hashlib.sha256(data).digest())
        count += 1
    if count == 0:
        raise BentoBuildError(f"no Python source under {package}")
    (folder / LOCK_FILE).write_text(lock.text)
    bentofile: dict[str, Any] = {
        "service": SERVICE,
        "name": BENTO_NAME,
        "description": description,
        "include": list(SOURCE_INCLUDE),
        "exclude": ["**/__pycache__/**"],
        "python": {"requirements_txt": LOCK_FILE, "lock_packages": False},
        "docker": dict(DOCKER_OPTIONS),
        "envs": [dict(env) for env in BUILD_ENVS],
    }
    digest.update(lock.sha256.encode())
    digest.update(json.dumps(bentofile, sort_keys=True).encode())
    bentofile["labels"] = {str(k): str(v) for k, v in labels.items()}
    # JSON is YAML: BentoML reads the file with yaml.safe_load
    (folder / BENTOFILE).write_text(json.dumps(bentofile, indent=2, sort_keys=True) + "\n")
    return BuildContext(folder, bentofile, digest.hexdigest(), count)


def bento_version(model_version: str, content_digest: str) -> str:
    """``v<model version>-<digest[:16]>``: which registered version, and exactly what was built."""
    version = f"v{model_version}-{content_digest[:16]}".lower()
    if not _VERSION_RE.match(version):
        raise BentoBuildError(f"cannot make a Bento version of model version {model_version!r}")
    return version


def model_digest(model_path: Path) -> str:
    """sha256 over the files of a packaged BentoML model (its weights and spec, not its metadata)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_path.iterdir() if p.is_file() and p.name != "model.yaml"):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class BuiltBento:
    """A Bento in the store of a ``BENTOML_HOME``."""

    tag: str
    path: Path
    #: True when the store already held this Bento (same content), so nothing was built
    reused: bool
    build_seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def bentoml_env(
    bentoml_home: Path, base: Mapping[str, str] | None = None, *, root_dir: Path | None = None
) -> dict[str, str]:
    """The environment of a ``bentoml`` subprocess on ``bentoml_home`` (no usage tracking).

    ``root_dir``: the platform root a served Bento resolves its settings from (``MLP_ROOT_DIR``), so
    it reads the same online store and writes the same prediction log as the caller.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("BENTOML_")}
    env["BENTOML_HOME"] = str(bentoml_home)
    env["BENTOML_DO_NOT_TRACK"] = "true"
    if root_dir is not None:
        env["MLP_ROOT_DIR"] = str(root_dir)
    return env


def bentoml_command() -> str:
    """The ``bentoml`` executable of this environment."""
    return str(Path(sys.executable).with_name("bentoml"))


def bento_path(bentoml_home: Path, tag: str) -> Path:
    """Where the store of ``bentoml_home`` keeps Bento ``name:version``."""
    name, _, version = tag.partition(":")
    return bentoml_home / "bentos" / name / version


def get_bento(bentoml_home: Path, tag: str, env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """``bentoml get <tag> -o json`` on ``bentoml_home``: the Bento's info, or None if it is not there."""
    out = subprocess.run(
        [bentoml_command(), "get", tag, "-o", "json"],
        env=bentoml_env(bentoml_home, env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        return None
    try:
        info = json.loads(out.stdout)
    except ValueError as exc:
        raise BentoBuildError(f"bentoml get {tag}: unreadable output {out.stdout[-500:]!r}") from exc
    return info if isinstance(info, dict) else None


def build_bento(
    context: BuildContext,
    bentoml_home: Path,
    *,
    model_tag: str,
    version: str,
    env: Mapping[str, str] | None = None,
) -> BuiltBento:
    """``bentoml build`` of ``context`` as ``delay_service:<version>`` serving ``model_tag``.

    The model must already be in ``<bentoml_home>/models``. A Bento of that tag already in the
    store is returned as it is (``reused``): the version names its content.

    Raises:
        BentoBuildError: the build failed (with the end of its output), or printed no tag.
    """
    tag = f"{BENTO_NAME}:{version}"
    started = time.perf_counter()
    existing = get_bento(bentoml_home, tag, env)
    if existing is not None:
        return BuiltBento(tag, bento_path(bentoml_home, tag), True, time.perf_counter() - started, existing)
    command = [
        bentoml_command(),
        "build",
        str(context.path),
        "-f",
        str(context.path / BENTOFILE),
        "--version",
        version,
        "--arg",
        f"model_tag={model_tag}",
        "--output",
        "tag",
    ]
    try:
        out = subprocess.run(
            command,
            cwd=context.path,
            env=bentoml_env(bentoml_home, env),
            capture_output=True,
            text=True,
            timeout=_BUILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise BentoBuildError(f"bentoml build did not finish in {_BUILD_TIMEOUT_S} s") from exc
    if out.returncode != 0:
        raise BentoBuildError(
            f"bentoml build failed (exit {out.returncode}):\n{(out.stdout + out.stderr)[-4000:]}"
        )
    printed = _printed_tag(out.stdout)
    if printed != tag:
        raise BentoBuildError(f"bentoml build printed {printed!r}, expected {tag}:\n{out.stdout[-2000:]}")
    info = get_bento(bentoml_home, tag, env)
    if info is None:
        raise BentoBuildError(f"bentoml build printed {tag}, but `bentoml get {tag}` does not find it")
    return BuiltBento(tag, bento_path(bentoml_home, tag), False, time.perf_counter() - started, info)


def _printed_tag(stdout: str) -> str | None:
    """The tag ``bentoml build --output tag`` printed (``__tag__:name:version``, or the bare tag)."""
    for line in reversed(stdout.strip().splitlines()):
        text = line.strip().removeprefix("__tag__:")
        if re.match(rf"^{re.escape(BENTO_NAME)}:[a-z0-9._-]+$", text):
            return text
    return None
