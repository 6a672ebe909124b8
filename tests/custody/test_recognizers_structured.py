"""Structured types (issue 12): phone numbers, time stamps, URLs, and how model guesses yield to them.

Each format class fixed after reading the development set's train split has
hand-written examples here (none copied from the set), with the look-alikes
that must stay untouched.
"""

from __future__ import annotations

import pytest

from custody.desensitize import Desensitizer, Policy, get_desensitizer
from custody.desensitize.engine import _joined_phones, _plausible_ner
from custody.recognizers import (
    Candidate,
    ChineseHandleRecognizer,
    ContextPhoneRecognizer,
    DateTimeRecognizer,
    PhoneRecognizer,
    Recognizer,
    TextView,
    UrlRecognizer,
)

KEY = b"structured-types-test-key-0123456"


def found(recognizer: Recognizer, text: str, threshold: float = 0.5) -> list[tuple[str, str]]:
    """Return (entity type, matched text) for the candidates at or above the threshold."""
    view = TextView(text)
    if not recognizer.applies(view):
        return []
    return [(c.entity_type, text[c.start : c.end]) for c in recognizer.find(view) if c.score >= threshold]


def phones(text: str) -> set[str]:
    """Return what either phone recognizer finds at the default threshold."""
    return {
        value
        for recognizer in (PhoneRecognizer(), ContextPhoneRecognizer())
        for _, value in found(recognizer, text)
    }


@pytest.fixture(scope="module")
def desensitizer() -> Desensitizer:
    d = get_desensitizer(Policy(), KEY)
    d.desensitize("warm up")
    return d


def spans(d: Desensitizer, text: str) -> list[tuple[str, str]]:
    return [(s.entity_type, text[s.start : s.end]) for s in d.desensitize(text).spans]


class TestPhoneNumbers:
    @pytest.mark.parametrize(
        ("text", "number"),
        [
            # a cue, then a pronoun or a short noun phrase, then on/at/from
            ("Please ring us on 8231 4470 after lunch.", "8231 4470"),
            ("You can reach the front desk at 0421 553 908 anytime.", "0421 553 908"),
            ("I got a call from 07311 842210 this week.", "07311 842210"),
            ("Our number is 552 1093.", "552 1093"),
            ("mob: 0612 34 88 01", "0612 34 88 01"),
            # a label after the number, as in a signature or a contact card
            ("Jo Park\n612 4409 office\n", "612 4409"),
            ("33-71-80-42 fax", "33-71-80-42"),
            ("408 213 77 is my cell, text any time", "408 213 77"),
        ],
    )
    def test_local_numbers_found_by_the_words_around_them(self, text: str, number: str) -> None:
        assert number in phones(text)

    @pytest.mark.parametrize(
        "number",
        [
            "010-2734-9918",  # trunk 0, in groups
            "06-1234 5678",
            "17 46 81 45",  # three or more short groups
            "22 383 47 01",
            "(72) 754-186",  # area code in brackets
            "(+358) 40 7718 224",  # country code in brackets
            "+(371) 29 114 620",
        ],
    )
    def test_numbers_written_like_phones_need_no_cue(self, number: str) -> None:
        assert number in phones(f"Details: {number}, see above.")

    def test_an_extension_stays_with_its_number(self) -> None:
        assert "+1 (555) 201-4477 x218" in phones("Dial +1 (555) 201-4477 x218 for billing.")
        assert "+44 20 7946 0321 ext. 12" in phones("Switchboard +44 20 7946 0321 ext. 12.")

    @pytest.mark.parametrize(
        "text",
        [
            "The budget grew to 1 250 000 euros.",
            "Seasons 2019 2020 2021 were strong.",
            "Invoice dated 2024-03-12 was paid.",
            "call the meeting at 10:30 tomorrow",
            "version 10.2.3.4 shipped",
            "Founded (1998) 2004 relaunch",
        ],
    )
    def test_amounts_years_dates_and_versions_are_not_phones(self, text: str) -> None:
        assert phones(text) == set()

    def test_overlapping_phone_guesses_join_into_the_whole_number(self) -> None:
        text = "x +7 912 480 2277 y"
        partial = Candidate(5, 17, "PHONE_NUMBER", 0.95, "PhoneRecognizer")
        whole = Candidate(2, 17, "PHONE_NUMBER", 0.55, "ContextPhoneRecognizer")
        other = Candidate(0, 1, "PERSON", 0.9, "X")
        joined = _joined_phones([partial, whole, other])
        assert other in joined
        assert [(text[c.start : c.end], c.score) for c in joined if c.entity_type == "PHONE_NUMBER"] == [
            ("+7 912 480 2277", 0.95)
        ]

    def test_a_foreign_number_is_masked_whole(self, desensitizer: Desensitizer) -> None:
        text = "Whatsapp +7 912 480 2277 before noon."
        assert ("PHONE_NUMBER", "+7 912 480 2277") in spans(desensitizer, text)


