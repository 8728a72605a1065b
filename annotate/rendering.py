"""Markdown for prompts, candidates and instructions, rendered then sanitised.

Python-Markdown passes raw HTML through, so its output is never trusted: ``nh3`` keeps a
small set of tags and attributes, drops scripts and event handlers, allows only http(s) and
mailto links and adds ``rel="noopener noreferrer nofollow"``. Images are not allowed: a
candidate could otherwise load a remote URL (a tracking pixel, or a hint at its source).

Rendering happens when a row is written (``Prompt.text_html``, ``Candidate.text_html``,
``Project.instructions_html``), never on a page request; ``markdown`` is imported on first use so
the web process does not load it to serve stored HTML. A bulk import stores ``""`` for a text
that is one plain paragraph (``markdown_html_stored_many``): its HTML is ``<p>text</p>``, made
on read by ``html_or_rendered`` (one C match) instead of written twice (half the bytes of a
candidate row, issue 13).
"""

from __future__ import annotations

import re
import threading

from django.utils.safestring import SafeString, mark_safe

_TAGS = {
    "p", "br", "hr", "strong", "em", "b", "i", "u", "s", "del", "code", "pre", "kbd",
    "blockquote", "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "a",
    "table", "thead", "tbody", "tr", "th", "td", "sup", "sub",
}  # fmt: skip
_ATTRIBUTES = {"a": {"href", "title"}, "th": {"align"}, "td": {"align"}, "ol": {"start"}}
_EXTENSIONS = ["fenced_code", "tables", "sane_lists"]
# A Markdown instance costs more to build (extension set-up) than a short text costs to
# convert; one per thread, reset before each text, since an instance keeps per-document state.
_local = threading.local()


def _converter():
    converter = getattr(_local, "converter", None)
    if converter is None:
        import markdown

        converter = _local.converter = markdown.Markdown(
            extensions=_EXTENSIONS, output_format="html"
        )
    return converter.reset()


# Letters, digits (``str.isalnum``: ``\w`` without "_") and punctuation that markdown leaves as it is
# within one line (no emphasis, code, escapes, entities or HTML). Square brackets too, unless
# a ``:`` or ``(`` follows a ``]``: without a reference definition (``[id]: url``) no
# ``[text]`` or ``[text][id]`` resolves, and an inline link needs ``](``. With a letter or
# ``[`` first, no list, heading or quote can start.
_PLAIN_LINE = re.compile(r"[\w ,.;:?!'\"()/%$@=+\-\[\]]*")  # ``\w`` less "_", checked apart
# The same set for ASCII text (``\w`` there is ``[A-Za-z0-9_]``): the common case, and about
# 3x faster to match than ``\w``'s Unicode categories (50,000 texts in an import of 10,000 rows).
_PLAIN_ASCII_LINE = re.compile(r"[A-Za-z0-9_ ,.;:?!'\"()/%$@=+\-\[\]]*")
_LINK_TAIL = re.compile(r"\]\s*[:(]")


def _plain_paragraph(text: str) -> str | None:
    """The HTML of a one-line text with nothing for markdown to do, or None.

    Most imported texts are such lines, and the parser costs far more than this check (about
    0.3 ms a text, minutes for a large import). tests/annotate/test_rendering.py checks that
    both give the same HTML.
    """
    if not (text[:1].isalpha() or text[:1] == "["):
        return None
    if (
        (_PLAIN_ASCII_LINE if text.isascii() else _PLAIN_LINE).fullmatch(text)
        and "_" not in text
        and not ("]" in text and _LINK_TAIL.search(text))
    ):
        return f"<p>{text}</p>"
    return None


def markdown_html(text: str) -> SafeString:
    """Renders a markdown subset to HTML that is safe to insert into a page."""
    if not text:
        return SafeString("")
    plain = _plain_paragraph(text)
    if plain is not None:
        # Letters, digits and inert punctuation only. SafeString, not mark_safe: its lazy-text
        # wrapper cost more than the check above (an import renders ~5 texts a row).
        return SafeString(plain)
    return _parsed_html(text)


# The bytes ``_PLAIN_ASCII_LINE`` allows, less "_" (which ``_plain_paragraph`` refuses apart),
# plus the newline that joins texts below.
_PLAIN_ASCII_BYTES = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ,.;:?!'\"()/%$@=+-[]\n"
)


def _all_plain_characters(texts: list[str]) -> bool:
    """Whether every text holds only ``_plain_paragraph``'s characters (ASCII, newlines aside)
    and no possible link: two C scans of the joined texts."""
    joined = "\n".join(texts)
    return (
        joined.isascii()
        and not joined.encode("ascii").translate(None, _PLAIN_ASCII_BYTES)
        and not ("]" in joined and _LINK_TAIL.search(joined))
    )


def markdown_html_many(texts: list[str]) -> list[str]:
    """``markdown_html`` of each text; when all of them are plain lines, as most imports'
    texts are, found so in two C scans of the joined texts instead of one match per text.

    An import of 10,000 rows holds 50,000 texts; the per-text shortcut's ``fullmatch`` and
    calls were about a tenth of its CPU. Otherwise (a character the shortcut refuses, a
    possible link) each text goes through ``markdown_html``.
    """
    if _all_plain_characters(texts):
        # Every text is a line of allowed characters: plain when it starts as one.
        return [
            f"<p>{t}</p>" if t[:1].isalpha() or t[:1] == "[" else markdown_html(t) for t in texts
        ]
    return [markdown_html(t) for t in texts]


def markdown_html_stored_many(texts: list[str]) -> list[str]:
    """What a bulk write stores as each text's HTML: ``markdown_html_many``, but ``""`` for a
    one-line text that ``_plain_paragraph`` takes (its HTML is ``<p>text</p>``; readers call
    ``html_or_rendered``)."""
    if _all_plain_characters(texts):
        return [
            "" if (t[:1].isalpha() or t[:1] == "[") and "\n" not in t else markdown_html(t)
            for t in texts
        ]
    return ["" if t and _plain_paragraph(t) is not None else markdown_html(t) for t in texts]


def html_or_rendered(html: str, text: str) -> str:
    """The HTML of a row's text from its stored ``html``: as stored, or ``<p>text</p>`` where a
    bulk write left it empty (``markdown_html_stored_many``: only for such texts, so no markdown
    parser runs here). Equal to ``markdown_html(text)`` for every row: a text rendered to
    ``""`` (blank, or nothing left after sanitising) stays ``""``."""
    if html or not text:
        return html
    plain = _plain_paragraph(text)
    return SafeString(plain) if plain is not None else html


def _parsed_html(text: str) -> SafeString:
    import nh3

    html = _converter().convert(text)
    return mark_safe(  # noqa: S308 (sanitised by nh3 on the line below)
        nh3.clean(
            html,
            tags=_TAGS,
            attributes=_ATTRIBUTES,
            url_schemes={"http", "https", "mailto"},
            link_rel="noopener noreferrer nofollow",
        )
    )
