"""Every error spacer_worker raises on purpose.

The tree splits errors a retry cannot fix from errors a retry may fix, so
the task layer retries only the second kind::

    SpacerError
    ├── JobFailedError                 (client) a job ended failed/cancelled
    ├── ResultLostError                (client) a job's result expired/lost
    ├── RecordError                    (client) a record read back from Redis
    │                                  is malformed, oversized or forged
    ├── URLDownloadError               any URL failure (both kinds below)
    │   ├── URLUnusableError           also a PermanentError (see below)
    │   └── URLUnavailableError        also a StorageUnavailableError
    ├── PermanentError                 bad input or state: never retried
    │   ├── ConfigError                a setting is missing or malformed
    │   ├── MessageError               a message or payload is malformed
    │   │   ├── UnknownClassError      a class_path outside the allowlist (ImportError)
    │   │   │   ├── ClassNotFoundError     no such class of ours
    │   │   │   └── NotASubclassError      ours, but the wrong kind (TypeError)
    │   │   ├── MissingKeyError        a message's JSON lacks a key (KeyError)
    │   │   ├── PayloadError           a stored-payload reference refused
    │   │   ├── RowColumnInvalidError  point not integer / out of image
    │   │   └── InvalidLocationError   DataLocation that cannot be used
    │   │       └── StorageReadOnlyError  write to read-only storage (url)
    │   ├── DataNotFoundError          key/object/URL does not exist (404)
    │   │   └── MemoryKeyNotFoundError   memory key not held (KeyError)
    │   ├── StorageAccessDeniedError   credentials/permission refused (403)
    │   │   └── LocationNotAllowedError  outside the operator's allowlists
    │   ├── URLUnusableError           URL unusable: bad status, too big
    │   ├── DataLimitError             image/points over configured limits
    │   │   ├── ReadLimitError         object larger than its backend's limit
    │   │   └── MessageLimitError      message over a bound (also MessageError)
    │   ├── ImageDecodeError           bytes are not a readable image
    │   ├── FeatureFileError           feature file unreadable/malformed
    │   ├── ClassifierLoadError        pickle unreadable or wrong type
    │   │   ├── UnsafePickleError      pickle makes a forbidden object
    │   │   └── ClassifierTooLargeError  over CLASSIFIER_MAX_BYTES (also a
    │   │                              DataLimitError)
    │   ├── HashMismatchError          downloaded weights fail their sha256
    │   ├── WeightsLoadError           extractor weights unreadable/wrong
    │   │                              shape/not finite
    │   ├── NonFiniteFeaturesError     NaN/inf features, even in float64
    │   ├── RowColumnMismatchError     labels/features point sets differ
    │   ├── RowColumnMissingError      a labelled point has no feature
    │   ├── OutputNotPublishedError    a staged output was gone at commit:
    │   │                              the job fails, nothing says success
    │   ├── TrainingLabelsError        too few labels/classes to train
    │   └── ExtractorNotSupportedError extractor cannot run here (Caffe)
    └── TransientError                 may succeed later: retried
        ├── StorageUnavailableError    timeouts, resets, throttling, 5xx
        │   └── URLUnavailableError    URL: timeout, reset, 5xx
        └── ExtractionServerError      the worker's shared network process
                                       is down, restarting or failed a batch

URLUnusableError has three narrower
kinds that also carry the generic meaning: URLNotFoundError (404/410, a
DataNotFoundError), URLAccessDeniedError (401/403, a
StorageAccessDeniedError), URLTooLargeError (over URL_MAX_BYTES, a
DataLimitError).

URLDownloadError is the common base of the two URL errors, so callers can
catch every URL failure at once while retries still see the split.

PySpacer's exception names are kept so ``except`` clauses port unchanged.

On the wire (``JobReturnMsg.error_message``, a task's FAILURE) every error
is shown under PySpacer's class path, because CoralNet sorts failures by the
last line of that text. ``wire_class`` on each class below is that one
table; a new subclass inherits its parent's entry (the URL errors all read
``spacer.exceptions.URLDownloadError``). :mod:`spacer_worker.exceptions.failures`
turns an error into that text; our own class stays in the traceback above
the last line.
"""

