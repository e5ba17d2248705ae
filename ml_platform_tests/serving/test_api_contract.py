"""The published API contract is true: the live Bento's ``/docs.json`` is a valid OpenAPI document,
and schemathesis, with every check on, finds no request or answer that contradicts it.

The server runs with an API token (so schemathesis' ``ignored_auth`` check has something to check)
and the test model of the serving world. schemathesis and openapi-spec-validator live in their own
venv (``make schemathesis``, ``.venv-schemathesis``, pinned in ``schemathesis-requirements.txt``
beside this file); ``make test-live`` installs it first. Without it the tests fail, naming the make
target: they never skip, so CI cannot pass without having run them.

The run is bounded (``MAX_EXAMPLES`` per operation and phase, ``TIMEOUT_S`` in all) and seeded,
so it takes well under a minute and a failure reproduces; the failures' report (check, request as
curl, response) is the assertion message. ``schemathesis.toml`` beside this file is its
configuration (413 counts as rejecting a batch over ``maxItems``).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ml_platform_tests.serving.conftest import MAX_BATCH, LiveServer, ServingWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.live]

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv-schemathesis" / "bin"
TOKEN = "contract-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: schemathesis' configuration: every check on, 413 among the statuses that reject bad data.
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = int(os.environ.get("MLP_CONTRACT_EXAMPLES", "100"))
#: The run's own limit (it takes ~30 s on 2 cores); past this the test fails.
TIMEOUT_S = 300
#: Fixed, so CI's run reproduces; ``MLP_CONTRACT_SEED`` (and ``MLP_CONTRACT_EXAMPLES``) explore further.
SEED = int(os.environ.get("MLP_CONTRACT_SEED", "20130115"))


def _tool(name: str) -> Path:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(
            f"{path} is missing: run `make schemathesis` (make test-live does) to install the pinned"
            f" schemathesis venv from {Path(__file__).with_name('schemathesis-requirements.txt')}",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def contract_server(world: ServingWorld) -> Iterator[LiveServer]:
    server = LiveServer(world, "contract", {"MLP_SERVING_API_TOKEN": TOKEN})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def document(contract_server: LiveServer) -> dict[str, Any]:
    response = httpx.get(f"{contract_server.url}/docs.json", headers=AUTH, timeout=30.0)
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


@pytest.fixture(scope="module")
def document_path(document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("contract") / "docs.json"
    path.write_text(json.dumps(document, indent=1))
    return path


def test_docs_json_is_a_valid_openapi_document(document_path: Path) -> None:
    python = _tool("python")
    check = (
        "import json, sys\n"
        "from openapi_spec_validator import validate\n"
        "doc = json.load(open(sys.argv[1]))\n"
        "validate(doc)\n"
        "print(doc['openapi'])\n"
    )
    done = subprocess.run(
        [str(python), "-c", check, str(document_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"/docs.json is not a valid OpenAPI document:\n{done.stderr[-6000:]}"


def test_schemathesis_finds_nothing_with_every_check(
    contract_server: LiveServer, document_path: Path, tmp_path: Path
) -> None:
    schemathesis = _tool("schemathesis")
    command = [
        str(schemathesis),
        "--config-file",
        str(CONFIG),
        "run",
        str(document_path),
        "--url",
        contract_server.url,
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "2",
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "har",
        "--report-har-path",
        str(tmp_path / "run.har"),
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)
    output = done.stdout + done.stderr
    assert done.returncode == 0, (
        f"schemathesis found requests or answers that contradict /docs.json (exit {done.returncode}):\n"
        f"{_failures(output)}\n--- server log ---\n{contract_server.log_tail(3000)}"
    )
    # not vacuous: both API routes answered schema-valid requests (200, checked against the
    # response schema), schema-violating ones (400) and ones without the token (401)
    entries = json.loads((tmp_path / "run.har").read_text())["log"]["entries"]
    statuses: dict[str, set[int]] = {}
    for entry in entries:
        path = httpx.URL(entry["request"]["url"]).path
        statuses.setdefault(path, set()).add(entry["response"]["status"])
    for path in ("/predict", "/predict_batch"):
        assert {200, 400, 401} <= statuses.get(path, set()), (path, statuses, output[-3000:])


def _failures(output: str, limit: int = 12_000) -> str:
    """schemathesis' report from its FAILURES section on (every failing check with its request)."""
    start = output.find("FAILURES")
    text = output[start:] if start >= 0 else output
    return text[:limit] + (f"\n... ({len(text) - limit} more characters)" if len(text) > limit else "")


def test_the_batch_limit_and_the_vocabularies_are_in_the_document(
    document: dict[str, Any], world: ServingWorld
) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["BatchRequest"]["properties"]["flights"]["maxItems"] == MAX_BATCH
    vocab = world.model.preprocessor.vocabularies
    for name in ("carrier", "origin", "dest"):
        assert set(schemas["FlightRequest"]["properties"][name]["enum"]) == set(vocab[name]), name
