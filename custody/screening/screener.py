"""The streaming screener: add every record, then ask for the findings."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from numpy.typing import NDArray

from custody.screening.duplicates import exact_representatives, near_duplicate_clusters
from custody.screening.features import Extractor
from custody.screening.keys import Keyring
from custody.screening.table import Table, dump, load, offsets
from custody.screening.triggers import TriggerGroup, TriggerSearch
from custody.screening.types import DEFAULT_CONFIG, KIND_ORDER, Finding, FindingKind, ScreeningConfig

_BATCH = 256
_BATCH_CHARS = 1 << 20
_MERGE_BLOCKS = 32
_EXCERPT_LIMIT = 200
_INT64 = np.iinfo(np.int64)


class _Pending:
    """Records added since the last batch was screened. Their text waits here, in memory
    only, until ``_BATCH`` records or ``_BATCH_CHARS`` characters are pending."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.texts: list[str] = []
        self.labels: list[int] = []
        self.chars = 0

    def __len__(self) -> int:
        return len(self.ids)

    def full(self) -> bool:
        return len(self.ids) >= _BATCH or self.chars >= _BATCH_CHARS

    def append(self, record_id: int, text: str, label: int) -> None:
        self.ids.append(record_id)
        self.texts.append(text)
        self.labels.append(label)
        self.chars += len(text)

    def table(self, extractor: Extractor) -> Table:
        batch = extractor.extract(self.texts)
        return Table(
            ids=np.array(self.ids, dtype=np.int64),
            exact=batch.exact,
            signatures=batch.signatures,
            labels=np.array(self.labels, dtype=np.uint64),
            content=batch.content,
            ngram_lengths=batch.ngram_lengths,
            ngrams=batch.ngrams,
            token_lengths=batch.token_lengths,
            tokens=batch.tokens,
            flag_ids=np.array([self.ids[flag[0]] for flag in batch.flags], dtype=np.int64),
            flag_kinds=np.array([KIND_ORDER.index(flag[1]) for flag in batch.flags], dtype=np.uint8),
            flag_scores=np.array(
                [np.nan if flag[3] is None else flag[3] for flag in batch.flags], dtype=np.float64
            ),
            flag_details=tuple(flag[2] for flag in batch.flags),
        )


