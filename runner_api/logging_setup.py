"""Logging for the API and the worker: one line per record, known secrets masked everywhere."""

import logging

from .settings import scrub


class SecretFilter(logging.Filter):
    """Replace every known secret value in a record's message (arguments and traceback included)."""

    def __init__(self, secrets):
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record):
        if self.secrets:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
                record.exc_text = None
            record.msg = scrub(message, self.secrets)
            record.args = None
        return True


_FILTER = SecretFilter([])


def install_secret_filter(secrets):
    """Attach the filter to every handler of the root logger (and to future ones through it)."""
    _FILTER.secrets = list(secrets)
    root = logging.getLogger()
    for handler in root.handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def configure(level="INFO", secrets=()):
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_secret_filter(secrets)
