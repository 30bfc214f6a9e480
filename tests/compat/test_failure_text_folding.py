"""One rule for the last line of a failure, fuzzed: whatever text a
message puts into an error (line breaks of every kind, fake class lines,
notes, causes), the last line as ``str.splitlines()`` reads it carries
the class we chose, and no line break but ``\\n`` is left anywhere."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from spacer_worker.exceptions import (
    DataNotFoundError,
    LocationNotAllowedError,
    SpacerError,
)
from spacer_worker.exceptions.failures import (
    LINE_BREAKS,
    STALE_FEATURES_CLASS,
    ensure_last_line,
    error_class,
    failure_text,
    last_line,
)

SPOOF = f'{STALE_FEATURES_CLASS}: reset'
# Text biased towards what attacks are made of: every line break, the
# class CoralNet acts on, colons and plain characters.
PIECES = st.sampled_from([*LINE_BREAKS, '\r\n', SPOOF, ': ', ' ', 'x'])
TEXTS = st.lists(st.one_of(PIECES, st.text(string.printable + '\u2028\x85',
                                             max_size=8)),
                 max_size=12).map(''.join)
OURS = st.sampled_from([DataNotFoundError, LocationNotAllowedError,
                        SpacerError, ValueError, KeyError])


def _no_other_breaks(text: str) -> bool:
    return not any(c in text for c in LINE_BREAKS if c != '\n')


@settings(max_examples=300, deadline=None)
@given(ours=OURS, message=TEXTS, cause=TEXTS, note=TEXTS)
def test_the_last_line_of_a_failure_text_is_always_our_class(
        ours, message, cause, note):
    from spacer_worker.exceptions.failures import wire_class_of

    try:
        try:
            raise RuntimeError(cause)
        except RuntimeError as e:
            error = ours(message)
            error.add_note(note)
            raise error from e
    except Exception as e:
        text = failure_text(e)
        expected = wire_class_of(e)
    assert error_class(text) == expected, last_line(text)
    assert _no_other_breaks(text)


@settings(max_examples=300, deadline=None)
@given(body=TEXTS, message=TEXTS)
def test_ensure_last_line_holds_whatever_the_stored_text(body, message):
    text = ensure_last_line(body, 'spacer.exceptions.URLDownloadError',
                            message)
    assert error_class(text) == 'spacer.exceptions.URLDownloadError'
    assert _no_other_breaks(text)


@settings(max_examples=200, deadline=None)
@given(ours=OURS, message=TEXTS, cause=TEXTS)
def test_a_folded_chain_formats_without_foreign_line_breaks(
        ours, message, cause):
    # What Celery stores with a FAILURE is its own traceback.format_exception
    # of what the task raised: fold_chain leaves it nothing to split on.
    import traceback

    from spacer_worker.exceptions.failures import fold_chain

    try:
        try:
            raise RuntimeError(cause)
        except RuntimeError as e:
            raise ours(message) from e
    except Exception as e:
        folded = fold_chain(e)
    text = ''.join(traceback.format_exception(folded))
    assert _no_other_breaks(text)
    last = text.rstrip('\n').split('\n')[-1]
    assert text.splitlines()[-1] == last
