"""Training of the delay model: data encoding, the torch network, the loop, HPO and metrics."""
