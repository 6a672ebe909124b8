"""Sealroom's English recognizers on their own (no spaCy model): what each stage finds and leaves."""

from __future__ import annotations

import pytest

from custody.desensitize.engine import merge_adjacent_locations, resolve
from custody.recognizers import (
    AddressRecognizer,
    ContextIdRecognizer,
    ContextPhoneRecognizer,
    EmailRecognizer,
    EnglishNameRecognizer,
    HandleRecognizer,
    OrganizationPatternRecognizer,
    PasswordRecognizer,
    PlaceGazetteerRecognizer,
    Recognizer,
    TextView,
    UsernameRecognizer,
)


def found(recognizer: Recognizer, text: str, threshold: float = 0.5, *, english: bool = True) -> list[str]:
    """Return the matched texts at or above the threshold, overlaps resolved as the engine does."""
    view = TextView(text, english=english)
    if not recognizer.applies(view):
        return []
    chosen = resolve(recognizer.find(view), frozenset(recognizer.entities), threshold)
    return [text[c.start : c.end] for c in merge_adjacent_locations(text, chosen)]


class TestHandles:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("@jack_smith thanks!", ["@jack_smith"]),
            ("RT @V0Ella : new poem", ["@V0Ella"]),
            ("mail jack@example.com", []),
            ("meet @ noon", []),
            ("see @example.com", []),
            # Instagram, Slack and Reddit handles may hold dots; a public suffix makes it a host name.
            ("@priya.raman the invoice is attached", ["@priya.raman"]),
            ("thanks @tom.hardy.", ["@tom.hardy"]),
            ("ask @support.example.org", []),
            # Eleventh round: a chat log's nick after its timestamp; an HTML tag is none.
            ("[09:14] <jpark> anyone seen the deploy logs?", ["jpark"]),
            ("09:15:02 <m_fernandes> yes", ["m_fernandes"]),
            ("<div>09:15</div>", []),
            ("<jpark> without a timestamp", []),
            ("u/throwaway_kat88 posted my address on r/Portland", ["throwaway_kat88"]),
            ("see /u/kat_m's post", ["kat_m"]),
            ("a menu/user guide", []),
        ],
    )
    def test_handles(self, text: str, expected: list[str]) -> None:
        assert found(HandleRecognizer(), text) == expected


class TestEnglishNames:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Please ask Mr. Okonkwo to sign", ["Okonkwo"]),
            # Eleventh round: after "name:" a line that goes on in lower case labels a step.
            ("name: Build and test", []),
            ("Name: Anna Kowalski", ["Anna Kowalski"]),
            ("my name is Anna and I live here", ["Anna"]),
            ("Dr Helena Shaw called", ["Helena Shaw"]),
            ("i met mrs patel today", ["patel"]),
            ("my name is zoltan kovacs", ["zoltan kovacs"]),
            ("hey jessica are you up", ["jessica"]),
            ("Dinner with Jessica Alvarez tonight", ["Jessica Alvarez"]),
            ("Hello, this is Priya Raman.", ["Priya Raman"]),
            ("I'm Naomi Ryan, the new tenant", ["Naomi Ryan"]),
            ("hi, it's Ngozi Okonkwo Adaeze", ["Ngozi Okonkwo Adaeze"]),
            ("Thanks so much, Ines!", ["Ines"]),
            ("Thanks again, Marta Ruiz.", ["Marta Ruiz"]),
            # Tenth round: a greeting before a comma addresses the reader, a known first name or not.
            ("Hey Mo, the invoice is late.", ["Mo"]),
            ("Good morning Ifeoma Eze! The parcel arrived.", ["Ifeoma Eze"]),
            # A lowercase name signing off after a thank-you; the words of a first.last address.
            ("the printer works now. thx, rahul", ["rahul"]),
            ('From: "Okafor, Chidi" <chidi.okafor@example.org>', ["Okafor", "Chidi"]),
        ],
    )
    def test_finds(self, text: str, expected: list[str]) -> None:
        assert found(EnglishNameRecognizer(), text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "hey guys are you up",  # not a first name
            "I will be there in May",  # first names that are common words need a surname
            "Mr. and Mrs. are titles",
            "the weather is nice",
            # An introduction cue before title-case words that are not a name (train split tweets).
            "I'm In Love",
            "its Finally Friday",
            "I'm Funny When I'm Tired",
            "this is Priya",  # one word: left to the gazetteer and the tagger
            # A thank-you to a group or a form of address.
            "Thanks, Everyone!",
            "thank you, Team.",
            "Thanks so much, Sir.",
            # A greeting to a group or a form of address, or with no comma after the words.
            "Hi Team, the build is green.",
            "Dear Mam, i am such a fan",
            "Hey Seattle is lovely today",
            # A sign-off word, a thank-you mid-record; an address of one part, or of common words.
            "thanks, bye",
            "thanks, rahul is here too",
            "Write to support@acme.com for support.",
            "Replies to no-reply@acme.com reply to no one.",
        ],
    )
    def test_leaves(self, text: str) -> None:
        assert found(EnglishNameRecognizer(), text) == []

    def test_does_not_run_on_records_forced_to_chinese(self) -> None:
        assert found(EnglishNameRecognizer(), "Dr Helena Shaw called", english=False) == []

    @pytest.mark.parametrize(
        ("value", "title"),
        [
            ("mr", True),
            ("Dr.", True),
            ("MRS", True),
            (" Professor ", True),
            ("Sister", True),
            ("drew", False),
            ("Mr Smith", False),
            ("Maria", False),
            ("Prof.essor", False),
        ],
    )
    def test_a_title_alone(self, value: str, title: bool) -> None:
        from custody.recognizers.en_names import is_title

        assert is_title(value) is title


