"""`--output json`: one JSON object per event, one per line, for machines."""

from __future__ import annotations

import json
from typing import TextIO

from imgctl import events as ev
from imgctl.auth import redact


class JsonRenderer:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, event: ev.Event) -> None:
        self.out.write(redact(json.dumps(event.to_dict(), sort_keys=True)) + "\n")
        self.out.flush()
