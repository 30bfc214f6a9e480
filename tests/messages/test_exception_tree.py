"""The error tree drawn in exceptions' docstring is the tree in the code."""

from __future__ import annotations

import re

from spacer_worker import exceptions


def test_every_edge_of_the_drawn_tree_is_a_real_subclass():
    stack: list[str] = []
    drawn = set()
    for line in exceptions.__doc__.splitlines():
        m = re.match(r'^    (?:[│ ]*[├└]── )?([A-Z]\w+)\b', line)
        if not m or not hasattr(exceptions, m.group(1)):
            continue
        depth = (m.start(1) - 4) // 4
        stack = stack[:depth] + [m.group(1)]
        drawn.add(m.group(1))
        if depth:
            child, parent = (getattr(exceptions, n) for n in stack[-1:-3:-1])
            assert issubclass(child, parent), f'{child.__name__} under ' \
                                              f'{parent.__name__}'
    # Every error class of the module appears in the drawing.
    classes = {name for name, value in vars(exceptions).items()
               if isinstance(value, type) and issubclass(
                   value, exceptions.SpacerError)}
    assert classes - drawn <= {'URLNotFoundError', 'URLAccessDeniedError',
                               'URLTooLargeError'}