class TestPlaces:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("at 221 Baker Street, London", ["221 Baker Street"]),
            ("Send it to 4418 N Main St. Apt 5 today", ["4418 N Main St. Apt 5"]),
            ("Springfield, IL 62704", ["Springfield, IL 62704"]),
            ("PO Box 1234", ["PO Box 1234"]),
            ("She lives at 12 Rua do Arenque 1634, Goiânia", ["12 Rua do Arenque 1634, Goiânia"]),
            # Tenth round: a compass point after the street word; a Canadian province and postcode.
            ("went to 55 Bloor St W instead", ["55 Bloor St W"]),
            ("Toronto, ON M4W 1A5", ["Toronto, ON M4W 1A5"]),
            ("QC H2X 1Y4", ["QC H2X 1Y4"]),
            ("turn ON the M4W setting", []),
            # Eleventh round: French streets, number first and the street word in lower case.
            ("Resume - 14 rue des Lilas, 69003 Lyon", ["14 rue des Lilas"]),
            ("Adresse : 3 avenue Foch, 75116 Paris", ["3 avenue Foch"]),
            ("from 3 rue to 4 rue", []),
            # A time or a day after an address cue is not an address.
            ("The meeting moved to 3pm Thursday.", []),
            ("standup moved to 10:30, ping bongani", []),
            ("She moved to 12 Oak Avenue last spring", ["12 Oak Avenue last spring"]),
        ],
    )
    def test_addresses(self, text: str, expected: list[str]) -> None:
        assert found(AddressRecognizer(), text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Flying from Toronto to New Zealand", ["Toronto", "New Zealand"]),
            ("night out #Bangkok", ["#Bangkok"]),
            ("Jordan scored twice", []),  # a first name first
            ("back home in Georgia", ["Georgia"]),
        ],
    )
    def test_gazetteer(self, text: str, expected: list[str]) -> None:
        assert found(PlaceGazetteerRecognizer(), text) == expected


class TestOrganizations:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("She works at Acme Widgets Inc. now", ["Acme Widgets Inc."]),
            ("The University of Iowa said", ["University of Iowa"]),
            ("The Global Trust Bank resulted", ["Global Trust Bank"]),
            ("the bank said no", []),
        ],
    )
    def test_organizations(self, text: str, expected: list[str]) -> None:
        assert found(OrganizationPatternRecognizer(), text) == expected


