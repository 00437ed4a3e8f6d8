"""Column encoders, fitted on the training split only and stored as plain JSON-able state.

Each encoder turns one pandas column into a NumPy array in a single vectorised call. Values the encoder
cannot map (unseen categories, missing numbers) are counted so reports can say how many there were
instead of silently absorbing them.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
import pandas as pd

from msmtrec.errors import DataError

# ------------------------------------------------------------------------------------------ categorical


@dataclass
class VocabEncoder:
    """Value → code in ``1..V``; unseen, rare (< ``min_count``) and missing values → 0."""

    vocabulary: list[str] = field(default_factory=list)
    min_count: int = 1
    kind: str = "vocab"

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary) + 1

    def fit(self, values: pd.Series) -> VocabEncoder:
        counts = values.dropna().value_counts()
        kept = counts[counts >= self.min_count]
        # most frequent first, ties broken by value, so the vocabulary is deterministic
        order = sorted(zip(kept.index.astype(str), kept.to_numpy(), strict=True), key=lambda kv: (-kv[1], kv[0]))
        self.vocabulary = [k for k, _ in order]
        return self

    def _index(self) -> pd.Index:
        # cached: building the hash index of a million-entry vocabulary once, not per batch
        cached = getattr(self, "_cached_index", None)
        if cached is None or len(cached) != len(self.vocabulary):
            cached = pd.Index(self.vocabulary, dtype=object)
            object.__setattr__(self, "_cached_index", cached)
        return cached

    def transform(self, values: pd.Series | np.ndarray) -> tuple[np.ndarray, int]:
        """Codes and the number of non-missing values that fell into the OOV bucket.

        ``values`` is a text Series (files: one vectorised index lookup) or an object array of text, as
        the service passes straight from a request: for those few values a dict lookup per value is
        about ten times cheaper than the index lookup, which first converts them to a pandas string array.
        Both map exactly the vocabulary's strings; anything else (``None``, NaN, unseen text) is 0.
        """
        if isinstance(values, np.ndarray):
            lookup = self._lookup()
            codes = np.fromiter(map(lookup.get, values, repeat(0)), np.int64, len(values))
        else:
            codes = self._index().get_indexer(values).astype(np.int64) + 1
        oov = int(((codes == 0) & np.asarray(pd.notna(values))).sum())
        return codes, oov

    def _lookup(self) -> dict[str, int]:
        cached = getattr(self, "_cached_lookup", None)
        if cached is None or len(cached) != len(self.vocabulary):
            cached = {v: i + 1 for i, v in enumerate(self.vocabulary)}
            object.__setattr__(self, "_cached_lookup", cached)
        return cached


@dataclass
class HashEncoder:
    """Value → ``1 + hash(value) mod buckets`` (stable across processes); missing → 0.

    Hashing has no unknown bucket, so a brand-new id would never show as out-of-vocabulary. To keep the
    cold-start share visible, ``fit`` records the training values (for a streamed fit: those of its
    sample) in a Bloom filter (``seen_bits``, about
    16 bits per distinct value, at most 1 MiB, stored compressed); ``transform`` then counts values never
    seen in training (slightly undercounted: a new value passes as seen with probability about
    ``seen_false_positive``, well under 1 % unless the cap was hit).
    """

    buckets: int = 1000
    kind: str = "hash"
    seen_bits: str = ""
    """Bloom filter of the training values: zlib-compressed, base64 (empty: not recorded, e.g. an old artifact)."""
    seen_size: int = 0
    """Bits in the filter (a power of two)."""
    seen_false_positive: float = 0.0

    @property
    def vocab_size(self) -> int:
        return self.buckets + 1

    def fit(self, values: pd.Series) -> HashEncoder:
        hashed = np.unique(_hash(values.dropna()))
        bits = 1 << int(np.clip(np.ceil(np.log2(max(hashed.size, 1) * 16)), 10, 23))
        self._store(np.zeros(bits, bool), hashed)
        return self

    def add(self, values: pd.Series) -> HashEncoder:
        """Record more training values (a warm start's new window); codes never change."""
        table = self._table()
        if table is not None:
            self._store(table.copy(), np.unique(_hash(values.dropna())))
        return self

    def _store(self, table: np.ndarray, hashed: np.ndarray) -> None:
        for pos in _bloom_positions(hashed, table.size):
            table[pos] = True
        self.seen_size = table.size
        self.seen_bits = base64.b64encode(zlib.compress(np.packbits(table).tobytes(), 6)).decode("ascii")
        self.seen_false_positive = float(table.mean() ** _BLOOM_HASHES)
        object.__setattr__(self, "_cached_table", table)

    def transform(self, values: pd.Series | np.ndarray) -> tuple[np.ndarray, int]:
        """Codes and the number of non-missing values never seen in training (cold start)."""
        values = pd.Series(values, dtype=object) if isinstance(values, np.ndarray) else values
        present = values.notna().to_numpy()
        hashed = _hash(values.fillna(""))
        codes = (hashed % np.uint64(self.buckets)).astype(np.int64) + 1
        return np.where(present, codes, 0), self._unseen(hashed[present])

    def _unseen(self, hashed: np.ndarray) -> int:
        table = self._table()
        if table is None or hashed.size == 0:
            return 0
        seen = np.ones(hashed.size, bool)
        for pos in _bloom_positions(hashed, self.seen_size):
            seen &= table[pos]
        return int((~seen).sum())

    def _table(self) -> np.ndarray | None:
        cached = getattr(self, "_cached_table", None)
        if cached is None and self.seen_bits:
            raw = np.frombuffer(zlib.decompress(base64.b64decode(self.seen_bits)), np.uint8)
            cached = np.unpackbits(raw)[: self.seen_size].astype(bool)
            object.__setattr__(self, "_cached_table", cached)
        return cached


_BLOOM_HASHES = 3


def _hash(values: pd.Series) -> np.ndarray:
    """The stable 64-bit hash both the buckets and the Bloom filter use."""
    return pd.util.hash_array(values.astype(str).to_numpy(dtype=object))


def _bloom_positions(hashed: np.ndarray, bits: int) -> list[np.ndarray]:
    """``_BLOOM_HASHES`` bit positions per hash by double hashing of its two 32-bit halves."""
    low = hashed & np.uint64(0xFFFFFFFF)
    high = (hashed >> np.uint64(32)) | np.uint64(1)
    mask = np.uint64(bits - 1)
    return [((low + np.uint64(i) * high) & mask).astype(np.int64) for i in range(_BLOOM_HASHES)]


# ---------------------------------------------------------------------------------------------- numeric


def to_numeric(values: pd.Series, column: str, where) -> pd.Series:  # noqa: ANN001 - where: callable
    """Numbers or a clear error naming the first non-numeric value's file, line and column."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype(np.float64)
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna() & values.notna()
    if bad.any():
        idx = values.index[bad.to_numpy()][0]
        raise DataError(
            f"{where(idx)}: column {column!r} expected a number, got {values.loc[idx]!r} "
            f"({int(bad.sum())} non-numeric value(s) in this column)"
        )
    return num.astype(np.float64)


@dataclass
class DenseEncoder:
    """Impute, optionally log1p, then standardise with training statistics."""

    transform_name: str = "standardize"
    impute: str = "median"
    fill: float = 0.0
    mean: float = 0.0
    std: float = 1.0
    kind: str = "dense"

    def _pre(self, x: np.ndarray) -> np.ndarray:
        if self.transform_name == "log1p":
            return np.log1p(np.clip(x, 0.0, None))
        return x

    def fit(self, x: np.ndarray) -> DenseEncoder:
        finite = x[np.isfinite(x)]
        if self.impute == "median":
            self.fill = float(np.median(finite)) if finite.size else 0.0
        elif self.impute == "mean":
            self.fill = float(finite.mean()) if finite.size else 0.0
        else:
            self.fill = 0.0
        y = self._pre(np.where(np.isfinite(x), x, self.fill))
        if self.transform_name in ("standardize", "log1p"):
            self.mean = float(y.mean())
            std = float(y.std())
            self.std = std if std > 1e-12 else 1.0
        return self

    def transform(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Encoded values and the number of missing values that were imputed."""
        missing = ~np.isfinite(x)
        y = self._pre(np.where(missing, self.fill, x))
        return ((y - self.mean) / self.std).astype(np.float32), int(missing.sum())


@dataclass
class BucketEncoder:
    """Quantile buckets from training data → a sparse field (codes ``1..n``, 0 for missing)."""

    edges: list[float] = field(default_factory=list)
    buckets: int = 10
    kind: str = "bucket"

    @property
    def vocab_size(self) -> int:
        return len(self.edges) + 2

    def fit(self, x: np.ndarray) -> BucketEncoder:
        finite = x[np.isfinite(x)]
        qs = np.quantile(finite, np.linspace(0, 1, self.buckets + 1)[1:-1]) if finite.size else np.array([])
        self.edges = [float(v) for v in np.unique(qs)]
        return self

    def transform(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        missing = ~np.isfinite(x)
        codes = np.searchsorted(np.asarray(self.edges), np.where(missing, 0.0, x), side="right") + 1
        return np.where(missing, 0, codes).astype(np.int64), int(missing.sum())


# --------------------------------------------------------------------------------------------- sequences


@dataclass
class SequenceEncoder:
    """``"a|b|c"`` → the last ``max_len`` items as codes (0 padding, 1 OOV, 2.. vocabulary)."""

    sep: str = "|"
    max_len: int = 20
    min_count: int = 1
    vocabulary: list[str] = field(default_factory=list)
    kind: str = "sequence"

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary) + 2

    def explode(self, values: pd.Series) -> pd.Series:
        lists = values.fillna("").astype(str).str.split(self.sep, regex=False)
        items = lists.explode()
        return items[items.notna() & (items != "")]

    def fit(self, values: pd.Series) -> SequenceEncoder:
        counts = self.explode(values).value_counts()
        kept = counts[counts >= self.min_count]
        self.vocabulary = sorted(kept.index.astype(str), key=lambda k: (-int(kept[k]), k))
        return self

    def transform(self, values: pd.Series | np.ndarray) -> tuple[np.ndarray, int]:
        values = pd.Series(values, dtype=object) if isinstance(values, np.ndarray) else values
        n = len(values)
        out = np.zeros((n, self.max_len), dtype=np.int64)
        items = self.explode(values.reset_index(drop=True))
        if items.empty:
            return out, 0
        rows = items.index.to_numpy()
        codes = pd.Index(self.vocabulary, dtype=object).get_indexer(items).astype(np.int64) + 2  # unseen → 1
        oov = int((codes == 1).sum())
        # position from the end of each row's list, keeping the most recent max_len items right-aligned
        counts = np.bincount(rows, minlength=n)
        starts = np.cumsum(counts) - counts
        pos_in_row = np.arange(len(rows)) - starts[rows]
        from_end = counts[rows] - 1 - pos_in_row
        keep = from_end < self.max_len
        out[rows[keep], self.max_len - 1 - from_end[keep]] = codes[keep]
        return out, oov


Encoder = VocabEncoder | HashEncoder | DenseEncoder | BucketEncoder | SequenceEncoder
"""Any fitted column encoder: ``transform(values) -> (encoded array, count of OOV or imputed values)``."""

ENCODERS = {
    "vocab": VocabEncoder,
    "hash": HashEncoder,
    "dense": DenseEncoder,
    "bucket": BucketEncoder,
    "sequence": SequenceEncoder,
}


def encoder_from_dict(d: dict):  # noqa: ANN201 - one of the encoder dataclasses
    d = dict(d)
    return ENCODERS[d["kind"]](**d)
