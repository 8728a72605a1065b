"""A chat template's rows as static text around their contents, derived once per row shape.

`RewardInputBuilder` renders two strings per packed row (the row, and the prompt up to the
assistant header) through the checkpoint's Jinja chat template: 35-45 us a render on the demo
rows, as much as tokenising them. A template that writes each content verbatim, whatever the
content is, renders every row of one shape (which media the prompt has, with or without the
answer turn) as the same static pieces around the contents. `derive_skeleton` finds those
pieces from one render with sentinel contents, and `ChatSkeleton.fill` joins them with a row's
contents instead of rendering it.

It is kept only where it is exact: the skeleton must reproduce the template's own renders of
`PROBES` character for character (contents empty and one letter, with whitespace at both ends,
newlines, Jinja braces, the response separator and control-token literals, and every printable
ASCII character). A template whose output depends on its contents (``| trim``, ``{% if 'x' in
content %}``, a content rendered twice differently) fails a probe and is rendered each time, as
is one that reads the clock or draws random values (`VARYING`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

__all__ = ["PROBES", "SENTINELS", "VARYING", "ChatSkeleton", "derive_skeleton"]

# Private-use characters around a name: no user text, template or tokenizer writes them.
SENTINELS = ("\ue000quorum:prompt\ue001", "\ue000quorum:answer\ue001")
_MARKS = re.compile("|".join(re.escape(s) for s in SENTINELS))
_SENTINEL_CHARS = re.compile("[\ue000\ue001]")
# Templates whose output changes between renders of the same contents.
VARYING = re.compile(r"strftime_now|\brandom\b|\bshuffle\b")

# (prompt text, answer text) pairs rendered by the template and the skeleton, which must agree.
PROBES: tuple[tuple[str, str], ...] = (
    ("", ""),
    ("a", "b"),
    (
        " \n  Which one? {{ x }} {% if y %} {# z #} <|im_end|>\n<|im_start|>user\n\n<|resp_sep|> ",
        "\n\nFirst.\n\n<|resp_sep|>\n\nSecond {}\t\n\n<|resp_sep|>\n\n<|vision_start|> ",
    ),
    (string.printable, "\u200b" + string.printable[::-1] + " caf\u00e9, \u6771\u4eac \U0001f642\n"),
)


class ChatSkeleton:
    """The static pieces of a row shape's render, around its content slots: ``pieces[0]``,
    ``contents[slots[0]]``, ``pieces[1]``... (``len(pieces) == len(slots) + 1``)."""

    __slots__ = ("pieces", "slots")

    def __init__(self, pieces: Sequence[str], slots: Sequence[int]) -> None:
        if len(pieces) != len(slots) + 1:
            raise ValueError(f"{len(pieces)} static pieces around {len(slots)} content slots")
        self.pieces = tuple(pieces)
        self.slots = tuple(slots)

    def fill(self, contents: Sequence[str]) -> str:
        """The row the template renders for `contents` (one string per slot number)."""
        out = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            out.append(contents[slot])
            out.append(piece)
        return "".join(out)


def derive_skeleton(render: Callable[[Sequence[str]], str], slots: int) -> ChatSkeleton | None:
    """The skeleton of `render` (a row shape's template render, given one content per slot),
    or None when the template's output is not its contents dropped verbatim into static text.

    Args:
        render (`Callable`): Renders the row for a sequence of `slots` contents.
        slots (`int`): How many contents the row has (1: the prompt; 2: prompt and answer).
    """
    try:
        text = render(SENTINELS[:slots])
    except Exception:  # noqa: BLE001 - a template refusing the sentinels is rendered each time
        return None
    pieces = _MARKS.split(text)
    if any(_SENTINEL_CHARS.search(piece) for piece in pieces):
        return None  # a content cut, escaped or transformed: not written verbatim
    skeleton = ChatSkeleton(pieces, [SENTINELS.index(mark) for mark in _MARKS.findall(text)])
    for probe in PROBES:
        contents = probe[:slots]
        try:
            expected = render(contents)
        except Exception:  # noqa: BLE001 - content-dependent (it refuses some contents)
            return None
        if skeleton.fill(contents) != expected:
            return None
    return skeleton