class TestIdentifiersByContext:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("his passport number 'A12345678' expired", ["A12345678"]),
            ("Passport: X4829153", ["X4829153"]),
            ("bank account 7391028373 linked", ["7391028373"]),
            ("Tax ID 92-7315401 in filings", ["92-7315401"]),
            ("card # 503890547220 limit", ["503890547220"]),  # fails Luhn: still a card
            ("card 4532 **** **** 7890 used", ["4532 **** **** 7890"]),
            ("account overview for 2024", []),
            ("policy update 12", []),
            # Eleventh round: student and staff numbers, a lower-case letter before the digits.
            ("Student number s4412897.", ["s4412897"]),
            ("staff ID: 55812", ["55812"]),
            ("student of the year 2024", []),
            (
                "My licence plate is ABC-1234 and the VIN is 1HGCM82633A004352.",
                ["ABC-1234", "1HGCM82633A004352"],
            ),
            ("the plate was cold", []),
            ("My neighbour Femi keeps parking in my spot. His reg is LD19 XKE.", ["LD19 XKE"]),
            ("the registration ab12 cde", []),
        ],
    )
    def test_identifiers(self, text: str, expected: list[str]) -> None:
        assert found(ContextIdRecognizer(), text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("They're not answering at 516 466 638", ["516 466 638"]),
            ("fax +41 (0)38 549 02 90 mobile", ["+41 (0)38 549 02 90"]),
            ("call me at 5 pm", []),
        ],
    )
    def test_phones(self, text: str, expected: list[str]) -> None:
        assert found(ContextPhoneRecognizer(), text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("with password 'B@nZes94!', attempting", ["B@nZes94!"]),
            ("password: Hunter2024 was leaked", ["Hunter2024"]),
            ("a password reset link", []),
            ("Login: grizzlybear_88 / pw hunter2", ["hunter2"]),  # eleventh round
            ("the pw is reset", []),
        ],
    )
    def test_passwords(self, text: str, expected: list[str]) -> None:
        assert found(PasswordRecognizer(), text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Username: grizzlybear_88 Password: x", ["grizzlybear_88"]),
            ("login = kpatel", ["kpatel"]),
            ("UserID 'secure_credentials' with password", ["secure_credentials"]),
            ("the username dev_user was shared", ["dev_user"]),
            ("用户名：xiaoyu_2020，密码忘了", ["xiaoyu_2020"]),
            ("Accepted publickey for kwame from 10.2.3.44 port 52114", ["kwame"]),
            ("Failed password for invalid user admin from 203.0.113.5 port 4222", ["admin"]),
            # Without a colon the value needs a digit, "_" or ".": these are words, not user names.
            ("unusual login attempts to the VPN", []),
            ("the username field is required", []),
            ("Username: required", []),
            ("waiting for updates from 10.2.3.44", []),
        ],
    )
    def test_user_names(self, text: str, expected: list[str]) -> None:
        assert found(UsernameRecognizer(), text) == expected


class TestGluedEmail:
    def test_cuts_an_address_where_the_next_word_begins(self) -> None:
        assert found(EmailRecognizer(), "mail ann.lee@example.comPhone 555") == ["ann.lee@example.com"]
        assert found(EmailRecognizer(), "邮箱zhang@example.com13812345678") == ["zhang@example.com"]

    def test_leaves_a_domain_that_is_not_one(self) -> None:
        assert found(EmailRecognizer(), "x@foo.comx") == []


class TestMergeAdjacentLocations:
    """Places of one address joined across commas and postal codes (eleventh round, from a walk)."""

    @staticmethod
    def merged(text: str, *pieces: str, entity: str = "LOCATION") -> list[str]:
        from custody.recognizers import Candidate

        spans = []
        for piece in pieces:
            start = text.index(piece)
            spans.append(Candidate(start, start + len(piece), entity, 0.85, "test"))
        return [text[c.start : c.end] for c in merge_adjacent_locations(text, spans)]

    @pytest.mark.parametrize(
        ("text", "pieces", "expected"),
        [
            # a UK postcode between the town and the country, or after the town
            (
                "Elm Grove, Harrogate HG1 2LS, UK.",
                ("Elm Grove, Harrogate", "UK"),
                ["Elm Grove, Harrogate HG1 2LS, UK"],
            ),
            ("office in London NW1 6XE today", ("London",), ["London NW1 6XE"]),
            # a Japanese postcode the tagger cut in two
            (
                "Shibuya-ku, Tokyo 150-0002, Japan",
                ("Shibuya-ku, Tokyo", "0002, Japan"),
                ["Shibuya-ku, Tokyo 150-0002, Japan"],
            ),
            # a house number between the street and the unit
            (
                "0104 Hafnarstraeti 5\n Suite 179",
                ("0104 Hafnarstraeti", "Suite 179"),
                ["0104 Hafnarstraeti 5\n Suite 179"],
            ),
            ("Springfield, IL", ("Springfield", "IL"), ["Springfield, IL"]),
            # not a postcode: a score, words
            ("Bolton 1-2 Liverpool", ("Bolton", "Liverpool"), ["Bolton", "Liverpool"]),
            ("Leeds and York", ("Leeds", "York"), ["Leeds", "York"]),
            # a known over-mask: a product code of a postcode's shape right after a place
            ("Paris MP3 4GB", ("Paris",), ["Paris MP3 4GB"]),
        ],
    )
    def test_merges(self, text: str, pieces: tuple[str, ...], expected: list[str]) -> None:
        assert self.merged(text, *pieces) == expected

    def test_a_postcode_does_not_join_people(self) -> None:
        assert self.merged("Ann HG1 2LS Bob", "Ann", "Bob", entity="PERSON") == ["Ann", "Bob"]
