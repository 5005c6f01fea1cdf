"""User-facing errors.

Every error a user can cause (bad config, bad data, missing weights) is a `HarnessError`.
The CLI prints its message as one paragraph and exits with status 2, without a traceback.
The message names the file, the key path, the value and what was expected.
"""


class HarnessError(Exception):
    """An error caused by input the user controls; shown without a traceback."""


class ConfigError(HarnessError):
    """A config or sweep file (or a command-line override) is invalid."""


class DataError(HarnessError):
    """A data file or record is missing or malformed."""


class AssetMissingError(HarnessError):
    """Model weights or a data set the config asks for are not on disk."""
