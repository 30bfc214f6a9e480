"""Feature files: PySpacer's npz layout, and the legacy JSON forms.

The npz layout (what PySpacer 0.14.0 writes and reads) is a zip of four
arrays:

* ``meta``: int64 ``[valid_rowcol, npoints, feature_dim]``
* ``rows``, ``cols``: the point positions (uint16 as PySpacer, a wider int
  when a position does not fit); empty float arrays for legacy features
* ``feat``: ``[npoints, feature_dim]`` vectors. PySpacer writes float64. We
  write the precision the vectors were given: float32 from our extractors
  (what the network computes, so nothing is lost and files are half the
  size), float64 from PySpacer-style point features, which then reload
  equal to what was stored. PySpacer reads either.

Our files are byte-for-byte reproducible (fixed zip timestamps), so equal
features give equal bytes and equal hashes.

Legacy JSON files load too: a list of vectors (no positions) or PySpacer's
JSON dict form (``point_features`` of ``{row, col, data}``). The format is
told by the first bytes (zip magic, or ``[``/``{``), never by trying a
parser and catching its error.

The format knows arrays only: :class:`FeatureArrays` out, anything shaped
like :class:`FeaturesLike` in. ``ImageFeatures`` (the data class) loads and
stores itself through it, so storage never imports the data classes.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any, NamedTuple, Protocol

from spacer_worker import config
from spacer_worker.exceptions import FeatureFileError, MessageError, ReadLimitError

_ZIP_MAGIC = (b'PK\x03\x04', b'PK\x05\x06')
_KEYS = ('meta', 'rows', 'cols', 'feat')


class FeatureArrays(NamedTuple):
    """A decoded feature file: ``feat`` is a finite float
    ``[npoints, feature_dim]`` array (as the file holds it); ``rows``/``cols`` int64 positions, or
    None when the file has none (legacy features)."""

    rows: Any
    cols: Any
    feat: Any
    valid_rowcol: bool
    npoints: int


class FeaturesLike(Protocol):
    """What :func:`encode_features` writes (``ImageFeatures`` is one)."""

    valid_rowcol: bool
    npoints: int
    feature_dim: int

    @property
    def rows(self) -> Any: ...

    @property
    def cols(self) -> Any: ...

    def stored_array(self) -> Any: ...


def encode_features(features: FeaturesLike) -> bytes:
    """The npz bytes for ``features``."""
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np

    from spacer_worker.storage.npz import write_archive

    feat = np.asarray(features.stored_array())
    feat = np.ascontiguousarray(
        feat, dtype=np.float32 if feat.dtype == np.float32 else np.float64)
    if features.valid_rowcol:
        rows = _position_array(features.rows)
        cols = _position_array(features.cols)
    else:
        rows = np.array([])
        cols = np.array([])
    meta = np.array([int(bool(features.valid_rowcol)), int(features.npoints),
                     int(features.feature_dim)], dtype=np.int64)
    members = []
    for name, array in zip(_KEYS, (meta, rows, cols, feat), strict=True):
        member = io.BytesIO()
        np.lib.format.write_array(member, array, allow_pickle=False)
        members.append((name + '.npy', member.getvalue()))
    # Deflated at the fastest level: float vectors barely compress (about
    # 8% at any level), while higher levels cost several times the CPU.
    return write_archive(members)


def decode_features(data: bytes, where: str = 'feature file'
                    ) -> FeatureArrays:
    """Read npz or legacy JSON feature bytes; FeatureFileError if malformed."""
    if data[:4] in _ZIP_MAGIC:
        return _decode_npz(data, where)
    stripped = data.lstrip()[:1]
    if stripped in (b'[', b'{'):
        limit = config.get('FEATURE_JSON_MAX_BYTES')
        if len(data) > limit:
            # Parsing costs up to ~20x the text in Python objects.
            raise ReadLimitError(
                f"{where} is a {len(data)}-byte JSON feature file, over the "
                f"FEATURE_JSON_MAX_BYTES limit of {limit}; it is not parsed.")
        return _decode_json(data, where)
    raise FeatureFileError(
        f"{where} is not a feature file: expected an npz (zip) archive or "
        f"legacy JSON, and it is neither.")


def _position_array(values: Any) -> Any:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np

    array = np.asarray(values)
    if array.size and array.min() < 0:
        raise MessageError(
            f"ImageFeatures: point positions must be non-negative, got "
            f"{array.min()}.")
    if not array.size or array.max() <= np.iinfo(np.uint16).max:
        return array.astype(np.uint16)
    # PySpacer uses uint16, which would wrap larger positions silently.
    return array.astype(np.int64)


def _decode_npz(data: bytes, where: str) -> FeatureArrays:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np

    from spacer_worker.storage.npz import MemberTooLarge, read_member

    try:
        fast = _decode_npz_fast(data, where)
        if fast is not None:
            return fast
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            missing = [k for k in _KEYS if k not in archive.files]
            if missing:
                raise FeatureFileError(
                    f"{where} is an npz archive without the "
                    f"{', '.join(missing)} array(s) of a feature file "
                    f"(it has {', '.join(archive.files) or 'none'}).")
            headers = _member_headers(archive.zip, where)
            meta = archive['meta']
            _check_shapes(headers, meta, where)
            # Bounded by the headers just checked; inflated with ISA-L
            # where installed (storage.npz).
            rows, cols, feat = (read_member(archive.zip, k, data,
                                            config.get('FEATURE_ARRAY_MAX_BYTES'))
                                for k in _KEYS[1:])
    except FeatureFileError:
        raise
    except MemberTooLarge as e:
        raise ReadLimitError(
            f"{where}: array {e.name.removesuffix('.npy')!r} would inflate "
            f"to {e.size} bytes ({e.dtype} {e.shape}), over the "
            f"FEATURE_ARRAY_MAX_BYTES limit of "
            f"{config.get('FEATURE_ARRAY_MAX_BYTES')}.") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile,
            zipfile.LargeZipFile, NotImplementedError) as e:
        # Not str(e): numpy quotes the bytes of a bad header.
        raise FeatureFileError(
            f"{where} is a damaged npz archive ({type(e).__name__}).") from e

    return _checked(meta, rows, cols, feat, where)


def _decode_npz_fast(data: bytes, where: str) -> FeatureArrays | None:
    """The common file (four small members, ISA-L installed) in one pass
    per member; None for anything else, which the careful path reads."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    present = set(archive.namelist())
    names = {}
    for key in _KEYS:
        name = key + '.npy' if key + '.npy' in present else key
        if name not in present:
            return None  # the careful path names what is missing
        names[key] = name
    from spacer_worker.storage.npz import UnusualMember, read_small_arrays
    try:
        arrays = read_small_arrays(archive, data, names,
                                   config.get('FEATURE_ARRAY_MAX_BYTES'))
    except UnusualMember:
        return None
    if arrays is None:
        return None
    meta = arrays['meta']
    _check_shapes({k: (a.shape, a.dtype) for k, a in arrays.items()}, meta,
                  where)
    return _checked(meta, arrays['rows'], arrays['cols'], arrays['feat'],
                    where)


