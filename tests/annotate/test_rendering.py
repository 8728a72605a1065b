"""Markdown rendering: the plain-line shortcut gives exactly what the parser gives."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from annotate import rendering
from annotate.rendering import (
    _parsed_html,
    _plain_paragraph,
    html_or_rendered,
    markdown_html,
    markdown_html_stored_many,
)

LETTERS = string.ascii_letters + "éñÜßΩж漢字"
ALPHABET = LETTERS + string.digits + " ,.;:?!'\"()/%$@=+-"
# Everything else a text may hold, for lines the shortcut must leave to the parser.
MARKUP = "*_`[]<>&#\\\n\t!|~^{}\u00a0\u0301"


@settings(max_examples=300, deadline=None)
@given(first=st.sampled_from(LETTERS), rest=st.text(alphabet=ALPHABET, max_size=80))
def test_it_renders_plain_lines_like_the_parser(first, rest):
    text = first + rest

    assert _plain_paragraph(text) is not None
    assert markdown_html(text) == _parsed_html(text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=ALPHABET + MARKUP, max_size=40))
def test_it_gives_the_parsers_html_for_any_text(text):
    assert markdown_html(text) == (_parsed_html(text) if text else "")


def test_it_leaves_lists_headings_and_markup_to_the_parser():
    for text in ("1. first", "- item", "# Title", "**bold**", "a <b>c</b>", "x & y", "a\nb"):
        assert _plain_paragraph(text) is None, text


def test_it_sanitises_the_parsers_html():
    html = markdown_html('**ok**<script>alert(1)</script> [x](javascript:alert(2)) <img src="y">')

    assert "<strong>ok</strong>" in html
    for bad in ("<script", "javascript:", "<img"):
        assert bad not in html


@settings(max_examples=500, deadline=None)
@given(
    first=st.sampled_from(LETTERS + "["),
    rest=st.text(alphabet=ALPHABET + "[][]  :(", max_size=60),
)
def test_it_renders_bracketed_lines_like_the_parser(first, rest):
    text = first + rest

    assert markdown_html(text) == _parsed_html(text)


def test_it_takes_the_shortcut_for_numbered_brackets_but_not_links():
    assert _plain_paragraph("[12] Which answer is better?") == "<p>[12] Which answer is better?</p>"
    for text in ("[a](b)", "see [a] (b)", "[id]: x", "[id] : x", "a [b]:c"):
        assert _plain_paragraph(text) is None, text


def test_the_ascii_pattern_allows_exactly_the_ascii_characters_of_the_general_one():
    from annotate.rendering import _PLAIN_ASCII_LINE, _PLAIN_LINE

    for code in range(128):
        char = chr(code)
        assert bool(_PLAIN_ASCII_LINE.fullmatch(char)) == bool(_PLAIN_LINE.fullmatch(char)), code


PLAIN = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(LETTERS),
    st.text(alphabet=ALPHABET, max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(
        st.one_of(PLAIN, st.text(alphabet=ALPHABET + MARKUP, max_size=30), st.just("")),
        max_size=6,
    )
)
def test_a_bulk_write_stores_only_what_a_reader_cannot_make_without_the_parser(texts):
    stored = markdown_html_stored_many(texts)

    converter = rendering._converter
    rendering._converter = None  # a reader that reached the markdown parser fails
    try:
        read = [html_or_rendered(html, text) for html, text in zip(stored, texts, strict=True)]
    finally:
        rendering._converter = converter
    assert read == [markdown_html(t) for t in texts]
    for html, text in zip(stored, texts, strict=True):
        # "" for every plain paragraph (half a candidate row's bytes), the HTML otherwise.
        assert (html == "") == (_plain_paragraph(text) is not None or markdown_html(text) == "")
