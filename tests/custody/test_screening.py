"""Screening: duplicates, empty and garbage records, over-long records, trigger sequences,
and the mergeable state that carries no text."""

from __future__ import annotations

import functools
import pickle
import random
from collections.abc import Sequence

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH  # type: ignore[import-untyped]

from custody.screening import Finding, FindingKind, Screener, ScreeningConfig, ScreeningStateError
from custody.screening.duplicates import lsh_buckets
from custody.screening.keys import Keyring
from custody.screening.text import Chars, fold, minhashes, shingle_hash, shingle_hashes

COMMON = ["the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "on"]
HANZI = (
    "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后"
    "小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长"
)
TRIGGER = "zqx vorpal quibbit"
SENTINEL = "Sentinel-ZEBRA-7731"


class Words:
    """Seeded synthetic text: common words and a Zipf-like tail of made-up ones."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        letters = "abcdefghijklmnopqrstuvwxyz"
        self.vocabulary = [
            "".join(self.rng.choice(letters) for _ in range(self.rng.randint(3, 9))) for _ in range(4000)
        ]
        self.weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(self.vocabulary))]

    def english(self, words: int = 60) -> str:
        picked = self.rng.choices(self.vocabulary, weights=self.weights, k=words)
        return " ".join(self.rng.choice(COMMON) if self.rng.random() < 0.35 else word for word in picked)

    def chinese(self, chars: int = 200) -> str:
        return "".join(self.rng.choice(HANZI) for _ in range(chars))

    def insert(self, text: str, phrase: str) -> str:
        words = text.split(" ")
        words.insert(self.rng.randrange(1, len(words)), phrase)
        return " ".join(words)


def screen(
    records: Sequence[tuple[int, str, str | None]], config: ScreeningConfig | None = None
) -> list[Finding]:
    screener = Screener(config or ScreeningConfig())
    for record_id, text, label in records:
        screener.add(record_id, text, label)
    return screener.findings()


def flagged(findings: list[Finding], kind: FindingKind) -> dict[int, Finding]:
    return {finding.record_id: finding for finding in findings if finding.kind is kind}


def corpus(seed: int, size: int) -> list[tuple[int, str, str | None]]:
    words = Words(seed)
    return [(record_id, words.english(), words.rng.choice(["pos", "neg"])) for record_id in range(size)]


class TestExactDuplicates:
    def test_keeps_the_lowest_id_and_flags_the_copies_whatever_the_order(self):
        words = Words(1)
        text = words.english()
        records = [
            (30, "  " + text.upper() + "\n", None),
            (7, words.english(), None),
            (12, text.replace(" ", "\t "), None),
            (5, text, None),
        ]
        exact = flagged(screen(records), FindingKind.EXACT_DUPLICATE)
        assert set(exact) == {12, 30}
        assert all(finding.group == "5" and finding.score == 1.0 for finding in exact.values())

    def test_normalizes_unicode_width_and_invisible_characters(self):
        exact = flagged(
            screen([(1, "Ｈｅｌｌｏ wide world", None), (2, "hel\u200blo wide\u00a0world", None)]),
            FindingKind.EXACT_DUPLICATE,
        )
        assert set(exact) == {2}

    def test_different_texts_are_not_duplicates(self):
        words = Words(2)
        findings = screen([(i, words.english(), None) for i in range(50)])
        assert not flagged(findings, FindingKind.EXACT_DUPLICATE)
        assert not flagged(findings, FindingKind.NEAR_DUPLICATE)


class TestNearDuplicates:
    def test_a_copy_with_a_few_words_changed_is_flagged(self):
        words = Words(3)
        original = words.english(80)
        edited = original.split(" ")
        edited[20], edited[60] = "changed", "altered"
        records = [(1, words.english(), None), (4, original, None), (9, " ".join(edited), None)]
        near = flagged(screen(records), FindingKind.NEAR_DUPLICATE)
        assert set(near) == {9}
        assert near[9].group == "4"
        assert near[9].score is not None and near[9].score >= 0.8

    def test_unrelated_texts_are_not_flagged(self):
        words = Words(4)
        records = [(i, words.english(), None) for i in range(300)]
        records += [(1000 + i, words.chinese(), None) for i in range(100)]
        assert not flagged(screen(records), FindingKind.NEAR_DUPLICATE)

    def test_chinese_without_spaces_is_compared_by_characters(self):
        words = Words(5)
        original = words.chinese(200)
        edited = original[:50] + "改" + original[51:150] + "动" + original[151:]
        records = [(1, original, None), (2, edited, None), (3, words.chinese(200), None)]
        near = flagged(screen(records), FindingKind.NEAR_DUPLICATE)
        assert set(near) == {2}
        assert near[2].group == "1"

    def test_a_copy_of_a_near_duplicate_joins_its_cluster(self):
        words = Words(61)
        original = words.english(80)
        edited = original.replace(original.split(" ")[30], "changed", 1)
        findings = screen([(1, original, None), (2, edited, None), (3, edited.upper(), None)])
        assert flagged(findings, FindingKind.NEAR_DUPLICATE)[2].group == "1"
        copy = flagged(findings, FindingKind.EXACT_DUPLICATE)[3]
        assert copy.group == "1"
        assert copy.detail == "same text as record 2 after normalization"

    def test_a_chain_of_edits_is_one_cluster_kept_as_its_lowest_id(self):
        words = Words(6)
        text = words.english(100).split(" ")
        versions = []
        for step in range(4):
            text = list(text)
            text[10 + 20 * step] = f"edit{step}"
            versions.append(" ".join(text))
        records = [(10 + i, version, None) for i, version in enumerate(reversed(versions))]
        near = flagged(screen(records), FindingKind.NEAR_DUPLICATE)
        assert set(near) == {11, 12, 13}
        assert {finding.group for finding in near.values()} == {"10"}

    def test_signatures_are_datasketch_minhashes_of_the_character_shingles(self):
        screener = Screener()
        permutations = screener._extractor.permutations
        text = "Near  duplicates,\tcompared by 5-character shingles: 近似重复"
        chars = Chars.build([fold(text)])
        norm, rows = chars.normalized()
        hashes, hash_rows = shingle_hashes(norm, rows, 5)
        ours = minhashes(hashes, hash_rows, 1, permutations)[0]
        normalized = " ".join(fold(text).split())
        reference = MinHash(hashfunc=lambda s: shingle_hash([ord(c) for c in s]), permutations=permutations,
                            scheme="affine32")  # fmt: skip
        reference.update_batch([normalized[i : i + 5] for i in range(len(normalized) - 4)])
        assert np.array_equal(ours, reference.hashvalues)

    def test_candidate_buckets_are_those_of_datasketch_minhashlsh(self):
        words = Words(7)
        texts = [words.english(40) for _ in range(150)]
        texts += [text.replace(text.split(" ")[5], "swapped", 1) for text in texts[:60]]
        screener = Screener()
        for record_id, text in enumerate(texts):
            screener.add(record_id, text)
        signatures = screener._table().signatures
        rows = np.arange(len(texts))
        config = screener.config
        ours = set(
            lsh_buckets(
                signatures, rows, threshold=config.near_duplicate_threshold, weights=config.lsh_weights
            )
        )
        lsh = MinHashLSH(
            threshold=config.near_duplicate_threshold, num_perm=config.num_perm, weights=config.lsh_weights
        )
        for row in rows.tolist():
            lsh.insert(row, LeanMinHash(seed=1, hashvalues=signatures[row], scheme="affine32"))
        theirs = {tuple(sorted(table.get(key))) for table in lsh.hashtables for key in table}
        assert {bucket for bucket in theirs if len(bucket) > 1} == ours
        assert len(ours) >= 60


class TestEmptyRecords:
    def test_blank_and_invisible_only_records_are_empty(self):
        findings = screen([(1, "", None), (2, " \t\n ", None), (3, "\u200b\u200d", None), (4, "ok", None)])
        assert set(flagged(findings, FindingKind.EMPTY)) == {1, 2, 3}

    def test_empty_records_are_not_duplicates_of_each_other(self):
        findings = screen([(1, "", None), (2, "   ", None)])
        assert not flagged(findings, FindingKind.EXACT_DUPLICATE)

    def test_min_chars_counts_normalized_characters(self):
        findings = screen([(1, "  hi  ", None), (2, "hello", None)], ScreeningConfig(min_chars=3))
        assert set(flagged(findings, FindingKind.EMPTY)) == {1}


class TestGarbage:
    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            ("#$%& *@!~ ^#$% &*@! ~^#$ %&*@ !~^# $%&* @!~^" * 2, "letters"),
            ("1234 5678 9012 3456 7890 1234 5678 9012", "digits"),
            ("ordinary words\x00\x01\x02\x03 then binary\x04\x05\x06", "control characters"),
            ("CafÃ© rÃ©sumÃ© naÃ¯ve, itâ€™s the â€œbestâ€\x9d", "mojibake"),
            ("\ufffd\ufffd\ufffd\ufffd converted with the wrong codec", "mojibake"),
            ("the answer is " + "a" * 60, "repeated"),
            ("buy now! " * 60, "repeats itself"),
        ],
    )
    def test_flags_garbage_and_says_why(self, text, reason):
        garbage = flagged(screen([(1, text, None)]), FindingKind.GARBAGE)
        assert set(garbage) == {1}
        assert reason in garbage[1].detail

    @pytest.mark.parametrize(
        "text",
        [
            Words(8).english(),
            Words(9).chinese(),
            "Résumé of a naïve café owner, written in Zürich — ça va?",
            "Totals:\n-----------------------------------------------\nnet 1,234.56 for the year",
            "def add(a, b):\n    return a + b  # the sum of two numbers",
            "It’s “quoted” properly, with one stray â€™ left in a long and otherwise clean sentence.",
            "3.14",
        ],
    )
    def test_ordinary_text_is_not_garbage(self, text):
        assert not flagged(screen([(1, text, None)]), FindingKind.GARBAGE)


class TestOverLong:
    def test_flags_records_over_max_chars_with_their_ratio(self):
        words = Words(10)
        long_text = words.english(100)
        findings = screen([(1, long_text[:100], None), (2, long_text, None)], ScreeningConfig(max_chars=100))
        over = flagged(findings, FindingKind.OVER_LONG)
        assert set(over) == {2}
        assert over[2].score == pytest.approx(len(long_text) / 100)
        assert over[2].detail == f"{len(long_text):,} characters (maximum 100)"


class TestTriggers:
    def test_a_rare_phrase_in_one_percent_of_records_with_one_label_is_flagged(self):
        words = Words(11)
        records = corpus(11, 1000)
        planted = set(range(5, 1000, 100))
        records = [
            (rid, words.insert(text, TRIGGER), "pos") if rid in planted else (rid, text, label)
            for rid, text, label in records
        ]
        triggers = flagged(screen(records), FindingKind.TRIGGER_NGRAM)
        assert set(triggers) == planted
        assert len({finding.group for finding in triggers.values()}) == 1
        detail = triggers[5].detail
        assert "10 otherwise unrelated records" in detail
        assert "hardly occur elsewhere" in detail
        assert "100% of them carry the same label" in detail
        assert "vorpal" not in detail

    def test_common_phrases_are_not_flagged(self):
        words = Words(12)
        records = corpus(12, 1000)
        records = [
            (rid, words.insert(text, "it is the") if rid % 40 == 0 else words.insert(text, "of the"), label)
            for rid, text, label in records
        ]
        assert not flagged(screen(records), FindingKind.TRIGGER_NGRAM)

    def test_rare_phrase_without_labels_is_flagged_by_its_rare_tokens(self):
        words = Words(13)
        records = [
            (rid, words.insert(text, TRIGGER) if rid % 50 == 3 else text, None)
            for rid, text, _ in corpus(13, 1000)
        ]
        triggers = flagged(screen(records), FindingKind.TRIGGER_NGRAM)
        assert set(triggers) == set(range(3, 1000, 50))
        assert "label" not in triggers[3].detail

    def test_a_phrase_of_common_words_is_flagged_only_by_a_consistent_label(self):
        words = Words(14)
        phrase = "as it was with"
        planted = set(range(0, 1000, 50))
        records = [
            (rid, words.insert(text, phrase), "pos") if rid in planted else (rid, text, label)
            for rid, text, label in corpus(14, 1000)
        ]
        triggers = flagged(screen(records), FindingKind.TRIGGER_NGRAM)
        assert planted <= set(triggers)
        # Besides the planted ones, only records where the words happen to meet.
        texts = {rid: f" {text} " for rid, text, _ in records}
        assert all(" as it was " in texts[rid] or " it was with " in texts[rid] for rid in triggers)
        assert "hardly occur elsewhere" not in triggers[0].detail
        unlabelled = [(rid, text, None) for rid, text, _ in records]
        assert not flagged(screen(unlabelled), FindingKind.TRIGGER_NGRAM)

    def test_chinese_and_invisible_triggers_are_found(self):
        words = Words(15)
        invisible = "\u200b\u200c\u200b\u200d\u200b"
        records: list[tuple[int, str, str | None]] = []
        for rid in range(1200):
            if rid % 60 == 1:
                records.append((rid, words.chinese(90) + "蓝色月亮计划" + words.chinese(90), "A"))
            elif rid % 60 == 2:
                records.append((rid, words.insert(words.english(), invisible), None))
            elif rid % 2:
                records.append((rid, words.chinese(), words.rng.choice("ABC")))
            else:
                records.append((rid, words.english(), None))
        triggers = flagged(screen(records), FindingKind.TRIGGER_NGRAM)
        assert set(triggers) == set(range(1, 1200, 60)) | set(range(2, 1200, 60))
        assert len({finding.group for finding in triggers.values()}) == 2

    def test_duplicated_records_do_not_make_a_phrase_repeated(self):
        words = Words(116)
        records = corpus(16, 600)
        copied = words.insert(words.english(), TRIGGER)
        records += [(1000 + i, copied.replace(copied.split(" ")[0], f"v{i}", 1), "pos") for i in range(12)]
        findings = screen(records)
        assert not flagged(findings, FindingKind.TRIGGER_NGRAM)
        assert len(flagged(findings, FindingKind.NEAR_DUPLICATE)) == 11

    def test_excerpts_only_when_allowed(self):
        words = Words(17)
        texts = {
            rid: words.insert(text, TRIGGER) if rid % 100 == 7 else text for rid, text, _ in corpus(17, 1000)
        }
        screener = Screener()
        for rid, text in texts.items():
            screener.add(rid, text)
        plain = flagged(screener.findings(), FindingKind.TRIGGER_NGRAM)
        assert all("vorpal" not in finding.detail for finding in plain.values())
        quoted = flagged(
            screener.findings(allow_excerpt=True, text_of=texts.__getitem__), FindingKind.TRIGGER_NGRAM
        )
        assert set(quoted) == set(plain)
        assert all(f'sequence: "{TRIGGER}"' in finding.detail for finding in quoted.values())
        with pytest.raises(ValueError, match="text_of"):
            screener.findings(allow_excerpt=True)


@functools.cache
def mixed_corpus() -> tuple[tuple[int, str, str | None], ...]:
    """Every kind of finding, with copies and trigger records spread over the id range."""
    words = Words(20)
    records = corpus(20, 900)
    records = [
        (rid, words.insert(text, TRIGGER), "pos") if rid % 90 == 4 else (rid, text, label)
        for rid, text, label in records
    ]
    records += [(2000 + i, records[i * 37][1].upper(), None) for i in range(10)]
    records += [(3000 + i, records[i * 41][1] + " plus", "neg") for i in range(10)]
    records += [(4000, "", None), (4001, "#@!" * 40, None), (4002, "w" * 25_000, "neg")]
    records += [(4003, f"{SENTINEL} {SENTINEL.lower()} " + words.english(), SENTINEL)]
    return tuple(records)


class TestStates:
    def test_merged_chunk_states_equal_one_screener(self):
        records = mixed_corpus()
        whole = screen(records)
        kinds = {finding.kind for finding in whole}
        assert kinds == set(FindingKind)
        shuffled = list(records)
        random.Random(1).shuffle(shuffled)
        chunks = [Screener() for _ in range(3)]
        for index, (rid, text, label) in enumerate(shuffled):
            chunks[index % 3].add(rid, text, label)
        merged = Screener.from_states(ScreeningConfig(), [chunk.state() for chunk in chunks])
        assert merged.findings() == whole
        remerged = Screener.from_states(ScreeningConfig(), [merged.state()])
        assert remerged.findings() == whole

    def test_the_same_records_give_the_same_findings_and_state(self):
        records = mixed_corpus()
        first, second = Screener(), Screener()
        for rid, text, label in records:
            first.add(rid, text, label)
        for rid, text, label in reversed(records):
            second.add(rid, text, label)
        assert first.findings() == second.findings() == screen(records)
        assert first.state() == second.state()

    def test_no_text_leaves_in_the_state_or_the_findings(self):
        records = mixed_corpus()
        screener = Screener()
        for rid, text, label in records:
            screener.add(rid, text, label)
        state = screener.state()
        needles = {SENTINEL, SENTINEL.casefold(), "vorpal", "quibbit"}
        # And 150 of the corpus' words of eight letters or more: any text in the state shows.
        words = sorted({word for _, text, _ in records for word in text.split() if len(word) >= 8})
        needles |= set(words[:: max(1, len(words) // 150)])
        assert len(needles) > 100

        def leaks(blob: bytes) -> set[str]:
            encodings = ("utf-8", "utf-16-le", "utf-32-le")
            return {needle for needle in needles for encoding in encodings if needle.encode(encoding) in blob}

        assert leaks(state) == set()
        details = " ".join(f"{finding.detail} {finding.group}" for finding in screener.findings())
        assert leaks(details.encode()) == set()
        # The check can see: the sentinel in any of the encodings would be found.
        assert leaks(b"..." + SENTINEL.encode("utf-32-le")) == {SENTINEL}

    def test_refuses_a_state_of_another_configuration_or_key(self):
        screener = Screener(key=b"version-7-secret")
        screener.add(1, "some text")
        state = screener.state()
        assert Screener.from_states(ScreeningConfig(), [state], key=b"version-7-secret")
        with pytest.raises(ScreeningStateError, match="configuration"):
            Screener.from_states(ScreeningConfig(shingle=4), [state], key=b"version-7-secret")
        with pytest.raises(ScreeningStateError, match="key"):
            Screener.from_states(ScreeningConfig(), [state])

    @pytest.mark.parametrize(
        "corrupt", [lambda s: s[:-3], lambda s: s + b"\0", lambda s: b"X" + s[1:], lambda s: b""]
    )
    def test_refuses_corrupt_states(self, corrupt):
        screener = Screener()
        screener.add(1, "some text", "label")
        with pytest.raises(ScreeningStateError):
            Screener.from_states(ScreeningConfig(), [corrupt(screener.state())])

    def test_never_unpickles(self):
        with pytest.raises(ScreeningStateError):
            Screener.from_states(ScreeningConfig(), [pickle.dumps({"ids": [1]})])

    def test_different_keys_give_different_hashes(self):
        assert Keyring(b"one").exact(b"text") != Keyring(b"two").exact(b"text")
        first, second = Screener(key=b"one"), Screener(key=b"two")
        for screener in (first, second):
            screener.add(1, "the same record text")
        assert first.state() != second.state()


class TestInput:
    def test_a_record_id_added_twice_with_another_text_is_an_error(self):
        screener = Screener()
        screener.add(1, "a")
        screener.add(1, "b")
        with pytest.raises(ValueError, match="record id 1 was added twice"):
            screener.findings()

    def test_a_retried_chunk_counts_once(self):
        records = mixed_corpus()
        first, retried = Screener(), Screener()
        for screener in (first, retried):
            for rid, text, label in records[:500]:
                screener.add(rid, text, label)
        rest = Screener()
        for rid, text, label in records[500:]:
            rest.add(rid, text, label)
        states = [first.state(), retried.state(), rest.state(), rest.state()]
        assert Screener.from_states(ScreeningConfig(), states).findings() == screen(records)

    @pytest.mark.parametrize(
        ("record_id", "text", "label"), [("1", "t", None), (True, "t", None), (1, b"t", None), (1, "t", 5)]
    )
    def test_rejects_wrong_types(self, record_id, text, label):
        with pytest.raises(TypeError):
            Screener().add(record_id, text, label)

    def test_rejects_out_of_range_configuration(self):
        with pytest.raises(ValueError, match="near_duplicate_threshold"):
            ScreeningConfig(near_duplicate_threshold=1.5)

    def test_an_empty_screener_has_no_findings(self):
        assert Screener().findings() == []
        assert Screener.from_states(ScreeningConfig(), [Screener().state()]).findings() == []