def _checked(meta: Any, rows: Any, cols: Any, feat: Any, where: str
             ) -> FeatureArrays:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np

    if meta.shape != (3,) or not np.issubdtype(meta.dtype, np.number):
        raise FeatureFileError(
            f"{where}: 'meta' must hold [valid_rowcol, npoints, feature_dim], "
            f"got {meta.dtype} {meta.shape}.")
    valid_rowcol = bool(meta[0])
    npoints, feature_dim = int(meta[1]), int(meta[2])
    if (feat.ndim != 2 or feat.shape != (npoints, feature_dim)
            or not np.issubdtype(feat.dtype, np.floating)):
        raise FeatureFileError(
            f"{where}: 'feat' must be a float [{npoints}, {feature_dim}] "
            f"array as 'meta' says, got {feat.dtype} {feat.shape}.")
    if npoints == 0:
        raise FeatureFileError(f"{where} holds no points.")
    if valid_rowcol:
        for name, positions in (('rows', rows), ('cols', cols)):
            if positions.shape != (npoints,) or not (
                    np.issubdtype(positions.dtype, np.integer)):
                raise FeatureFileError(
                    f"{where}: '{name}' must be {npoints} integers, got "
                    f"{positions.dtype} {positions.shape}.")
        rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    return _build(rows, cols, feat, valid_rowcol, npoints, where)


