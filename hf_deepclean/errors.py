"""The errors a user can fix. The CLI prints each as one line and exits 2 (``--debug`` shows the traceback).

They live together, with no heavy imports, so that the CLI knows them before it loads a command.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A YAML config or flag combination the user must fix."""


class DataError(ValueError):
    """A dataset, column or forget specification the user must fix."""


class ModelError(ValueError):
    """A model that cannot serve the request (missing head, wrong label count, bad checkpoint)."""


class OutputDirError(ValueError):
    """An output folder that would overwrite something the user needs."""


class SelectionError(ValueError):
    """A threshold that selects no weight, or a mask that cannot be used."""


class HubPushError(RuntimeError):
    """A push to the Hub failed; the message says what went wrong and what to do. Nothing local is touched."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, DataError, ModelError, OutputDirError, SelectionError, HubPushError, ValueError, FileNotFoundError,
)

__all__ = ["USER_ERRORS", "ConfigError", "DataError", "HubPushError", "ModelError", "OutputDirError", "SelectionError"]
