"""The service module: cheap to import (``bentoml build`` imports it), and what it declares."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLP_", "BENTOML_"))}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "BENTOML_DO_NOT_TRACK": "true", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_importing_the_service_loads_no_model_code_and_reads_no_settings(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "import ml_platform.serving.service as s\n"
        "heavy = ('torch', 'mlflow', 'polars', 'redis', 'prometheus_client', 'ml_platform.settings')\n"
        "svc = s.DelayService\n"
        "print(json.dumps({'loaded': sorted(m for m in heavy if m in sys.modules),\n"
        "  'name': svc.name, 'routes': sorted(a.route for a in svc.apis.values()),\n"
        "  'batchable': sorted(n for n, a in svc.apis.items() if a.batchable),\n"
        "  'middlewares': [m.__name__ for m, _ in svc.middlewares],\n"
        "  'tag': s.MODEL_TAG, 'models': [str(m.tag) for m in svc.models]}))\n"
    )
    declared = json.loads(_python(code, BENTOML_HOME=str(tmp_path)))
    assert declared == {
        "loaded": [],
        "name": "delay_service",
        "routes": ["/predict", "/predict_batch"],
        "batchable": [],
        "middlewares": ["EdgeMiddleware"],
        "tag": None,
        "models": [],
    }


def test_the_model_tag_comes_from_the_environment(tmp_path: Path) -> None:
    code = (
        "import json\n"
        "import ml_platform.serving.service as s\n"
        "print(json.dumps([s.MODEL_TAG, [str(m.tag) for m in s.DelayService.models]]))\n"
    )
    tag = "delay_model:v3-0123456789ab"
    assert json.loads(_python(code, BENTOML_HOME=str(tmp_path), MLP_SERVING_MODEL_TAG=tag)) == [tag, [tag]]