def _member_headers(zf: zipfile.ZipFile, where: str) -> dict[str, tuple]:
    """(shape, dtype) of each array, read from its .npy header: a few
    inflated bytes, so a member claiming gigabytes is refused before it is
    inflated (FEATURE_ARRAY_MAX_BYTES)."""
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np

    from spacer_worker.storage.npz import HEADER_READERS as readers

    limit = config.get('FEATURE_ARRAY_MAX_BYTES')
    headers = {}
    names = set(zf.namelist())
    for key in _KEYS:
        with zf.open(key + '.npy' if key + '.npy' in names else key) as member:
            version = np.lib.format.read_magic(member)
            if version not in readers:
                raise FeatureFileError(
                    f"{where}: array {key!r} has .npy format version "
                    f"{version}; feature files use 1.0 or 2.0.")
            shape, _fortran, dtype = readers[version](member)
        if dtype.hasobject:
            raise FeatureFileError(
                f"{where} is a damaged npz archive: array {key!r} holds "
                f"Python objects, which are never unpickled.")
        size = dtype.itemsize
        for n in shape:
            size *= n
        if size > limit:
            raise ReadLimitError(
                f"{where}: array {key!r} would inflate to {size} bytes "
                f"({dtype} {shape}), over the FEATURE_ARRAY_MAX_BYTES limit "
                f"of {limit}.")
        headers[key] = (shape, dtype)
    return headers


def _check_shapes(headers: dict[str, tuple], meta: Any, where: str) -> None:
    # Before 'feat', 'rows' and 'cols' are inflated: their headers must
    # agree with what 'meta' says.
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np

    if meta.shape != (3,) or not np.issubdtype(meta.dtype, np.number):
        raise FeatureFileError(
            f"{where}: 'meta' must hold [valid_rowcol, npoints, feature_dim], "
            f"got {meta.dtype} {meta.shape}.")
    npoints, feature_dim = int(meta[1]), int(meta[2])
    if npoints == 0:
        raise FeatureFileError(f"{where} holds no points.")
    check_point_count(npoints, where)
    shape = headers['feat'][0]
    if shape != (npoints, feature_dim):
        raise FeatureFileError(
            f"{where}: 'feat' must be a float [{npoints}, {feature_dim}] "
            f"array as 'meta' says, got shape {shape}.")
    for name in ('rows', 'cols'):
        if headers[name][0] not in ((npoints,), (0,)):
            raise FeatureFileError(
                f"{where}: '{name}' must be {npoints} integers, got shape "
                f"{headers[name][0]}.")


