"""The Bento's build inputs, without building: the Python lock, the build context, the version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ml_platform.lib.serving import bento as b

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints.txt"


@pytest.fixture(scope="module")
def lock() -> b.PythonLock:
    return b.runtime_lock(CONSTRAINTS)


def test_the_lock_is_the_services_subset_of_the_resolved_set(lock: b.PythonLock) -> None:
    resolved = b.read_constraints(CONSTRAINTS)
    for name, version in lock.pins.items():
        if name in b.UNLISTED:
            continue
        assert resolved[name][1] == version, name
    lines = lock.text.splitlines()
    assert f"--extra-index-url {b.TORCH_CPU_INDEX}" in lines
    assert "torch==2.13.0" in lines and "bentoml==1.4.40" in lines and "mlflow==3.17.2" in lines
    assert len([line for line in lines if "==" in line and not line.startswith("#")]) == len(lock.pins)
    # the batch side stays out of the image
    for batch_only in ("dagster", "optuna", "whylogs", "deltalake", "lakefs", "pandera", "pytest"):
        assert batch_only not in lock.pins, batch_only
    assert len(lock.pins) < len(resolved)
    # the same lock from the installed set (an image without constraints.txt), since it is the resolved set
    assert b.runtime_lock(None).text == lock.text


def test_the_lock_covers_every_distribution_the_running_service_imports(lock: b.PythonLock) -> None:
    probe = (
        "import sys, json, importlib.metadata as md\n"
        "import ml_platform.serving.service\n"
        "import torch, redis\n"
        "import ml_platform.lib.online, ml_platform.lib.serving.batching, ml_platform.lib.serving.packaging\n"
        "import ml_platform.lib.serving.predictor, ml_platform.lib.serving.prediction_log\n"
        "import ml_platform.lib.monitoring.metrics, ml_platform.lib.training.pyfunc, ml_platform.settings\n"
        "import mlflow.store.db.utils, mlflow.store.model_registry.sqlalchemy_store\n"
        "names = md.packages_distributions()\n"
        "print(json.dumps(sorted({d for m in list(sys.modules) for d in names.get(m.split('.')[0], [])})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    imported = {b.canonical(d) for d in json.loads(out.stdout.strip().splitlines()[-1])}
    missing = imported - set(lock.pins) - {"ml-platform"}
    assert not missing, f"the service imports {sorted(missing)}, which the Bento's lock lacks"


def test_a_drifted_environment_is_reported_and_an_unresolved_dependency_fails(tmp_path: Path) -> None:
    lines = CONSTRAINTS.read_text().splitlines()
    drifted = tmp_path / "drifted.txt"
    drifted.write_text("\n".join("numpy==1.0.0" if ln.startswith("numpy==") else ln for ln in lines) + "\n")
    lock = b.runtime_lock(drifted)
    assert lock.pins["numpy"] == "1.0.0"  # the resolved set decides the lock
    assert any(d.startswith("numpy ") and "1.0.0 in constraints.txt" in d for d in lock.drift)
    incomplete = tmp_path / "incomplete.txt"
    incomplete.write_text("\n".join(ln for ln in lines if not ln.startswith("redis==")) + "\n")
    with pytest.raises(b.BentoBuildError, match=r"redis .*is not in constraints.txt"):
        b.runtime_lock(incomplete)


def test_the_context_holds_the_package_source_and_the_lock_and_its_digest_names_the_content(
    tmp_path: Path, lock: b.PythonLock
) -> None:
    first = b.prepare_context(tmp_path / "a", lock, labels={"dagster_run_id": "run-1"})
    second = b.prepare_context(tmp_path / "b", lock, labels={"dagster_run_id": "run-2"})
    assert first.digest == second.digest  # labels are not content
    top = sorted(p.name for p in first.path.iterdir())
    assert top == [b.BENTOFILE, "ml_platform", b.LOCK_FILE]
    files = [p for p in (first.path / "ml_platform").rglob("*") if p.is_file()]
    assert files and all(p.suffix == ".py" for p in files) and len(files) == first.source_files
    assert (first.path / "ml_platform" / "serving" / "service.py").is_file()
    bentofile = json.loads((first.path / b.BENTOFILE).read_text())
    assert bentofile["service"] == b.SERVICE and bentofile["labels"] == {"dagster_run_id": "run-1"}
    assert bentofile["python"] == {"requirements_txt": b.LOCK_FILE, "lock_packages": False}
    assert (first.path / b.LOCK_FILE).read_text() == lock.text

    other = b.PythonLock(text=lock.text + "extra==1\n", pins=lock.pins)
    assert b.prepare_context(tmp_path / "c", other, labels={}).digest != first.digest
    version = b.bento_version("12", first.digest)
    assert version == f"v12-{first.digest[:16]}"


def test_the_printed_tag_is_read_from_the_build_output() -> None:
    assert b._printed_tag("some log\n__tag__:delay_service:v3-0123abcd\n") == "delay_service:v3-0123abcd"
    assert b._printed_tag("delay_service:v3-0123abcd\n") == "delay_service:v3-0123abcd"
    assert b._printed_tag("Successfully built Bento\n") is None
