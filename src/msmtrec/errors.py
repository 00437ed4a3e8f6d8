"""User-facing errors.

Anything raised as :class:`MsmtrecError` is a problem with the user's input (a file, a column, a spec, a
request), not a bug: the CLI prints its one-line message and exits non-zero without a traceback unless
``--debug`` is given.
"""


class MsmtrecError(Exception):
    """A clear, user-facing error. The message names the file/column/field and what was expected."""


class SpecError(MsmtrecError):
    """A dataset spec or model config is malformed (unknown key, missing column, bad value)."""


class DataError(MsmtrecError):
    """Input data does not match what the spec promised (missing column, bad value, empty file)."""


class ConfigError(MsmtrecError):
    """A model or training config has an unknown key or an invalid value."""
