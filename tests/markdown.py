"""What a reader sees of the markdown an element holds: backslash escapes and word joiners (ui.text) removed."""

import re


def shown(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")
