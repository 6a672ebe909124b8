"""Values named by their field (``custody.recognizers.fields``) and the engine's token and table fixes
(eleventh round of issue 12, from a walk)."""

from __future__ import annotations

import pytest

from custody.desensitize import Desensitizer, policy_named
from custody.desensitize.engine import whole_tokens
from custody.recognizers import Candidate, FieldRecognizer, TextView
from custody.recognizers.fields import field_type


def found(text: str) -> list[tuple[str, str]]:
    view = TextView(text)
    recognizer = FieldRecognizer()
    if not recognizer.applies(view):
        return []
    return sorted(
        ((c.entity_type, text[c.start : c.end]) for c in recognizer.find(view)),
        key=lambda p: text.index(p[1]),
    )


class TestPairs:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                '{"user": "okafor.c", "full_name": "Chidi Okafor", "ip": "172.16.4.9", "dob": "1991-02-17"}',
                [
                    ("PERSON", "okafor.c"),
                    ("PERSON", "Chidi Okafor"),
                    ("IP_ADDRESS", "172.16.4.9"),
                    ("DATE_TIME", "1991-02-17"),
                ],
            ),
            (
                "{'email': 'a.b@example.org', 'phone': '+44 7911 123456'}",
                [
                    ("EMAIL_ADDRESS", "a.b@example.org"),
                    ("PHONE_NUMBER", "+44 7911 123456"),
                ],
            ),
            (
                "GET /signup?first_name=Amara&lastName=Nwosu&plan=pro",
                [("PERSON", "Amara"), ("PERSON", "Nwosu")],
            ),
            (
                "Name: Lê Thị Hương\nDOB: 12/05/1987\nAddress: 45 Nguyễn Huệ, Quận 1, TP. Hồ Chí Minh",
                [
                    ("PERSON", "Lê Thị Hương"),
                    ("DATE_TIME", "12/05/1987"),
                    ("LOCATION", "45 Nguyễn Huệ, Quận 1, TP. Hồ Chí Minh"),
                ],
            ),
            # a value ends at the next key on its line
            (
                "电话：17205295520 邮箱：zhang221@gmail.com",
                [
                    ("PHONE_NUMBER", "17205295520"),
                    ("EMAIL_ADDRESS", "zhang221@gmail.com"),
                ],
            ),
            (
                "姓名：马晓东，住址：北京市朝阳区望京街道3号楼",
                [("PERSON", "马晓东"), ("LOCATION", "北京市朝阳区望京街道3号楼")],
            ),
            # a key at the end of a longer word or phrase; a comma ends a value that is no address
            ("我的电话：13912345678", [("PHONE_NUMBER", "13912345678")]),
            ("Contact phone: 555-0134-22, ask for Ana", [("PHONE_NUMBER", "555-0134-22")]),
            # an apostrophe inside a word is no quote; a value is cut to its type's shape
            ("Name: Margaret O'Neill", [("PERSON", "Margaret O'Neill")]),
            (
                "his address: 36 rue de pologne, cite de l'interieur",
                [("LOCATION", "36 rue de pologne, cite de l'interieur")],
            ),
            ("phone: +1-555-0100) but the driver", [("PHONE_NUMBER", "+1-555-0100")]),
        ],
    )
    def test_values_of_known_fields(self, text: str, expected: list[tuple[str, str]]) -> None:
        assert found(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            # "name" names jobs, packages and steps too: only capitalised words are a person
            "name: Build and test\nruns-on: ubuntu-latest",
            "name: CI\non: push",
            '{"name": "requests", "version": "2.32.3"}',
            # fields that are not personal, values that are empty or do not fit their type
            '{"status": "active", "plan": "pro"}',
            '{"email": "", "phone": "n/a", "dob": "unknown", "user": null}',
            "phone: call me later",
            # an address block that opens with its holder's name is left to the name stages
            "Billing address: Sara Schwarz",
            "the ratio x=5 holds",
            "the user: he said no",
            "Time: 10:30, Location: Room 4",
            # 地址 is a web address too
            "下载地址：http://t.cn/8FntgAM已有3298874人参与",
        ],
    )
    def test_what_is_no_known_field_or_no_fitting_value(self, text: str) -> None:
        assert found(text) == []

    @pytest.mark.parametrize(
        ("key", "value", "kind"),
        [
            ("Full Name", "Ana Dias", "PERSON"),
            ("full-name", "Ana Dias", "PERSON"),
            ("NAME", "Ana Dias", "PERSON"),
            ("name", "ana", None),
            ("ZIP", "53650", "LOCATION"),
            ("tel", "12345", None),
            ("passport", "P12345678", "ID_NUMBER"),
            ("passport", "expired", None),
            ("password", "hunter2", "PASSWORD"),
            ("email", "<EMAIL_ADDRESS>", None),
        ],
    )
    def test_field_type(self, key: str, value: str, kind: str | None) -> None:
        assert field_type(key, value) == kind