from __future__ import annotations


class SpacerError(Exception):
    """Base of every error raised on purpose by spacer_worker."""

    wire_class = 'RuntimeError'


class PermanentError(SpacerError):
    """The input or state is wrong; retrying the same task cannot help."""

    wire_class = 'ValueError'


class TransientError(SpacerError):
    """A dependency failed in a way that may pass; the task may be retried."""

    wire_class = 'ConnectionError'


class ConfigError(PermanentError):
    wire_class = 'spacer.exceptions.ConfigError'


class MessageError(PermanentError, ValueError, AssertionError):
    """A message field has a wrong type or value; names field and value.

    Also an AssertionError: PySpacer checks messages with ``assert``, so
    code written against it catches AssertionError for a bad message.
    """

    wire_class = 'ValueError'


class UnknownClassError(MessageError, ImportError):
    """A class_path is not in the extractor/trainer allowlist. Also an
    ImportError: PySpacer imports any class path, so code written against
    it expects that for a module it cannot have."""


# Where PySpacer's import would have failed otherwise (told from our own
# modules already loaded; nothing is imported to tell).
class ClassNotFoundError(UnknownClassError):
    """The class_path names no class in its (our own) module (PySpacer:
    AttributeError, which cannot share a base with ImportError)."""


class NotASubclassError(UnknownClassError, TypeError):
    """The class_path names something that is not the kind asked for."""


class MissingKeyError(MessageError, KeyError):
    """A message's JSON lacks a required key: a KeyError too, as PySpacer's
    ``data['key']`` raises (its message unquoted, unlike KeyError's)."""

    wire_class = 'KeyError'
    __str__ = Exception.__str__


class PayloadError(MessageError):
    """A stored-payload reference (spacer_worker.celery.payloads) that a worker
    must not or cannot follow: outside PAYLOAD_LOCATION, too big, changed."""


class InvalidLocationError(MessageError):
    # A MessageError: a bad location in a message is a malformed message
    # (decoding raises MessageError subclasses only).
    wire_class = 'ValueError'


class StorageReadOnlyError(InvalidLocationError, TypeError):
    # Also a TypeError: PySpacer's URL storage raises that for a write.
    wire_class = 'TypeError'


class DataNotFoundError(PermanentError, FileNotFoundError):
    wire_class = 'FileNotFoundError'


class MemoryKeyNotFoundError(DataNotFoundError, KeyError):
    """A memory-storage key this process does not hold: PySpacer's memory
    storage raises KeyError there."""
    wire_class = 'KeyError'


class StorageAccessDeniedError(PermanentError, PermissionError):
    wire_class = 'PermissionError'


