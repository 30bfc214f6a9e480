"""The house stays navigable: PySpacer's twelve names plus at most ten
entries of our own at the top of the package, and no import circle
anywhere in it, counting every import grimp sees (call-time ones and
those under TYPE_CHECKING too)."""

from __future__ import annotations

import grimp
import networkx

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
    edges = networkx.DiGraph()
    for module in graph.modules:
        edges.add_node(module)
        for imported in graph.find_modules_directly_imported_by(module):
            edges.add_edge(module, imported)
    return [component for component
            in networkx.strongly_connected_components(edges)
            if len(component) > 1]


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
