"""Text from outside (a link, an exception, a file name) shown literally where Streamlit renders markdown."""

from __future__ import annotations

import re
import string

# GFM turns bare "http://…", "www.…" and "name@host" into links even when their punctuation is escaped; a word
# joiner (invisible, zero width) after the ":", "www" or "@" keeps them plain text.
_AUTOLINK = re.compile(r"(:)(?=//)|(?i:(www))(?=\.)|(@)")
_JOINER = "\u2060"


def literal(text: object) -> str:
    """`text` as typed in Streamlit's markdown: every ASCII punctuation character backslash-escaped (CommonMark
    allows it for all of them) and autolinks broken, so no link, image, emphasis, maths or colour directive can
    come from a visitor's link into our own boxes."""
    plain = _AUTOLINK.sub(lambda m: m.group(0) + _JOINER, str(text))
    return "".join("\\" + ch if ch in string.punctuation else ch for ch in plain)