class TestTables:
    def test_csv_rows_under_a_header(self) -> None:
        text = (
            "id,first_name,last_name,email,city\n"
            "1042,Amara,Nwosu,amara.n@example.net,Leeds\n"
            '1043,"Volkov, Jr.",Dmitri,dvolkov@example.org,Riga'
        )
        assert found(text) == [
            ("PERSON", "Amara"),
            ("PERSON", "Nwosu"),
            ("EMAIL_ADDRESS", "amara.n@example.net"),
            ("LOCATION", "Leeds"),
            ("PERSON", "Volkov, Jr."),
            ("PERSON", "Dmitri"),
            ("EMAIL_ADDRESS", "dvolkov@example.org"),
            ("LOCATION", "Riga"),
        ]

    def test_a_markdown_table(self) -> None:
        text = "| Name | Phone | City |\n| --- | --- | --- |\n| Rosa Álvarez | 612 345 678 | Valencia |"
        assert found(text) == [
            ("PERSON", "Rosa Álvarez"),
            ("PHONE_NUMBER", "612 345 678"),
            ("LOCATION", "Valencia"),
        ]

    def test_rows_end_where_the_width_changes(self) -> None:
        text = "name,city\nAna Dias,Porto\n\nWe met Bob, Alice and Carol in Lisbon."
        assert found(text) == [("PERSON", "Ana Dias"), ("LOCATION", "Porto")]

    def test_a_line_of_prose_with_commas_is_no_header(self) -> None:
        assert found("Apples, pears, plums\nLeeds, York, Hull") == []


class TestWholeTokens:
    @pytest.mark.parametrize(
        ("text", "piece", "expected"),
        [
            ("Posted by grandma_ruth on 03/02", "ruth", "grandma_ruth"),
            ("u/throwaway_kat88 posted", "_kat88", "throwaway_kat88"),
            ("VALUES (77, 'Lindqvist', 'Henrik')", "'Lindqvist", "Lindqvist"),
            ("met Okafor. Then left", "Okafor", "Okafor"),
            ("the Boston-based firm", "Boston", "Boston"),
            # "." joins a user name's parts, not two run-together sentences
            ("mail okafor.c today", "okafor", "okafor.c"),
            ("so1m1e1.Abestfriend", "so1m1e1", "so1m1e1"),
        ],
    )
    def test_a_name_takes_its_whole_token(self, text: str, piece: str, expected: str) -> None:
        start = text.index(piece)
        chosen = [Candidate(start, start + len(piece), "PERSON", 0.85, "test")]
        assert [text[c.start : c.end] for c in whole_tokens(text, chosen)] == [expected]

    def test_a_token_is_not_widened_into_another_span(self) -> None:
        text = "jdoe_admin"
        chosen = [Candidate(0, 4, "PERSON", 0.85, "a"), Candidate(5, 10, "ID_NUMBER", 0.9, "b")]
        assert [text[c.start : c.end] for c in whole_tokens(text, chosen)] == ["jdoe_", "admin"]

    def test_other_types_are_left_alone(self) -> None:
        text = "ref AB_1234"
        chosen = [Candidate(7, 11, "ID_NUMBER", 0.7, "a")]
        assert whole_tokens(text, chosen) == chosen


def test_a_csv_keeps_its_rows_and_header() -> None:
    """The tagger read ``city`` as a place and ran ``Leeds`` into the next row's ``1043``."""
    desensitizer = Desensitizer(policy_named("default"), b"k" * 32)
    text = (
        "id,first_name,last_name,email,city\n"
        "1042,Amara,Nwosu,amara.n@example.net,Leeds\n"
        "1043,Dmitri,Volkov,dvolkov@example.org,Riga"
    )
    result = desensitizer.desensitize(text)
    assert result.text.splitlines()[0] == "id,first_name,last_name,email,city"
    assert [line.split(",")[0] for line in result.text.splitlines()[1:]] == ["1042", "1043"]
    for value in ("Amara", "Nwosu", "Leeds", "Dmitri", "Volkov", "Riga"):
        assert value not in result.text
