"""The WebUI console lines: "MotionPrompt" once per line, whatever logging the host or another extension set up.

Every message of the ``motionprompt`` logger already starts with "MotionPrompt" (the console is shared with every
extension). Left to propagate, a root handler configured with ``logging.basicConfig`` prints the logger's name in
front of it (``WARNING:motionprompt:MotionPrompt: ...``), and with no root handler at all Python prints warnings
only. So, like sd-webui-animatediff and ControlNet, the logger gets its own console handler and does not propagate.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "motionprompt"
_MARK = "_motionprompt_console"  # survives the extension being re-imported (UI reload): no second handler


class _Console(logging.StreamHandler):
    """stderr as it is when the line is written (the WebUI and tests may replace ``sys.stderr``)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


class _OneName(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if text.startswith("MotionPrompt") else f"MotionPrompt: {text}"  # e.g. the trainer's lines


def setup() -> logging.Logger:
    logger = logging.getLogger(LOGGER)
    if not any(getattr(h, _MARK, False) for h in logger.handlers):
        handler = _Console()
        handler.setFormatter(_OneName("%(message)s"))
        setattr(handler, _MARK, True)
        logger.addHandler(handler)
    logger.propagate = False
    if logger.level == logging.NOTSET:  # the result line is INFO: the root's default WARNING would drop it
        logger.setLevel(logging.INFO)
    return logger
