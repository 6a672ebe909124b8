"""English dates written with month names (the grammar that replaced spaCy's date pass) and the
organisation rules of issue 12's fourth round: cue phrases, initials, widening the tagger's spans."""

from __future__ import annotations

import pytest

from custody.desensitize.engine import resolve, widen_organizations
from custody.recognizers import Candidate, OrganizationPatternRecognizer, Recognizer, TextView
from custody.recognizers.en_dates import WordDateRecognizer


def found(recognizer: Recognizer, text: str, *, english: bool = True) -> list[str]:
    view = TextView(text, english=english)
    if not recognizer.applies(view):
        return []
    chosen = resolve(recognizer.find(view), frozenset(recognizer.entities), 0.5)
    return [text[c.start : c.end] for c in chosen]


class TestWordDates:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("On December 15, 2014 we met", ["December 15, 2014"]),
            ("posted January 08 , 2015 by admin", ["January 08 , 2015"]),
            ("see you Monday , February 2nd then", ["Monday , February 2nd"]),
            ("born on the 5th of May, 1984 in Leeds", ["the 5th of May, 1984"]),
            ("signed 15 Dec 2014.", ["15 Dec 2014"]),
            ("back in July 2010 it rained", ["July 2010"]),
            ("dec 27 works for me", ["dec 27"]),
            ("The orchestra was founded in 1977. Since then", ["1977"]),
            ("During 1971, the firm invested", ["1971"]),
            ("a 1973 film about it", ["1973"]),
        ],
    )
    def test_finds(self, text: str, expected: list[str]) -> None:
        assert found(WordDateRecognizer(), text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "you may 5 times ask",  # a verb, not the month
            "we march 5 miles",
            "see you on Sunday morning",  # a weekday alone dates nothing
            "page 2002 of the log",  # a number, not a year after a preposition
            "in 20000 years",
            "that happened in July",
        ],
    )
    def test_leaves(self, text: str) -> None:
        assert found(WordDateRecognizer(), text) == []

    def test_does_not_run_on_records_forced_to_chinese(self) -> None:
        assert found(WordDateRecognizer(), "December 15, 2014", english=False) == []


class TestOrganisationCues:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("I work for Chemical Abstracts Service", ["Chemical Abstracts Service"]),
            ("I used to work for Futureadvisor as a clerk", ["Futureadvisor"]),
            ("according to the Roadify Transit website. They", ["Roadify Transit"]),
            ("The Internal Revenue Service flagged a discrepancy", ["Internal Revenue Service"]),
            ("An alert was issued by the SEC regarding it", ["SEC"]),
            ("She joined Lumora Labs last year", ["Lumora Labs"]),
            ("I work for a bank", []),
            ("I work for him", []),
            ("the sec ago", []),
            ("WHO ARE YOU", []),
            # The gazetteer: a listed name in any case, not inside a hyphenated identifier.
            ("I watched the bbc news last night", ["bbc"]),
            ("Ticket reference sentinel-dwxbzpdc-bbc.", []),
            ("build nasa-2024 passed", []),
        ],
    )
    def test_organisations(self, text: str, expected: list[str]) -> None:
        assert found(OrganizationPatternRecognizer(), text) == expected


class TestWidening:
    @staticmethod
    def widened(text: str, word: str, entity_type: str = "ORGANIZATION") -> str:
        start = text.index(word)
        (c,) = widen_organizations(text, [Candidate(start, start + len(word), entity_type, 0.85, "t")])
        return text[c.start : c.end]

    @pytest.mark.parametrize(
        ("text", "word", "expected"),
        [
            ("The address of Compliance And Risks is 9554 Rue Gafsa", "Risks", "Compliance And Risks"),
            ("Ella Snider\nOtc Markets\n228 Ringvej", "Otc", "Otc Markets"),
            ("in Winmalee, Weeks-Rivas is a 501(c)3 charity", "Rivas", "Weeks-Rivas"),
            ("Since then The Vanguard Group invested", "Vanguard", "Vanguard Group"),
            ("yesterday Nintendo corporate said no", "Nintendo", "Nintendo"),
            ("she works at Société Générale now", "Société", "Société Générale"),
            ("我在Acme Widgets公司上班", "Acme", "Acme Widgets"),  # never into Han text
        ],
    )
    def test_grows_over_the_rest_of_the_name(self, text: str, word: str, expected: str) -> None:
        assert self.widened(text, word) == expected

    def test_stops_at_the_next_chosen_span(self) -> None:
        text = "so we paid Acme Widgets Ann Lee said"
        org = Candidate(text.index("Acme"), text.index("Acme") + 4, "ORGANIZATION", 0.85, "t")
        person = Candidate(text.index("Ann"), text.index("Ann") + 7, "PERSON", 0.85, "t")
        widened = widen_organizations(text, [org, person])
        assert [text[c.start : c.end] for c in widened] == ["Acme Widgets", "Ann Lee"]

    def test_leaves_headlines_shouting_and_other_types(self) -> None:
        headline = "Facebook Job-Hunting App BranchOut Raises Money From Investors"
        assert self.widened(headline, "Facebook") == "Facebook"
        assert self.widened("WE LOVE ACME WIDGETS SO MUCH RIGHT NOW", "ACME") == "ACME"
        assert self.widened("Ann Lee Smith", "Lee", "PERSON") == "Lee"
