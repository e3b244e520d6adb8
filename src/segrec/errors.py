"""The one exception and warning hierarchy of segrec.

Every error a user can cause is a :class:`SegrecError`; the CLI maps it to exit
code 2 with its one-line message, the HTTP layer to a 4xx JSON body. Dual bases
keep ``except ValueError`` / ``except KeyError`` working for callers that use them.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "ConvergenceWarning",
    "DataValidationError",
    "DataWarning",
    "EfficiencyWarning",
    "MissingDependencyError",
    "ModelFitError",
    "NotFittedError",
    "ResourceError",
    "SegmentationError",
    "SegrecError",
    "SegrecWarning",
    "UnknownIDError",
]


class SegrecError(Exception):
    """Base class of every error segrec raises on purpose."""


class ConfigError(SegrecError, ValueError):
    """A configuration value or file is invalid.

    Attributes:
        path: The config file, when the value came from one.
        key: The dotted key path of the bad value, when known.
    """

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None):
        super().__init__(message)
        self.path = path
        self.key = key


class DataValidationError(SegrecError, ValueError):
    """Input data is malformed; the message names file, column, rows and a sample.

    Attributes:
        source: File name (or ``"<DataFrame>"``) the problem was found in.
        column: Offending column, if the problem is column-specific.
        rows: Up to five 0-based data-row positions showing the problem.
        problem: Short description of the first problem (the message lists all).
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        column: str | None = None,
        rows: Sequence[int] = (),
        problem: str | None = None,
    ):
        super().__init__(message)
        self.source = source
        self.column = column
        self.rows = list(rows)[:5]
        self.problem = problem


class NotFittedError(SegrecError, AttributeError):
    """A model or segmenter was used before ``fit``."""


class UnknownIDError(SegrecError, KeyError):
    """A user or item id is not in the fitted vocabulary."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class SegmentationError(SegrecError):
    """Segmentation cannot be computed (e.g. K larger than the number of users)."""


class ModelFitError(SegrecError):
    """Fitting produced an unusable model (NaN parameters, empty data)."""


class MissingDependencyError(SegrecError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class ResourceError(SegrecError, MemoryError):
    """A fit would need more memory than the machine has; the message says how much and what to do."""


class SegrecWarning(UserWarning):
    """Base class of segrec warnings."""


class DataWarning(SegrecWarning):
    """Data was silently altered (duplicates dropped, rows ignored)."""


class ConvergenceWarning(SegrecWarning):
    """An iterative fit stopped before converging or degenerated."""


class EfficiencyWarning(SegrecWarning):
    """Something will work, but slowly; the message names the fix."""


def require(module: str, extra: str):
    """Import an optional dependency or raise :class:`MissingDependencyError`.

    Args:
        module: Importable module name, e.g. ``"sentence_transformers"``.
        extra: segrec extra that installs it, e.g. ``"text"``.

    Returns:
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'segrec[{extra}]'"
        ) from exc