class URLDownloadError(SpacerError):
    """A URL could not be downloaded; see the two subclasses below.

    Built as in PySpacer too: ``URLDownloadError(message, original_error)``.
    """

    wire_class = 'spacer.exceptions.URLDownloadError'

    def __init__(self, message: str = '',
                 original_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.original_error = original_error

    def __str__(self) -> str:
        if self.original_error is None:
            return super().__str__()
        return (f'{self.message} / Details - '
                f'{type(self.original_error).__name__}: '
                f'{self.original_error}')


class URLUnusableError(URLDownloadError, PermanentError):
    """The URL answered 4xx, is too large, or has an unsupported scheme."""


class DataLimitError(PermanentError):
    wire_class = 'spacer.exceptions.DataLimitError'


class LocationNotAllowedError(StorageAccessDeniedError):
    """A broker message named storage its worker's operator did not allow
    (FILESYSTEM_*_ROOTS, S3_*_BUCKETS), or an output that is an input."""


class ReadLimitError(DataLimitError):
    """An object is larger than its backend's read limit
    (FILESYSTEM_MAX_BYTES, S3_MAX_BYTES) or a feature array than
    FEATURE_ARRAY_MAX_BYTES."""


class MessageLimitError(DataLimitError, MessageError):
    """A broker message is over a bound: its size, labels, epochs,
    hidden-layer sizes or tasks per job."""


class ImageDecodeError(PermanentError):
    wire_class = 'PIL.UnidentifiedImageError'


class FeatureFileError(PermanentError):
    wire_class = 'ValueError'


class ClassifierLoadError(PermanentError):
    wire_class = '_pickle.UnpicklingError'


class UnsafePickleError(ClassifierLoadError):
    pass


class ClassifierTooLargeError(ClassifierLoadError, DataLimitError):
    """A classifier pickle is over the CLASSIFIER_MAX_BYTES setting."""


class HashMismatchError(PermanentError):
    wire_class = 'spacer.exceptions.HashMismatchError'


class WeightsLoadError(PermanentError):
    """Extractor weights are not a loadable file of the expected network."""

    wire_class = 'RuntimeError'


class NonFiniteFeaturesError(PermanentError):
    """The network gives NaN or infinite features even in float64; a
    feature file must never hold them (training and scoring would fail far
    from the cause)."""

    wire_class = 'RuntimeError'


class RowColumnInvalidError(MessageError):
    # A MessageError too: rowcols come from the message.
    wire_class = 'spacer.exceptions.RowColumnInvalidError'


class RowColumnMismatchError(PermanentError, ValueError):
    wire_class = 'spacer.exceptions.RowColumnMismatchError'


class RowColumnMissingError(PermanentError, ValueError):
    wire_class = 'spacer.exceptions.RowColumnMissingError'


class TrainingLabelsError(PermanentError, ValueError):
    wire_class = 'spacer.exceptions.TrainingLabelsError'


class ExtractorNotSupportedError(PermanentError):
    wire_class = 'spacer.exceptions.ConfigError'


class OutputNotPublishedError(PermanentError):
    """A run's staged output was gone when its commit moved the outputs
    into place: the job fails as a whole (commit is all or nothing) and no
    result says it succeeded. PySpacer's write would have raised
    FileNotFoundError; an admin error for CoralNet."""

    wire_class = 'FileNotFoundError'


class StorageUnavailableError(TransientError):
    """Timeouts, connection resets, throttling and 5xx answers."""

    wire_class = 'ConnectionError'


class ExtractionServerError(TransientError):
    """The worker's shared network server (EXTRACT_SHARED_NETWORK) could
    not be reached, went away mid-task or failed a batch; the worker's main
    process restarts it, so a retry may pass."""

    wire_class = 'RuntimeError'


class URLUnavailableError(URLDownloadError, StorageUnavailableError):
    """The URL timed out, reset the connection or answered 5xx."""


class URLNotFoundError(URLUnusableError, DataNotFoundError):
    """The URL answered 404 or 410."""


class URLAccessDeniedError(URLUnusableError, StorageAccessDeniedError):
    """The URL answered 401 or 403."""


class URLTooLargeError(URLUnusableError, DataLimitError):
    """The download is larger than the URL_MAX_BYTES setting."""


class JobFailedError(SpacerError):
    """Client side: a job ended in FAILURE or was cancelled, and its error
    is not one of the types above (time limit, lost worker...)."""

    wire_class = 'RuntimeError'

    def __init__(self, message: str, error_type: str | None = None,
                 traceback: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.traceback = traceback


class ResultLostError(SpacerError):
    """Client side: a job's record is gone from the result backend (the
    result expired before it was read, or the backend lost its data)."""

    wire_class = 'spacer_worker.exceptions.ResultLostError'


class RecordError(SpacerError):
    """Client side: a record read back from Redis (a result, the queue's
    books, a dedupe key) is malformed, too large or deep, compressed, or
    belongs to another job. It fails only its own job."""

    wire_class = 'spacer_worker.exceptions.RecordError'
