"""Suggested commands in messages and hints: one place that spells them, so each is copy-pasteable.

A project named `qa cats` must come out as `loradeck prep 'qa cats'`, not `loradeck prep qa cats`
(which the shell splits into two arguments). Placeholders a person fills in (`FOLDER`, `WORD`) are
written in capitals and pass through unquoted.
"""

from __future__ import annotations

import shlex

PROGRAM = "loradeck"


def command(*args: object) -> str:
    """`loradeck ARGS...` with every argument shell-quoted where it needs it (None is left out)."""
    return shlex.join([PROGRAM, *(str(a) for a in args if a is not None)])
