"""The engine's user-facing error: one line that says what and why.

The CLI prints `error: <message>` and exits non-zero; the TUI shows it in its error modal.
Anything else escaping the engine is a bug and is reported with a traceback in the logs.
"""


class LoradeckError(Exception):
    """A failure the user can act on; `str()` is a single line, `hint` says what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        text = " ".join(str(self).split())
        return f"{text} ({self.hint})" if self.hint else text


class ConfigError(LoradeckError):
    """A bad project.toml, run config, or command-line value."""


class ProjectError(LoradeckError):
    """A missing, invalid or clashing project."""


class ModelError(LoradeckError):
    """A base or captioning model that cannot be found or loaded."""


class StopRequested(BaseException):
    """Raised inside a long blocking step (loading a model) when the user asked to stop: the step is
    abandoned and the command ends as stopped. A BaseException, so `except Exception` in library code
    on the way up does not swallow it."""