def _decode_json(data: bytes, where: str) -> FeatureArrays:
    try:
        content = json.loads(data.decode('utf-8'))
    except UnicodeDecodeError as e:
        raise FeatureFileError(
            f"{where} is not UTF-8 JSON (bad byte at offset {e.start}).") from e
    except json.JSONDecodeError as e:
        raise FeatureFileError(
            f"{where} is not valid JSON: {e.msg} at line {e.lineno} column "
            f"{e.colno}.") from e
    if isinstance(content, list):
        # The oldest format: vectors only, no positions.
        check_point_count(len(content), where)
        return _build(None, None, _vectors(content, where), False,
                      len(content), where)
    points = content.get('point_features')
    if not isinstance(points, list) or not all(
            isinstance(p, dict) and 'data' in p for p in points):
        raise FeatureFileError(
            f"{where}: a JSON feature dict needs 'point_features', a list of "
            f"{{'row', 'col', 'data'}} objects.")
    check_point_count(len(points), where)
    valid_rowcol = bool(content.get('valid_rowcol', True))
    feat = _vectors([p['data'] for p in points], where)
    rows = cols = None
    if valid_rowcol:
        try:
            rows = [_int(p['row']) for p in points]
            cols = [_int(p['col']) for p in points]
        except (KeyError, TypeError, ValueError) as e:
            raise FeatureFileError(
                f"{where}: every point needs integer 'row' and 'col' "
                f"({type(e).__name__}).") from e
    npoints = content.get('npoints', len(points))
    dim = content.get('feature_dim', feat.shape[1] if feat.ndim == 2 else 0)
    if npoints != len(points) or dim != feat.shape[1]:
        raise FeatureFileError(
            f"{where}: npoints={npoints!r}, feature_dim={dim!r} do not match "
            f"the {feat.shape[0]} x {feat.shape[1]} vectors.")
    return _build(rows, cols, feat, valid_rowcol, len(points), where)


def check_point_count(npoints: int, where: str) -> None:
    """Refuse a feature file holding more points than FEATURE_MAX_POINTS,
    before its vectors are built (every task reading features comes here)."""
    limit = config.get('FEATURE_MAX_POINTS')
    if npoints > limit:
        raise ReadLimitError(
            f"{where} holds {npoints} points, over the FEATURE_MAX_POINTS "
            f"limit of {limit}.")


def _check_finite(feat: Any, where: str) -> None:
    """Refuse NaN or infinite vectors (from broken weights, or another
    tool): scikit-learn would reject them in a training or a scoring with
    a bare "Input X contains NaN", naming no file (27 us per 200 x 1280)."""
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np

    # One pass, no boolean matrix: a row whose float64 sum is finite holds
    # only finite values (a float64 row that overflows the sum gets the
    # exact check below).
    if np.isfinite(np.add.reduce(feat, axis=1, dtype=np.float64)).all():
        return
    finite = np.isfinite(feat).all(axis=1)
    if not finite.all():
        raise FeatureFileError(
            f"{where}: {int((~finite).sum())} of {len(finite)} feature "
            f"vector(s) hold NaN or infinite values (first: vector "
            f"{int(np.flatnonzero(~finite)[0])}); they can be neither "
            f"trained on nor scored. Re-extract this image's features.")


def _int(value: Any) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


def _vectors(vectors: list, where: str) -> Any:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np

    if not vectors:
        raise FeatureFileError(f"{where} holds no feature vectors.")
    first = vectors[0]
    size = len(vectors) * (len(first) if isinstance(first, list) else 1) * 4
    limit = config.get('FEATURE_ARRAY_MAX_BYTES')
    if size > limit:
        raise ReadLimitError(
            f"{where}: its {len(vectors)} JSON feature vectors would make a "
            f"{size}-byte array, over the FEATURE_ARRAY_MAX_BYTES limit of "
            f"{limit}.")
    try:
        feat = np.array(vectors, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise FeatureFileError(
            f"{where}: feature vectors must be equal-length lists of "
            f"numbers ({type(e).__name__}).") from e
    if feat.ndim != 2 or feat.shape[1] == 0:
        raise FeatureFileError(
            f"{where}: feature vectors must be equal-length, non-empty lists "
            f"of numbers, got shape {feat.shape}.")
    return feat


def _build(rows: Any, cols: Any, feat: Any, valid_rowcol: bool,
           npoints: int, where: str) -> FeatureArrays:
    _check_finite(feat, where)
    return FeatureArrays(rows if valid_rowcol else None,
                         cols if valid_rowcol else None, feat, valid_rowcol,
                         npoints)
