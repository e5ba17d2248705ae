"""Score validated requests: online features from the store, then the model, in one pass per batch.

:meth:`Predictor.score` is what the service's batcher calls (in its scoring thread) with the
flights of one or more requests. It builds the request frame (:data:`REQUEST_COLUMNS`, departures
in UTC), asks :func:`~ml_platform.lib.online.features.online_features` for every model input (one
store round trip for the whole batch), and runs the model.

The model runs through :class:`ServingModel`, not ``DelayModel.predict_frame``: that one encodes
with about forty polars expressions, which take ~4 ms for a single row, more than everything else
on the request path together. :class:`ServingModel` computes the same arrays with the
preprocessor's vocabularies as dicts and its statistics as numpy vectors (~0.1 ms), then calls the
same network; ``ml_platform_tests/serving/test_scoring.py`` checks that the arrays are identical to
``Preprocessor.encode``'s and the predictions to ``predict_frame``'s on real feature days. A spec
whose numeric columns differ from the ones this code knows falls back to ``predict_frame``.

Each :class:`ScoredFlight` names the online snapshot that answered its batch (day, content hash,
written at: :class:`~ml_platform.lib.online.snapshot.SnapshotRef`, read in the lookup's own
transaction) and whether its features were *stale*: its departure lies more than the freshness
budget after the snapshot's cutoff (:mod:`ml_platform.lib.online.freshness`). The flight is still
scored; the service says so in the answer, the log line and the metrics.

Nothing here touches HTTP or BentoML; the vocabularies the service validates against are the
model's own (:attr:`Predictor.vocabularies`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ml_platform.lib.online.freshness import DEFAULT_BUDGET, is_stale
from ml_platform.lib.serving.schema import CATEGORICAL_FIELDS, FlightRequest
from ml_platform.lib.training.data import CATEGORICAL, NUMERIC, WEATHER_MISSING, Encoded, FloatArray

if TYPE_CHECKING:
    from ml_platform.lib.online.snapshot import SnapshotRef
    from ml_platform.lib.online.store import OnlineStore
    from ml_platform.lib.serving.packaging import ServedModelInfo
    from ml_platform.lib.training.pyfunc import DelayModel

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class ScoredFlight:
    """The model's answer for one flight, and the feature row it scored (``features[row]``)."""

    predicted_arr_delay: float
    delay_probability: float
    features_as_of: datetime | None
    weather_observed_at: datetime | None
    features: pl.DataFrame
    row: int
    #: The online snapshot that answered (the same for every flight of a batch).
    snapshot: SnapshotRef
    #: The departure lies more than the freshness budget after the snapshot's cutoff.
    stale: bool


class DeviceError(RuntimeError):
    """The configured serving device is not usable here."""


def resolve_device(wanted: str) -> str:
    """The torch device to serve on: ``cpu``; ``cuda`` / ``cuda:N`` if usable; ``auto``: CUDA when usable.

    Raises:
        DeviceError: ``cuda`` asked for where torch sees no CUDA device (a CPU-only torch build,
            no driver, or no GPU given to the pod), or an unknown device name.
    """
    import torch

    if wanted == "cpu":
        return "cpu"
    usable = torch.cuda.is_available()
    if wanted == "auto":
        return "cuda" if usable else "cpu"
    if wanted == "cuda" or wanted.startswith("cuda:"):
        if not usable:
            raise DeviceError(
                f"MLP_SERVING_DEVICE={wanted}, but torch {torch.__version__} sees no CUDA device"
                f" (CUDA build: {torch.version.cuda or 'none, CPU-only wheel'}); serve on cpu or give"
                " the pod a GPU and a CUDA build of torch (deploy/README.md, GPU overlay)"
            )
        index = int(wanted.split(":", 1)[1]) if ":" in wanted else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"MLP_SERVING_DEVICE={wanted}: only {torch.cuda.device_count()} CUDA device(s)")
        return wanted
    raise DeviceError(f"MLP_SERVING_DEVICE must be cpu, cuda, cuda:N or auto, got {wanted!r}")


