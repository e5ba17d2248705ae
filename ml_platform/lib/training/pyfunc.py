"""The delay model as an MLflow pyfunc: feature rows in, minutes and a probability out.

What MLflow stores is the network's ``state_dict`` plus a JSON with the fitted
:class:`~ml_platform.lib.training.data.Preprocessor` and the architecture, never a pickled torch
module (torch 2.13 loads weights only by default, and a state dict survives refactors). The
evaluation, the serving layer and ``mlp`` all load versions through this one class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import polars as pl
from mlflow.pyfunc.model import PythonModel

from ml_platform.lib.training.data import INPUT_COLUMNS, Preprocessor

WEIGHTS: Final = "weights"
SPEC: Final = "spec"
OUTPUT_COLUMNS: Final = ("predicted_arr_delay", "delay_probability")


def save_artifacts(
    folder: Path, state_dict: dict[str, Any], preprocessor: Preprocessor, model_kwargs: dict[str, Any]
) -> dict[str, str]:
    """Write the weights and the spec into ``folder``; return the pyfunc ``artifacts`` mapping."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "weights.pt"
    torch.save(state_dict, weights)
    spec = folder / "spec.json"
    spec.write_text(
        json.dumps({"preprocessor": preprocessor.to_dict(), "model": model_kwargs}, indent=1, sort_keys=True)
    )
    return {WEIGHTS: str(weights), SPEC: str(spec)}


class DelayModel(PythonModel):
    """Predicts ``predicted_arr_delay`` (minutes) and ``delay_probability`` for feature rows."""

    def load_context(self, context: Any) -> None:
        """Rebuild the network from the logged weights and spec."""
        self.load(Path(context.artifacts[WEIGHTS]), Path(context.artifacts[SPEC]))

    def load(self, weights: Path, spec_file: Path) -> None:
        """Load from files (also used without MLflow, e.g. right after training)."""
        import torch

        from ml_platform.lib.training.model import DelayNet

        spec = json.loads(spec_file.read_text())
        self.preprocessor = Preprocessor.from_dict(spec["preprocessor"])
        self.network = DelayNet(
            self.preprocessor.cardinalities, len(self.preprocessor.numeric_columns), **spec["model"]
        )
        self.network.load_state_dict(torch.load(weights, weights_only=True))
        self.network.eval()

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Score ``model_input`` (the columns of :data:`INPUT_COLUMNS`)."""
        frame = model_input if isinstance(model_input, pl.DataFrame) else pl.from_pandas(model_input)
        delay, probability = self.predict_frame(frame)
        return pd.DataFrame({OUTPUT_COLUMNS[0]: delay, OUTPUT_COLUMNS[1]: probability})

    def predict_frame(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Minutes and probabilities for a polars frame."""
        from ml_platform.lib.training.loop import predict

        encoded = self.preprocessor.encode(frame.select(INPUT_COLUMNS))
        delay, probability = predict(self.network, encoded)
        return self.preprocessor.delay_minutes(delay), probability
