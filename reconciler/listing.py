"""A Kubernetes LIST answer decoded as it streams in, one item at a time. Pure: bytes in, objects out.

`cluster.py` reads every LIST page through it, so an item it does not keep is garbage as soon as it
is decoded, and peak memory grows with the objects kept, not with the page.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from typing import Any

Json = dict[str, Any]

class StreamedList:
    """A LIST answer (`{"kind":..., "metadata":..., "items":[...]}`) decoded from a stream of byte
    chunks one item at a time: `items()` yields each item as soon as it is complete; the other
    top-level fields (the list's `metadata` with `continue`) are in `metadata` once it is done."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._json = json.JSONDecoder()
        self.metadata: Json = {}

    def _more(self) -> bool:
        if self._eof:
            return False
        for chunk in self._chunks:
            if chunk:
                self._buf = self._buf[self._pos:] + self._utf8.decode(chunk)
                self._pos = 0
                return True
        self._buf = self._buf[self._pos:] + self._utf8.decode(b"", final=True)
        self._pos = 0
        self._eof = True
        return False

    def _peek(self) -> str:
        """The next character that is not white space (not consumed); '' at the end."""
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in " \t\r\n":
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._more():
                return ""

    def _expect(self, chars: str) -> str:
        c = self._peek()
        if not c or c not in chars:
            raise ValueError(f"expected {' or '.join(repr(x) for x in chars)} at byte {self._pos}, got {c!r}")
        self._pos += 1
        return c

    def _value(self) -> Any:
        self._peek()
        while True:
            try:
                value, end = self._json.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError:
                if self._more():  # the value may only be incomplete
                    continue
                raise
            # A number could go on in the next chunk; anything else ends where it ends.
            if end == len(self._buf) and isinstance(value, int | float) and self._more():
                continue
            self._pos = end
            return value

    def _batch(self) -> list[Json]:
        """The complete items at the start of the buffer, decoded in one call, with the `,` after them.

        One call shares the decoder's memo of object keys between the items, as decoding a whole
        page does (one item per call would keep a copy of every key per object: a third more memory).
        Items of a LIST answer start with `{"metadata":`; the last `},{"metadata":` in the buffer is
        taken for the end of an item, and only if the text before it decodes as a list of objects
        (a cut inside an item cannot: its braces would not balance); otherwise nothing is decoded."""
        end = self._buf.rfind('},{"metadata":', self._pos)
        if end < 0 or self._buf[self._pos] != "{":
            return []
        try:
            items: list[Json] = json.loads(f"[{self._buf[self._pos:end + 1]}]")
        except json.JSONDecodeError:
            return []
        if not all(isinstance(i, dict) for i in items):
            return []
        self._pos = end + 2
        return items

    def items(self) -> Iterator[Json]:
        self._expect("{")
        if self._peek() == "}":
            self._pos += 1
            return
        while True:
            key = self._value()
            self._expect(":")
            if key == "items" and self._peek() == "[":
                self._pos += 1
                if self._peek() == "]":
                    self._pos += 1
                else:
                    while True:
                        yield from self._batch()
                        item = self._value()
                        if not isinstance(item, dict):
                            raise ValueError("an item is not an object")
                        yield item
                        if self._expect(",]") == "]":
                            break
            else:
                self.metadata[str(key)] = self._value()
            if self._expect(",}") == "}":
                return
