"""The desensitizer end to end: engine, conflicts, operators, pseudonyms, offsets, offline behaviour.

The engine (spaCy and Presidio) is built once per test process and shared,
as in production.
"""

from __future__ import annotations

import pickle
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from common.exceptions import Invalid
from custody.desensitize import (
    NAMED_POLICIES,
    Desensitized,
    Desensitizer,
    OperatorSpec,
    Policy,
    Span,
    get_desensitizer,
    policy_named,
)
from custody.desensitize.engine import load_spacy_engine, resolve
from custody.desensitize.parallel import desensitize_stream
from custody.desensitize.policy import OperatorKind
from custody.recognizers import Candidate
from custody.recognizers.checksums import cn_resident_id_valid, luhn_valid, nhs_valid

KEY = b"version-1-pseudonym-key-32-bytes"
OTHER_KEY = b"version-2-pseudonym-key-32-bytes"
CN_ID = "110101199003078515"
CARD = "6222021234567890128"


@pytest.fixture(scope="module")
def desensitizer() -> Desensitizer:
    d = get_desensitizer(Policy(), KEY)
    d.desensitize("warm up")
    return d


def run(policy: Policy, text: str, key: bytes = KEY, language: str = "auto") -> Desensitized:
    return Desensitizer(policy, key).desensitize(text, language)


def found(result: Desensitized, text: str) -> list[tuple[str, str]]:
    return [(s.entity_type, text[s.start : s.end]) for s in result.spans]


def left_in_clear(result: Desensitized, text: str, values: list[str]) -> list[str]:
    """The values of ``text`` (names, addresses) with a letter or digit outside every detected span."""
    masked = {i for s in result.spans for i in range(s.start, s.end)}
    return [
        value
        for value in values
        for at in [text.index(value)]
        if any(ch.isalnum() and at + i not in masked for i, ch in enumerate(value))
    ]


def nanp_number_passing_the_nhs_check() -> str:
    for last in range(100, 10_000):
        digits = f"212555{last:04d}"
        if nhs_valid(digits):
            return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}"
    raise AssertionError("no such number")  # pragma: no cover