class ServingModel:
    """``DelayModel.predict_frame`` for serving: the same encoding and network, without polars expressions."""

    def __init__(self, model: DelayModel, device: str = "cpu") -> None:
        pre = model.preprocessor
        self.model = model
        #: Where the network runs (``cpu`` or ``cuda[:N]``, see :func:`resolve_device`).
        self.device = device
        if device != "cpu":
            model.network.to(device)
        self.preprocessor = pre
        #: per categorical column: value -> embedding index (0: unknown), as ``Preprocessor.encode``
        self.index = {c: {v: i for i, v in enumerate(pre.vocabularies[c], start=1)} for c in CATEGORICAL}
        self.means = np.array([pre.means[c] for c in NUMERIC], dtype=np.float64)
        self.stds = np.array([pre.stds[c] for c in NUMERIC], dtype=np.float64)
        self.age = NUMERIC.index("weather_age_minutes")
        #: False when the spec encodes other numeric columns: then ``predict_frame`` is used
        self.compiled = list(pre.numeric_columns) == [*NUMERIC, WEATHER_MISSING]

    def encode(self, frame: pl.DataFrame) -> Encoded:
        """What ``Preprocessor.encode`` returns for ``frame`` (unlabelled rows)."""
        n = frame.height
        categorical = np.zeros((n, len(CATEGORICAL)), dtype=np.int64)
        for j, column in enumerate(CATEGORICAL):
            index = self.index[column]
            values = frame.get_column(column).to_list()
            categorical[:, j] = [0 if v is None else index.get(str(v), 0) for v in values]
        raw = np.empty((n, len(NUMERIC)), dtype=np.float64)
        for j, column in enumerate(NUMERIC):
            raw[:, j] = frame.get_column(column).to_numpy()  # ints with nulls come as float NaN
        standardized = (raw - self.means) / self.stds
        standardized[np.isnan(standardized)] = 0.0
        missing = np.isnan(raw[:, self.age]).astype(np.float64)
        numeric = np.concatenate([standardized, missing[:, None]], axis=1).astype(np.float32)
        nan = np.full(n, np.nan, dtype=np.float32)
        return Encoded(categorical, numeric, nan, nan.copy())

    def predict(self, frame: pl.DataFrame) -> tuple[FloatArray, FloatArray]:
        """Minutes and probabilities, as ``DelayModel.predict_frame``."""
        if not self.compiled:
            return self.model.predict_frame(frame)
        import torch

        encoded = self.encode(frame)
        with torch.inference_mode():
            delay, logit = self.model.network(
                torch.from_numpy(encoded.categorical).to(self.device),
                torch.from_numpy(encoded.numeric).to(self.device),
            )
            probability = torch.sigmoid(logit.float()).cpu().numpy().astype(np.float32)
            standardized = delay.float().cpu().numpy().astype(np.float32)
        return self.preprocessor.delay_minutes(standardized), probability


class Predictor:
    """One loaded model version and the online store it reads features from."""

    def __init__(
        self,
        model: DelayModel,
        info: ServedModelInfo,
        store: OnlineStore,
        device: str = "cpu",
        *,
        freshness_budget: timedelta = DEFAULT_BUDGET,
    ) -> None:
        if freshness_budget <= timedelta(0):
            raise ValueError(f"the feature-freshness budget must be positive, got {freshness_budget}")
        self.model = model
        #: How far a departure may lie after the snapshot's cutoff before its features are stale.
        self.freshness_budget = freshness_budget
        self.serving_model = ServingModel(model, device)
        self.info = info
        self.store = store
        vocabularies = model.preprocessor.vocabularies
        #: The categories the model was trained with, per request field (carrier, origin, dest).
        self.vocabularies: dict[str, frozenset[str]] = {
            name: frozenset(vocabularies[name]) for name in CATEGORICAL_FIELDS if name in vocabularies
        }

    def request_frame(self, flights: Sequence[FlightRequest]) -> pl.DataFrame:
        """The flights as a frame of :data:`REQUEST_COLUMNS` with :data:`REQUEST_SCHEMA` dtypes.

        Built from one Series per column, the departures as epoch microseconds: four times faster
        than letting polars infer from Python datetimes with a time zone (~35 us for one flight).
        """
        from ml_platform.lib.online.features import REQUEST_SCHEMA

        series = [
            pl.Series(name, [getattr(flight, name) for flight in flights], dtype)
            for name, dtype in REQUEST_SCHEMA.items()
            if name != "scheduled_departure"
        ]
        departures = pl.Series(
            "scheduled_departure",
            [(flight.scheduled_departure - _EPOCH) // _MICROSECOND for flight in flights],
            pl.Int64,
        ).cast(REQUEST_SCHEMA["scheduled_departure"])
        return pl.DataFrame(series).insert_column(
            list(REQUEST_SCHEMA).index("scheduled_departure"), departures
        )

    def score(self, flights: Sequence[FlightRequest]) -> list[ScoredFlight]:
        """Predict every flight (one store lookup and one forward pass for all of them).

        Raises:
            OnlineStoreError: the store cannot answer.
        """
        from ml_platform.lib.online.features import served_features

        served = served_features(self.request_frame(flights), self.store)
        features, snapshot = served.features, served.snapshot
        delay, probability = self.serving_model.predict(features)
        as_of = features.get_column("aggregates_as_of").to_list()
        observed = features.get_column("weather_observed_at").to_list()
        cutoff, budget = snapshot.aggregates_as_of, self.freshness_budget
        return [
            ScoredFlight(
                float(delay[i]),
                float(probability[i]),
                as_of[i],
                observed[i],
                features,
                i,
                snapshot,
                is_stale(flight.scheduled_departure, cutoff, budget),
            )
            for i, flight in enumerate(flights)
        ]
