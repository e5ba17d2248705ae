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


def test_the_latency_tuning_is_in_the_bentoml_config_and_can_be_overridden(tmp_path: Path) -> None:
    """Short request timeout, no access log, API routes untraced (docs/benchmarks.md, "Serving
    latency"); an operator's BentoML config still wins."""
    code = (
        "import json\n"
        "import ml_platform.serving.service as s\n"
        "s.DelayService.inject_config()\n"
        "from bentoml._internal.configuration.containers import BentoMLContainer as C\n"
        "print(json.dumps({'timeout': C.api_server_config.traffic.timeout.get(),\n"
        "  'access_log': C.api_server_config.logging.access.enabled.get(),\n"
        "  'untraced': C.tracing.excluded_urls.get(), 'routes': sorted(s.ROUTES),\n"
        "  'flush_lines': s.PREDICTION_LOG_FLUSH_LINES}))\n"
    )
    tuned = json.loads(_python(code, BENTOML_HOME=str(tmp_path)))
    assert tuned == {
        "timeout": 5,
        "access_log": False,
        "untraced": ["/predict", "/predict_batch"],
        "routes": ["/predict", "/predict_batch"],
        "flush_lines": 4,
    }
    options = (
        "services.delay_service.logging.access.enabled=true services.delay_service.tracing.excluded_urls=[]"
    )
    restored = json.loads(_python(code, BENTOML_HOME=str(tmp_path), BENTOML_CONFIG_OPTIONS=options))
    assert restored["access_log"] is True and restored["untraced"] == []


def test_settle_heap_freezes_what_start_up_left() -> None:
    code = (
        "import gc, json\n"
        "import ml_platform.serving.service as s\n"
        "before = gc.get_freeze_count()\n"
        "garbage = []\n"
        "garbage.append(garbage)\n"  # a cycle only the collector frees
        "del garbage\n"
        "s.settle_heap()\n"
        "print(json.dumps([before, gc.get_freeze_count(), len(gc.get_objects())]))\n"
    )
    before, frozen, tracked = json.loads(_python(code))
    assert before == 0 and frozen > 10_000 and tracked < 1_000


def test_the_bento_tag_comes_from_bentomls_server_context() -> None:
    """A worker serving a Bento has its name and version; served from source the version is
    "not available" (BentoML's worker), and outside a worker nothing is set: no tag then."""
    code = (
        "import json\n"
        "import bentoml\n"
        "import ml_platform.serving.service as s\n"
        "out = [s.served_bento_tag()]\n"
        "bentoml.server_context.bento_name = 'delay_service'\n"
        "out.append(s.served_bento_tag())\n"
        "bentoml.server_context.bento_version = 'v3-0123456789abcdef'\n"
        "out.append(s.served_bento_tag())\n"
        "print(json.dumps(out))\n"
    )
    assert json.loads(_python(code)) == [None, None, "delay_service:v3-0123456789abcdef"]
