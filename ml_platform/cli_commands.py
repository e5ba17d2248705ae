"""Which lineage commands ``mlp`` has, readable without importing the CLI.

:mod:`ml_platform.cli` registers exactly these, each the function of that name in
:mod:`ml_platform.lineage_cli`. A module that only needs to know whether ``mlp <name>`` exists (the
evidence bundle names ``mlp reproduce`` as the way to train a version again) reads this list instead
of importing :mod:`ml_platform.cli`, which imports it back (issue #16: no import cycles).
"""

from __future__ import annotations

from typing import Final

#: ``mlp <name>`` for each, in the order ``mlp --help`` lists them.
LINEAGE_COMMANDS: Final = ("lineage", "impact", "evidence", "reproduce")


def has_lineage_command(name: str) -> bool:
    """Whether ``mlp`` has the lineage command ``name``."""
    return name in LINEAGE_COMMANDS