class TestDetection:
    def test_finds_english_entities_with_offsets_into_the_input(self, desensitizer: Desensitizer) -> None:
        text = "My name is John Smith, email john.smith@example.com, phone (212) 555-0143."
        result = desensitizer.desensitize(text)
        assert found(result, text) == [
            ("PERSON", "John Smith"),
            ("EMAIL_ADDRESS", "john.smith@example.com"),
            ("PHONE_NUMBER", "(212) 555-0143"),
        ]
        assert result.text == "My name is <PERSON>, email <EMAIL_ADDRESS>, phone <PHONE_NUMBER>."
        assert result.language == "en"
        assert all(0.5 <= s.score <= 1.0 for s in result.spans)

    def test_finds_chinese_identifiers_written_against_chinese_text(self, desensitizer: Desensitizer) -> None:
        text = f"身份证号{CN_ID}，电话13812345678联系，卡号{CARD}已冻结"
        result = desensitizer.desensitize(text)
        assert found(result, text) == [
            ("CN_RESIDENT_ID", CN_ID),
            ("PHONE_NUMBER", "13812345678"),
            ("BANK_CARD", CARD),
        ]
        assert result.text == "身份证号<CN_RESIDENT_ID>，电话<PHONE_NUMBER>联系，卡号<BANK_CARD>已冻结"
        assert result.language == "zh"

    def test_finds_chinese_names_with_context(self, desensitizer: Desensitizer) -> None:
        text = "联系人：张伟，统一社会信用代码91350100M000100Y43。李娜女士已签收。"
        result = desensitizer.desensitize(text)
        assert found(result, text) == [
            ("PERSON", "张伟"),
            ("CN_USCC", "91350100M000100Y43"),
            ("PERSON", "李娜"),
        ]

    # The Chinese guard beside the English one (TestEnglishCascade): plain customer-service sentences,
    # every character of each name and address masked (ninth round of issue 12: "小周" was left).
    @pytest.mark.parametrize(
        ("text", "values"),
        [
            ("您好，我是李晓梅，订单一直没有发货。", ["李晓梅"]),
            ("请联系客户王建国，他的手机一直打不通。", ["王建国"]),
            ("快递员张伟说明天送到朝阳区建国路88号。", ["张伟", "朝阳区建国路88号"]),
            ("陈志强和刘芳昨天一起来办理了退款。", ["陈志强", "刘芳"]),
            ("麻烦帮我查一下赵敏的会员积分。", ["赵敏"]),
            (
                "收货地址：浙江省杭州市西湖区文三路138号3单元502室",
                ["浙江省杭州市西湖区文三路138号3单元502室"],
            ),
            ("经理孙丽丽已经批准了这次报销。", ["孙丽丽"]),
            ("谢谢你，小周！", ["小周"]),
            ("麻烦转告一下小王，明天不用来了。", ["小王"]),  # tenth round
            ("这是我女儿朵朵的学籍信息。", ["朵朵"]),  # tenth round
            ("麻烦帮我联系一下售后的阿强。", ["阿强"]),  # tenth round
            ("老王说他下周回上海。", ["老王", "上海"]),
            (
                "请把合同寄给郭靖，地址是成都市武侯区人民南路四段9号。",
                ["郭靖", "成都市武侯区人民南路四段9号"],
            ),
            ("宋佳怡同学的成绩单已经发到邮箱。", ["宋佳怡"]),
            ("公司地址：深圳市南山区科技园南区高新南七道", ["深圳市南山区科技园南区高新南七道"]),
        ],
    )
    def test_every_character_of_a_plain_chinese_name_is_masked(
        self, desensitizer: Desensitizer, text: str, values: list[str]
    ) -> None:
        result = desensitizer.desensitize(text)
        assert left_in_clear(result, text, values) == [], result.text

    def test_ignores_identifiers_with_bad_check_digits(self, desensitizer: Desensitizer) -> None:
        # A card number after 卡号 is a card even with a bad check digit (issue 12: a
        # mistyped card number is still one), and so is a resident ID after 身份证号 (eleventh
        # round: its birth date and region are still the holder's); a credit code is not, nor a
        # resident ID without its context word.
        text = "身份证号110101199003078516，卡号6222021234567890127，代码91350100M000100Y44"
        assert [t for t, _ in found(desensitizer.desensitize(text), text)] == ["CN_RESIDENT_ID", "BANK_CARD"]
        text = "流水号110101199003078516，代码91350100M000100Y44"
        assert found(desensitizer.desensitize(text), text) == []

    def test_runs_english_ner_on_the_latin_runs_of_mixed_text(self, desensitizer: Desensitizer) -> None:
        text = "会议由John Smith主持，地点在上海。"
        result = desensitizer.desensitize(text)
        assert ("PERSON", "John Smith") in found(result, text)
        assert result.language == "mixed"

    def test_never_shows_cjk_text_to_the_english_model(
        self, desensitizer: Desensitizer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        nlp = desensitizer.engine.nlp
        seen: list[str] = []
        original = nlp.pipe

        def spy(texts: Iterator[str], **kwargs: Any) -> Iterator[object]:
            def record() -> Iterator[str]:
                for t in texts:
                    seen.append(t)
                    yield t

            return original(record(), **kwargs)

        monkeypatch.setattr(nlp, "pipe", spy)
        tagger = desensitizer.engine.en_tagger
        tagged: list[str] = []
        if tagger is not None:
            tag = tagger.tag

            def tag_spy(texts: list[str]) -> Any:
                tagged.extend(texts)
                return tag(texts)

            monkeypatch.setattr(tagger, "tag", tag_spy)
        records = ["张伟先生的电话是13812345678。", "客户John Smith在上海的地址", "Alice lives in Paris."]
        desensitizer.desensitize_batch(records)
        cjk = "[\u3000-\u9fff\uff00-\uffef]"
        if tagger is not None:
            # The tagger reads the names (the Chinese record not at all); spaCy only dates, which
            # need a digit: none of these sentences has one.
            assert seen == []
            assert len(tagged) == 2 and all(re.search(cjk, t) is None for t in tagged)
            assert tagged[0].strip() == "John Smith"
            # With the tagger off, spaCy reads the names itself.
            monkeypatch.setattr(desensitizer.engine, "en_tagger", None)
            desensitizer.desensitize_batch(records)
        assert len(seen) == 2  # the Chinese record is not sent at all
        assert all(re.search(cjk, t) is None for t in seen)
        assert seen[0].strip() == "John Smith"

    def test_forced_chinese_runs_no_english_ner(self, desensitizer: Desensitizer) -> None:
        text = "Alice Johnson lives in Paris."
        assert desensitizer.desensitize(text, language="zh").spans == ()
        assert desensitizer.desensitize(text, language="en").spans != ()

    def test_rejects_an_unknown_language(self, desensitizer: Desensitizer) -> None:
        with pytest.raises(Invalid) as caught:
            desensitizer.desensitize_batch(["x"], language="fr")
        assert caught.value.errors[0]["pointer"] == "/language"

    def test_keeps_input_order_and_count(self, desensitizer: Desensitizer) -> None:
        texts = [f"record {i} mail a{i}@example.com" for i in range(40)] + ["", "张伟先生"]
        results = desensitizer.desensitize_batch(texts)
        assert [r.text for r in results[:2]] == [
            "record 0 mail <EMAIL_ADDRESS>",
            "record 1 mail <EMAIL_ADDRESS>",
        ]
        assert results[40] == Desensitized("", (), "other")
        assert len(results) == len(texts)


class TestEnglishCascade:
    """The exact stages in front of the NER model, and the precision rules after it (issue 12)."""

    def test_a_handle_is_a_person_and_a_hashtag_is_not(self, desensitizer: Desensitizer) -> None:
        text = "@maria_k see you at the game #GoReds #WinningTeam"
        assert found(desensitizer.desensitize(text), text) == [("PERSON", "@maria_k")]

    # Plain sentences a provider's records hold, each with the names in it: every letter of every
    # name is masked. A guard beside the aggregate figures for any new tagger or rule (eighth round
    # of issue 12: a head that scored better on dev left "Aisha" and "Chen" here in clear). Extend it
    # each round: it is cheap.
    @pytest.mark.parametrize(
        ("text", "names"),
        [
            (
                "Hello, this is Aisha Khan. My router drops the connection every few minutes.",
                ["Aisha", "Khan"],
            ),
            ("Hello, this is Wei Chen. My router drops the connection every few minutes.", ["Wei", "Chen"]),
            ("Please call Oluwaseun Adeyemi about the invoice.", ["Oluwaseun", "Adeyemi"]),
            ("Thanks, Siobhan O'Connor", ["Siobhan", "O'Connor"]),
            ("spoke with jamal at the front desk", ["jamal"]),
            (
                "Ticket opened by Lars Johansson on behalf of Mette Frederiksen.",
                ["Lars", "Johansson", "Mette", "Frederiksen"],
            ),
            ("my landlord kwame mensah never answers", ["kwame", "mensah"]),
            ("Meeting with Ms. Nguyen Thi Lan at 3pm", ["Nguyen", "Thi", "Lan"]),
            ("Zhang Wei sent the report to Ivan Petrov.", ["Zhang", "Wei", "Ivan", "Petrov"]),
            ("Tommy Wiseau called about the refund", ["Tommy", "Wiseau"]),
            # Ninth round: a speaker introducing themself ("this is", "I'm", "it's").
            (
                "Hello, this is Priya Raman. My router drops the connection every few minutes.",
                ["Priya", "Raman"],
            ),
            ("Hi team, it's Ngozi Okonkwo from accounts.", ["Ngozi", "Okonkwo"]),
            ("I'm Tariq Haddad and I would like a refund for order 5531.", ["Tariq", "Haddad"]),
            ("Thanks so much, Ines!", ["Ines"]),
            ("@priya.raman the invoice is attached", ["priya", "raman"]),
            # Tenth round: a greeting before a comma.
            ("Hey Mo, the invoice is late.", ["Mo"]),
            ("the printer works now. thx, rahul", ["rahul"]),
            ('From: "Okafor, Chidi" <chidi.okafor@example.org>', ["Okafor", "Chidi"]),
        ],
    )
    def test_every_letter_of_a_plain_name_is_masked(
        self, desensitizer: Desensitizer, text: str, names: list[str]
    ) -> None:
        result = desensitizer.desensitize(text)
        assert left_in_clear(result, text, names) == [], result.text

    @pytest.mark.parametrize(
        ("text", "values"),
        [
            # Eleventh round's walk: chat logs, credentials, postcodes, Chinese IDs and addresses.
            ("[09:14] <jpark> anyone seen the deploy logs?", ["jpark"]),
            ("Login: grizzlybear_88 / pw hunter2", ["grizzlybear_88", "hunter2"]),
            ("Sep 12 03:22:17 web01 sshd[2231]: Accepted publickey for kwame from 10.2.3.44", ["kwame"]),
            (
                "Charming 3-bed semi on Elm Grove, Harrogate HG1 2LS. "
                "Contact agent Priyanka Desai on 07700 900123.",
                ["HG1", "2LS"],
            ),
            ("Shipping to: Mr. Kenji Watanabe, 2-11-3 Shibuya, Shibuya-ku, Tokyo 150-0002, Japan", ["150"]),
            ("Student number s4412897.", ["s4412897"]),
            (
                "身份证号：110105199003071234，姓名：马晓东，住址：北京市朝阳区望京街道花家地北里3号楼",
                ["110105199003071234", "马晓东", "花家地", "北里", "3号楼"],
            ),
            ("我是杭州阿里巴巴的员工，我的工号是A0031927。", ["A0031927"]),
            ("客服小王：您好，请问您的订单号是多少？", ["小王"]),
            (
                '{"user": "okafor.c", "full_name": "Chidi Okafor", "ip": "172.16.4.9"}',
                ["okafor.c", "Chidi", "Okafor", "172.16.4.9"],
            ),
            ("Name: Lê Thị Hương\nDOB: 12/05/1987", ["Lê", "Thị", "Hương", "12/05/1987"]),
            (
                "Posted by grandma_ruth on 03/02/2023: my grandson Tyler found this",
                ["grandma", "ruth", "Tyler"],
            ),
            ("My neighbour Femi keeps parking in my spot. His reg is LD19 XKE.", ["Femi", "LD19", "XKE"]),
            (
                "| Name | Phone | City |\n| --- | --- | --- |\n| Rosa Álvarez | 612 345 678 | Valencia |",
                ["612 345 678"],
            ),
            ("加我微信：zhangwei_1988，QQ号是384756291，备注一下来意。", ["zhangwei_1988", "384756291"]),
            ("车牌号沪A·3B7K9的车主请挪车，电话找物业的宋女士。", ["沪A·3B7K9", "宋"]),
            ("昵称：追风少年，真实姓名：杨帆，年龄：24", ["追风少年", "杨帆"]),
            ("u/throwaway_kat88 posted my address on r/Portland, please remove it", ["throwaway", "kat88"]),
            (
                "My licence plate is ABC-1234 and the VIN is 1HGCM82633A004352.",
                ["ABC-1234", "1HGCM82633A004352"],
            ),
        ],
    )
    def test_every_character_of_what_a_walk_found_is_masked(
        self, desensitizer: Desensitizer, text: str, values: list[str]
    ) -> None:
        result = desensitizer.desensitize(text)
        assert left_in_clear(result, text, values) == [], result.text

    def test_a_time_after_an_address_cue_is_kept(self, desensitizer: Desensitizer) -> None:
        text = "The meeting moved to 3pm Thursday."
        assert desensitizer.desensitize(text).spans == ()

    def test_names_after_titles_and_in_lowercase_text(self, desensitizer: Desensitizer) -> None:
        text = "spoke to mr tanaka and then dr. okafor, my name is zoltan"
        assert [v for _, v in found(desensitizer.desensitize(text), text)] == ["tanaka", "okafor", "zoltan"]

    def test_organizations_are_on_by_default(self, desensitizer: Desensitizer) -> None:
        text = "She joined Northwind Logistics LLC after ten years at the Bank of Montreal."
        assert ("ORGANIZATION", "Northwind Logistics LLC") in found(desensitizer.desensitize(text), text)
        assert "ORGANIZATION" in Policy().entity_set

    def test_a_canadian_address_is_masked_whole(self, desensitizer: Desensitizer) -> None:
        text = "The package went to 55 Bloor St W, Toronto, ON M4W 1A5 instead."
        assert found(desensitizer.desensitize(text), text) == [
            ("LOCATION", "55 Bloor St W, Toronto, ON M4W 1A5")
        ]

    def test_street_addresses_and_places(self, desensitizer: Desensitizer) -> None:
        text = "Ship it to 4418 North Maple Avenue, Apt. 12, Springfield, IL 62704 before Friday."
        assert found(desensitizer.desensitize(text), text) == [
            ("LOCATION", "4418 North Maple Avenue, Apt. 12, Springfield, IL 62704")
        ]

    def test_relative_dates_and_nationalities_are_kept(self, desensitizer: Desensitizer) -> None:
        text = "This morning the French team said they will call again tonight, or on Monday."
        assert desensitizer.desensitize(text).spans == ()
        assert "NRP" not in Policy().entity_set
        assert "NRP" in Policy(entities=("NRP",)).entity_set

    def test_dates_with_digits_are_still_found(self, desensitizer: Desensitizer) -> None:
        text = "Born on March 3, 1987 in a small town."
        assert ("DATE_TIME", "March 3, 1987") in found(desensitizer.desensitize(text), text)

    def test_an_email_glued_to_the_next_word_is_cut_at_its_suffix(self, desensitizer: Desensitizer) -> None:
        text = "contact ann.lee@example.comPhone 4"
        assert found(desensitizer.desensitize(text), text) == [("EMAIL_ADDRESS", "ann.lee@example.com")]

    def test_a_passport_number_by_its_context(self, desensitizer: Desensitizer) -> None:
        text = "Passport no. X4829153 expires soon."
        assert ("PASSPORT", "X4829153") in found(desensitizer.desensitize(text), text)

    def test_sentences_without_a_possible_name_skip_the_model(
        self, desensitizer: Desensitizer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        nlp = desensitizer.engine.nlp
        seen: list[str] = []
        original = nlp.pipe

        def spy(texts: Iterator[str], **kwargs: Any) -> Iterator[object]:
            def record() -> Iterator[str]:
                for t in texts:
                    seen.append(t)
                    yield t

            return original(record(), **kwargs)

        monkeypatch.setattr(nlp, "pipe", spy)
        # The gate in front of spaCy's names (with the English tagger on, spaCy reads dates only).
        monkeypatch.setattr(desensitizer.engine, "en_tagger", None)
        text = "I am so tired today. The parcel went to Oslo yesterday! It was late."
        result = desensitizer.desensitize(text)
        assert seen == [" The parcel went to Oslo yesterday!"]
        assert found(result, text) == [("LOCATION", "Oslo")]


class TestNhsPhoneConflict:
    def test_stock_presidio_takes_the_phone_number_for_an_nhs_number(self) -> None:
        from presidio_analyzer.predefined_recognizers import NhsRecognizer

        number = nanp_number_passing_the_nhs_check()
        results = NhsRecognizer().analyze(f"Call me at {number}", ["UK_NHS"])
        assert [r.score for r in results] == [1.0]

    def test_a_north_american_number_stays_a_phone_number(self, desensitizer: Desensitizer) -> None:
        number = nanp_number_passing_the_nhs_check()
        text = f"Call me at {number} please."
        assert found(desensitizer.desensitize(text), text) == [("PHONE_NUMBER", number)]

    def test_an_nhs_number_with_context_stays_an_nhs_number(self, desensitizer: Desensitizer) -> None:
        text = "Her NHS number is 943 476 5919."
        # Organisations are reported by default since issue 12 (spaCy reads "NHS" as one; the
        # English tagger, which replaces spaCy's names when on, does not): the number is the point.
        spans = found(desensitizer.desensitize(text), text)
        assert ("UK_NHS", "943 476 5919") in spans
        assert set(spans) <= {("ORGANIZATION", "NHS"), ("UK_NHS", "943 476 5919")}


class TestOverlaps:
    def test_highest_score_wins_then_longest_span(self) -> None:
        candidates = [
            Candidate(0, 10, "PHONE_NUMBER", 0.6, "a"),
            Candidate(0, 10, "IP_ADDRESS", 0.95, "b"),
            Candidate(12, 20, "PERSON", 0.85, "c"),
            Candidate(12, 25, "LOCATION", 0.85, "d"),
            Candidate(30, 32, "PERSON", 0.4, "e"),
        ]
        kept = resolve(candidates, frozenset({"PHONE_NUMBER", "IP_ADDRESS", "PERSON", "LOCATION"}), 0.5)
        assert [(c.entity_type, c.start, c.end) for c in kept] == [
            ("IP_ADDRESS", 0, 10),
            ("LOCATION", 12, 25),
        ]


class TestOperators:
    TEXT = f"Mail jane.doe@example.com or call 13812345678; ID {CN_ID}; 张伟先生"

    def test_tag(self) -> None:
        result = run(Policy(), self.TEXT)
        assert result.text == "Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>; ID <CN_RESIDENT_ID>; <PERSON>先生"

    def test_redact(self) -> None:
        result = run(Policy(default_operator=OperatorSpec("redact")), self.TEXT)
        assert result.text == "Mail  or call ; ID ; 先生"

    def test_mask_keeping_the_last_characters(self) -> None:
        policy = Policy(
            default_operator=OperatorSpec("mask"),
            operators={"PHONE_NUMBER": OperatorSpec("mask", "#", keep_last=4)},
        )
        result = run(policy, self.TEXT)
        assert "call #######5678;" in result.text
        assert "ID ******************;" in result.text
        assert result.text.endswith("**先生")

    def test_pseudonyms_are_stable_within_a_key_and_differ_across_keys(self) -> None:
        policy = Policy(default_operator=OperatorSpec("pseudonym"))
        text = "张伟先生 and 张伟先生; call 138-1234-5678 or 13812345678"
        first = run(policy, text).text
        pseudonyms = re.findall(r"<[A-Z_]+_[0-9a-f]{8}>", first)
        assert len(pseudonyms) == 4
        assert pseudonyms[0] == pseudonyms[1]  # the same person
        assert pseudonyms[2] == pseudonyms[3]  # the same number, written two ways
        assert run(policy, text).text == first
        other = run(policy, text, key=OTHER_KEY).text
        assert set(re.findall(r"<[A-Z_]+_[0-9a-f]{8}>", other)).isdisjoint(pseudonyms)

    def test_surrogates_are_realistic_and_deterministic_within_a_key(self) -> None:
        policy = Policy(default_operator=OperatorSpec("surrogate"))
        text = f"ID {CN_ID}, card {CARD}, mail jane.doe@example.com"
        result = run(policy, text)
        fake_id = re.search(r"ID (\S+),", result.text)
        fake_card = re.search(r"card (\d+),", result.text)
        assert fake_id and cn_resident_id_valid(fake_id.group(1)) and fake_id.group(1) != CN_ID
        assert fake_card and luhn_valid(fake_card.group(1)) and fake_card.group(1) != CARD
        assert re.search(r"mail \S+@example\.(com|org|net)$", result.text)
        assert run(policy, text).text == result.text
        assert run(policy, text, key=OTHER_KEY).text != result.text

    def test_surrogate_names_keep_the_script(self) -> None:
        result = run(Policy(default_operator=OperatorSpec("surrogate")), "请张伟先生回电")
        name = result.text.removeprefix("请").removesuffix("先生回电")
        assert name and all("\u4e00" <= c <= "\u9fff" for c in name) and name != "张伟"

    def test_spans_point_into_the_input_whatever_the_operator(self) -> None:
        kinds: tuple[OperatorKind, ...] = ("redact", "tag", "mask", "pseudonym", "surrogate")
        for kind in kinds:
            result = run(Policy(default_operator=OperatorSpec(kind)), self.TEXT)
            assert [self.TEXT[s.start : s.end] for s in result.spans] == [
                "jane.doe@example.com",
                "13812345678",
                CN_ID,
                "张伟",
            ]


class TestPolicyApplied:
    def test_only_the_listed_entities(self) -> None:
        result = run(Policy(entities=("EMAIL_ADDRESS",)), TestOperators.TEXT)
        assert [s.entity_type for s in result.spans] == ["EMAIL_ADDRESS"]

    def test_threshold(self) -> None:
        text = "ref (212) 555-0143"
        assert run(Policy(threshold=0.5), text).spans
        assert run(Policy(threshold=0.9), text).spans == ()

    def test_languages_choose_the_recognizers(self) -> None:
        text = f"Alice Johnson, ID {CN_ID}, 张伟先生"
        english_only = run(Policy(languages=("en",)), text)
        chinese_only = run(Policy(languages=("zh",)), text)
        assert ("PERSON", "Alice Johnson") in found(english_only, text)
        assert "CN_RESIDENT_ID" not in {s.entity_type for s in english_only.spans}
        assert ("PERSON", "张伟") not in found(english_only, text)
        assert found(chinese_only, text) == [("CN_RESIDENT_ID", CN_ID), ("PERSON", "张伟")]


class TestPolicy:
    def test_round_trips_through_its_json_form(self) -> None:
        policy = Policy(
            name="p",
            entities=("PERSON", "EMAIL_ADDRESS"),
            threshold=0.7,
            languages=("zh",),
            operators={"PERSON": OperatorSpec("mask", "#", 2)},
            default_operator=OperatorSpec("pseudonym"),
        )
        assert Policy.from_dict(policy.to_dict()) == policy
        assert hash(Policy.from_dict(policy.to_dict())) == hash(policy)
        assert pickle.loads(pickle.dumps(policy)) == policy  # noqa: S301 - our own bytes

    def test_fills_defaults_and_accepts_kind_shorthand(self) -> None:
        policy = Policy.from_dict({"operators": {"PERSON": "redact"}})
        assert policy.operator_for("PERSON") == OperatorSpec("redact")
        assert policy.operator_for("URL") == OperatorSpec("tag")
        assert policy.entities is None and policy.threshold == 0.5 and policy.languages == ("en", "zh")

    @pytest.mark.parametrize(
        ("data", "pointer"),
        [
            ({"operators": {"PERSON": {"kind": "shred"}}}, "/operators/PERSON/kind"),
            ({"operators": {"PERSON": {}}}, "/operators/PERSON/kind"),
            ({"operators": {"PERSON": {"kind": "mask", "mask_char": "##"}}}, "/operators/PERSON/mask_char"),
            ({"operators": {"PERSON": {"kind": "mask", "keep_last": True}}}, "/operators/PERSON/keep_last"),
            ({"operators": {"PERSON": {"kind": "mask", "colour": "red"}}}, "/operators/PERSON/colour"),
            ({"operators": {"FOO": "tag"}}, "/operators/FOO"),
            ({"operators": []}, "/operators"),
            ({"default_operator": {"kind": "mask", "keep_last": -1}}, "/default_operator/keep_last"),
            ({"entities": ["PERSON", "SHOE_SIZE"]}, "/entities/1"),
            ({"entities": []}, "/entities"),
            ({"entities": "PERSON"}, "/entities"),
            ({"threshold": 1.5}, "/threshold"),
            ({"threshold": "high"}, "/threshold"),
            ({"languages": ["en", "fr"]}, "/languages/1"),
            ({"languages": []}, "/languages"),
            ({"name": ""}, "/name"),
            ({"colour": "red"}, "/colour"),
        ],
    )
    def test_rejects_invalid_policies_with_pointers(self, data: dict, pointer: str) -> None:
        with pytest.raises(Invalid) as caught:
            Policy.from_dict(data)
        assert pointer in [e["pointer"] for e in caught.value.errors]
        assert caught.value.code == "custody.policy_invalid"

    def test_rejects_a_non_object(self) -> None:
        with pytest.raises(Invalid):
            Policy.from_dict(["not", "a", "policy"])

    def test_validates_on_construction_too(self) -> None:
        with pytest.raises(Invalid) as caught:
            Policy(threshold=-0.1, operators={"PERSON": OperatorSpec("tag")})
        assert [e["pointer"] for e in caught.value.errors] == ["/threshold"]
        with pytest.raises(Invalid):
            OperatorSpec("shred")  # type: ignore[arg-type]

    def test_named_policies(self) -> None:
        assert {"default", "strict"} <= set(NAMED_POLICIES)
        assert policy_named("strict").threshold < policy_named("default").threshold
        with pytest.raises(Invalid) as caught:
            policy_named("lenient")
        assert caught.value.code == "custody.policy_unknown"


class TestEngine:
    def test_is_built_once_per_process(self, desensitizer: Desensitizer) -> None:
        assert get_desensitizer(Policy(name="other"), OTHER_KEY).engine is desensitizer.engine

    def test_runs_only_what_ner_needs(self, desensitizer: Desensitizer) -> None:
        assert desensitizer.engine.nlp.pipe_names == ["ner"]

    def test_refuses_a_model_that_is_not_installed_instead_of_downloading_it(self) -> None:
        with pytest.raises(ImproperlyConfigured, match="not installed"):
            load_spacy_engine("xx_no_such_model_sm")

    def test_refuses_a_short_pseudonym_key(self) -> None:
        with pytest.raises(ValueError, match="at least 16 bytes"):
            Desensitizer(Policy(), b"short")

    def test_our_recognizers_also_work_inside_a_presidio_analyzer(self, desensitizer: Desensitizer) -> None:
        analyzer = desensitizer.engine.presidio_analyzer()
        text = f"身份证号{CN_ID}"
        results = analyzer.analyze(text, language="en", entities=["CN_RESIDENT_ID"])
        assert [(r.entity_type, text[r.start : r.end]) for r in results] == [("CN_RESIDENT_ID", CN_ID)]

    def test_stream_in_one_process_keeps_order(self, desensitizer: Desensitizer) -> None:
        texts = [f"a{i}@example.com" for i in range(10)]
        results = list(desensitize_stream(iter(texts), Policy(), KEY, processes=1, chunk_size=3))
        assert [r.spans for r in results] == [(Span(0, len(t), "EMAIL_ADDRESS", 1.0),) for t in texts]


class TestOffline:
    def test_urls_and_emails_never_touch_the_network(
        self, desensitizer: Desensitizer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from presidio_analyzer.predefined_recognizers import EmailRecognizer as StockEmailRecognizer

        from custody.recognizers.offline import offline_extractor

        attempts: list[object] = []

        def no_network(*args: object, **kwargs: object) -> None:
            attempts.append(args)
            raise OSError("network disabled in this test")

        monkeypatch.setattr(socket, "getaddrinfo", no_network)
        monkeypatch.setattr(socket, "create_connection", no_network)
        monkeypatch.setattr(socket.socket, "connect", no_network)
        offline_extractor.cache_clear()  # a fresh extractor must load the bundled snapshot only
        text = "See https://www.example.co.uk/x, www.sealroom.io or write to someone@mail.example.com.cn"
        result = desensitizer.desensitize(text)
        assert [s.entity_type for s in result.spans] == ["URL", "URL", "EMAIL_ADDRESS"]
        assert StockEmailRecognizer().validate_result("someone@example.org") is True
        assert attempts == []