class TestTimeStamps:
    @pytest.mark.parametrize(
        "stamp",
        [
            "1991-07-30 18:05:12",
            "2031-01-02T07:45:00Z",
            "2031-01-02T07:45:00+08:00",
            "7/30/1991 6:05 PM",
            "30.07.1991, 18:05",
            "1991/7/30 18:05:12.250",
        ],
    )
    def test_a_date_and_its_time_are_one_span(self, stamp: str) -> None:
        assert found(DateTimeRecognizer(), f"Logged {stamp} by the desk.") == [("DATE_TIME", stamp)]

    @pytest.mark.parametrize(
        "text", ["version 1.2.3 12:30", "ratio 3/4/5 1:2", "at 10.0.0.1 12:30", "on 5/6 10:30"]
    )
    def test_versions_ratios_and_addresses_are_not_stamps(self, text: str) -> None:
        assert found(DateTimeRecognizer(), text) == []

    def test_the_stamp_wins_over_its_date_part_and_a_phone_reading(self, desensitizer: Desensitizer) -> None:
        text = "Date: 1991-07-30 18:05:12\nOpened on 2002-11-04 09:13:55, closed later."
        assert [s for s in spans(desensitizer, text) if s[0] != "PERSON"] == [
            ("DATE_TIME", "1991-07-30 18:05:12"),
            ("DATE_TIME", "2002-11-04 09:13:55"),
        ]

    @pytest.mark.parametrize(
        "value",
        ["the last 4 years", "the next 3 days", "today 5 pm", "tomorrow 10-12", "the 1st", "the age of 30"],
    )
    def test_relative_and_ordinal_dates_from_the_model_are_dropped(self, value: str) -> None:
        text = f"It was {value} again."
        guess = Candidate(7, 7 + len(value), "DATE_TIME", 0.85, "SpacyRecognizer")
        assert _plausible_ner(text, [guess], []) == []

    def test_a_full_date_from_the_model_stays(self) -> None:
        text = "It was March 4, 2019 again."
        guess = Candidate(7, 20, "DATE_TIME", 0.85, "SpacyRecognizer")
        assert _plausible_ner(text, [guess], []) == [guess]


class TestUrls:
    @pytest.mark.parametrize(
        ("text", "url"),
        [
            ("品冠与E12http://t.cn/8kdQx2", "http://t.cn/8kdQx2"),
            ("watch it herehttps://example.org/v/12", "https://example.org/v/12"),
        ],
    )
    def test_a_scheme_starts_a_url_even_glued_to_a_word(self, text: str, url: str) -> None:
        assert found(UrlRecognizer(), text) == [("URL", url)]

    def test_a_handle_stops_where_a_glued_link_starts(self) -> None:
        text = "好运哦@林小雨Rain http://t.cn/x @王大锤Kinghttp://t.cn/Rx81"
        assert found(ChineseHandleRecognizer(), text) == [
            ("PERSON", "@林小雨Rain"),
            ("PERSON", "@王大锤King"),
        ]

    def test_a_date_guess_running_into_a_link_is_cut_before_it(self) -> None:
        text = "Meet on Oct 9 http://bit.ly/x1"
        date = Candidate(8, 17, "DATE_TIME", 0.85, "SpacyRecognizer")
        url = Candidate(14, 30, "URL", 0.9, "UrlRecognizer")
        assert [text[c.start : c.end] for c in _plausible_ner(text, [date], [url])] == ["Oct 9"]

    def test_links_win_over_guesses_that_overlap_them(self, desensitizer: Desensitizer) -> None:
        text = "Live at 9am and 11am - www.ExampleChurch.org and Oct 9 http://bit.ly/x1"
        found_spans = spans(desensitizer, text)
        assert ("URL", "www.ExampleChurch.org") in found_spans
        assert ("URL", "http://bit.ly/x1") in found_spans


class TestModelGuessesAroundNumbers:
    def test_a_guess_over_a_phone_keeps_only_its_words(self) -> None:
        text = "Ring +420 728 778 932 after six."
        org = Candidate(0, 17, "ORGANIZATION", 0.85, "SpacyRecognizer")
        phone = Candidate(5, 20, "PHONE_NUMBER", 0.6, "ContextPhoneRecognizer")
        assert [
            (text[c.start : c.end], c.entity_type) for c in _plausible_ner(text, [org], [phone], 0.5)
        ] == [("Ring", "ORGANIZATION")]

    def test_a_date_guess_over_a_phone_without_a_date_left_is_dropped(self) -> None:
        text = "Text me at +44 28 9018 4700 later."
        date = Candidate(11, 33, "DATE_TIME", 0.85, "SpacyRecognizer")
        phone = Candidate(11, 27, "PHONE_NUMBER", 0.6, "ContextPhoneRecognizer")
        assert _plausible_ner(text, [date], [phone], 0.5) == []

    def test_numbers_below_the_threshold_do_not_cut_guesses(self) -> None:
        text = "Ring +420 728 778 932 after six."
        org = Candidate(0, 17, "ORGANIZATION", 0.85, "SpacyRecognizer")
        weak = Candidate(5, 20, "PHONE_NUMBER", 0.4, "PhoneRecognizer")
        assert _plausible_ner(text, [org], [weak], 0.5) == [org]

    def test_the_whole_number_is_masked(self, desensitizer: Desensitizer) -> None:
        text = "Text me at +44 28 9018 4700 later."
        assert ("PHONE_NUMBER", "+44 28 9018 4700") in spans(desensitizer, text)
