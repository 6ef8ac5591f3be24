"""The one exception type the pure core raises; modules turn it into ``fail_json(msg=...)``."""

from __future__ import annotations


class HyHomeError(Exception):
    """A domain error with a message meant for a person: what is wrong and how to fix it."""

    def __init__(self, msg: str, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details