class Screener:
    """Screens a corpus record by record, keeping hashes and signatures, never text.

    ``add`` every record (any order, from any number of chunks), then ``findings()``.
    For chunked ingest, each worker screens its chunk and hands over ``state()``;
    ``Screener.from_states`` merges them into the screener that saw every record.
    Pass the dataset version's screening ``key`` (see ``keys.py``); states made under
    different keys or configurations refuse to merge.
    """

    def __init__(self, config: ScreeningConfig = DEFAULT_CONFIG, *, key: bytes | None = None) -> None:
        self.config = config
        self._keyring = Keyring(key)
        self._extractor = Extractor(config, self._keyring)
        self._blocks: list[Table] = []  # merged batches, and loaded states
        self._batches: list[Table] = []
        self._pending = _Pending()

    def __len__(self) -> int:
        return sum(table.size for table in self._blocks + self._batches) + len(self._pending)

    def add(self, record_id: int, text: str, label: str | None = None) -> None:
        """Screen one record. Adding the same record again is harmless; the same id with
        another text or label is an error, reported by ``state`` or ``findings``.

        :raises TypeError: the id is not an integer, the text or label not a string.
        :raises ValueError: the id does not fit in 64 bits.
        """
        if not isinstance(record_id, int | np.integer) or isinstance(record_id, bool):
            raise TypeError("record_id must be an integer")
        if not _INT64.min <= record_id <= _INT64.max:
            raise ValueError("record_id must fit in 64 bits")
        if not isinstance(text, str) or not (label is None or isinstance(label, str)):
            raise TypeError("text must be a string and label a string or None")
        self._pending.append(int(record_id), text, self._keyring.label(label))
        if self._pending.full():
            self._flush()

    def state(self) -> bytes:
        """Everything screened so far, as bytes for ``from_states``: hashes, no text.

        :raises ValueError: a record id was added twice with different texts or labels.
        """
        return dump(self._table(), config=self.config.fingerprint(), key=self._keyring.fingerprint)

    @classmethod
    def from_states(
        cls, config: ScreeningConfig, states: Iterable[bytes], *, key: bytes | None = None
    ) -> Screener:
        """The screener of all the records behind ``states``.

        :raises ScreeningStateError: a state is corrupt or was made under another
            configuration or key.
        """
        screener = cls(config, key=key)
        fingerprint = config.fingerprint()
        for data in states:
            screener._blocks.append(load(data, config=fingerprint, key=screener._keyring.fingerprint))
        return screener

    def findings(
        self, *, allow_excerpt: bool = False, text_of: Callable[[int], str] | None = None
    ) -> list[Finding]:
        """The flagged records, ordered by record id then kind.

        In each duplicate group the lowest id is kept unflagged. Details carry numbers and
        ids, never record text; with ``allow_excerpt`` (for the contributing provider's own
        review), each trigger's detail quotes its sequence (case-folded), read from
        ``text_of(record_id)`` for one record of the group.

        :raises ValueError: a record id was added twice with different texts or labels (the
            same record twice counts once), or ``allow_excerpt`` without ``text_of``.
        """
        if allow_excerpt and text_of is None:
            raise ValueError("allow_excerpt needs text_of to read the records' text")
        table = self._table()
        found = self._record_findings(table)
        unique, duplicates = self._duplicate_findings(table)
        found += duplicates
        found += self._trigger_findings(table, unique, text_of if allow_excerpt else None)
        return sorted(found, key=lambda f: (f.record_id, KIND_ORDER.index(f.kind), f.group or "", f.detail))

    def _flush(self) -> None:
        if len(self._pending):
            self._batches.append(self._pending.table(self._extractor))
            self._pending = _Pending()
        if len(self._batches) >= _MERGE_BLOCKS:
            self._blocks.append(Table.concat(self._batches, self.config.num_perm))
            self._batches = []

    def _table(self) -> Table:
        self._flush()
        table = Table.concat(self._blocks + self._batches, self.config.num_perm).sorted().without_repeats()
        self._blocks, self._batches = [table], []
        return table

    def _record_findings(self, table: Table) -> list[Finding]:
        return [
            Finding(
                record_id=int(record_id),
                kind=KIND_ORDER[int(kind)],
                detail=detail,
                score=None if np.isnan(score) else float(score),
            )
            for record_id, kind, score, detail in zip(
                table.flag_ids, table.flag_kinds, table.flag_scores, table.flag_details, strict=True
            )
        ]

    def _duplicate_findings(self, table: Table) -> tuple[NDArray[np.bool_], list[Finding]]:
        """Exact and near duplicates, and which rows remain as unique records.

        Every duplicate's group is the lowest id of its whole cluster: a copy of a near
        duplicate is an exact duplicate in the near duplicate's cluster."""
        rows = np.arange(table.size)
        kept = exact_representatives(table.exact, table.content)
        near = near_duplicate_clusters(
            table.signatures,
            np.flatnonzero(kept == rows),
            threshold=self.config.near_duplicate_threshold,
            weights=self.config.lsh_weights,
        )
        ids = table.ids.tolist()
        found = []
        for row in np.flatnonzero((kept >= 0) & (kept != rows)).tolist():
            keep = int(kept[row])
            group = str(ids[int(near.root[keep])])
            detail = f"same text as record {ids[keep]} after normalization"
            found.append(Finding(ids[row], FindingKind.EXACT_DUPLICATE, detail, group, 1.0))
        for row in np.flatnonzero((near.root >= 0) & (near.root != rows)).tolist():
            similarity = float(near.similarity[row])
            root, partner = ids[int(near.root[row])], ids[int(near.partner[row])]
            detail = (
                f"near duplicate of record {partner} (estimated Jaccard {similarity:.2f}, "
                f"threshold {self.config.near_duplicate_threshold:.2f}); its cluster keeps record {root}"
            )
            found.append(
                Finding(ids[row], FindingKind.NEAR_DUPLICATE, detail, str(root), round(similarity, 4))
            )
        return near.root == rows, found

    def _trigger_findings(
        self, table: Table, unique: NDArray[np.bool_], text_of: Callable[[int], str] | None
    ) -> list[Finding]:
        search = TriggerSearch(
            self.config,
            ngram_lengths=table.ngram_lengths,
            ngrams=table.ngrams,
            token_offsets=offsets(table.token_lengths),
            tokens=table.tokens,
            labels=table.labels,
            unique=unique,
        )
        found = []
        for group in search.groups():
            detail = self._trigger_detail(group, search.total)
            if text_of is not None:
                excerpt = self._excerpt(group, text_of(int(table.ids[group.rows[0]])))
                detail += f'; sequence: "{excerpt}"' if excerpt else ""
            found += [
                Finding(int(table.ids[row]), FindingKind.TRIGGER_NGRAM, detail, group.reference, group.score)
                for row in group.rows.tolist()
            ]
        return found

    def _trigger_detail(self, group: TriggerGroup, total: int) -> str:
        detail = (
            f"a rare sequence of about {group.tokens} tokens ({group.reference}) recurs in "
            f"{group.unique_records} otherwise unrelated records ({group.unique_records / total:.1%})"
        )
        if group.rare_tokens >= self.config.trigger_min_rare_tokens:
            detail += f"; {group.rare_tokens} of the tokens they share hardly occur elsewhere"
        if group.label_purity is not None and group.label_base_rate is not None:
            detail += (
                f"; {group.label_purity:.0%} of them carry the same label value "
                f"(in the corpus: {group.label_base_rate:.0%})"
            )
        return detail

    def _excerpt(self, group: TriggerGroup, text: str) -> str:
        folded, starts, ends, hashes = self._extractor.sequence_hashes(text)
        hits = np.flatnonzero(np.isin(hashes, np.fromiter(group.ngrams, dtype=np.uint32)))
        if hits.size == 0:
            return ""
        # The longest run of consecutive matching n-grams is the sequence itself.
        breaks = np.flatnonzero(np.diff(hits) != 1)
        run_starts = np.concatenate([[0], breaks + 1])
        run_ends = np.concatenate([breaks, [hits.size - 1]])
        best = int(np.argmax(run_ends - run_starts))
        first, last = int(hits[run_starts[best]]), int(hits[run_ends[best]]) + self.config.trigger_tokens - 1
        return folded[int(starts[first]) : int(ends[last])][:_EXCERPT_LIMIT]
