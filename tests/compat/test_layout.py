"""The house stays navigable: PySpacer's twelve names plus at most ten
entries of our own at the top of the package, and no import circle
anywhere in it, counting every import grimp sees (call-time ones and
those under TYPE_CHECKING too)."""

from __future__ import annotations

import grimp

from tests.services import REPO

PYSPACER_NAMES = {'aws', 'config', 'data_classes', 'exceptions', 'extractors',
                  'mailman', 'messages', 'storage', 'task_utils', 'tasks',
                  'train_classifier', 'train_utils'}
OUR_LIMIT = 10


def test_the_top_level_holds_pyspacers_names_and_at_most_ten_of_ours():
    entries = {path.name.removesuffix('.py')
               for path in (REPO / 'spacer_worker').iterdir()
               if path.name not in ('__init__.py', 'py.typed', '__pycache__')}
    assert PYSPACER_NAMES <= entries
    ours = sorted(entries - PYSPACER_NAMES)
    assert len(ours) <= OUR_LIMIT, ours


def _circles(graph: grimp.ImportGraph) -> list[set[str]]:
    """The strongly connected components of more than one module."""
    edges = {m: graph.find_modules_directly_imported_by(m)
             for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(start: str) -> None:
        # Tarjan's algorithm without recursion: (module, its edges left).
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(edges[target])))
                    break
                if target in on_stack:
                    low[module] = min(low[module], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[module])
                if low[module] == index[module]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == module:
                            break
                    if len(component) > 1:
                        found.append(component)

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def test_no_import_circle_counting_every_import():
    graph = grimp.build_graph('spacer_worker',
                              exclude_type_checking_imports=False,
                              cache_dir=None)
    assert _circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    # The check above would pass vacuously if it could not see one.
    graph = grimp.ImportGraph()
    for a, b in (('p.a', 'p.b'), ('p.b', 'p.c'), ('p.c', 'p.a'),
                 ('p.c', 'p.d')):
        graph.add_import(importer=a, imported=b)
    assert _circles(graph) == [{'p.a', 'p.b', 'p.c'}]
