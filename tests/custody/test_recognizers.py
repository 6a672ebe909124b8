"""Sealroom's recognizers on their own (no spaCy): valid and invalid examples, CJK-glued identifiers."""

from __future__ import annotations

import pytest

from custody.recognizers import (
    BankCardRecognizer,
    ChineseNameRecognizer,
    CnLandlineRecognizer,
    CnMobileRecognizer,
    CnResidentIdRecognizer,
    CnUsccRecognizer,
    EmailRecognizer,
    PhoneRecognizer,
    Recognizer,
    TextView,
    UrlRecognizer,
)
from custody.recognizers.checksums import (
    cn_resident_id_check_char,
    cn_resident_id_valid,
    luhn_valid,
    nhs_valid,
    uscc_check_char,
    uscc_valid,
)

VALID_ID = "110101199003078515"
VALID_ID_X = "11010519491231002X"
VALID_USCC = "91350100M000100Y43"
VALID_CARD_19 = "6222021234567890128"


def found(recognizer: Recognizer, text: str, threshold: float = 0.5) -> list[tuple[str, str]]:
    """Return (entity type, matched text) for the candidates at or above the threshold."""
    view = TextView(text)
    if not recognizer.applies(view):
        return []
    return [(c.entity_type, text[c.start : c.end]) for c in recognizer.find(view) if c.score >= threshold]


class TestChecksums:
    def test_resident_id_check_character(self) -> None:
        assert cn_resident_id_check_char(VALID_ID[:17]) == "5"
        assert cn_resident_id_valid(VALID_ID)
        assert cn_resident_id_valid(VALID_ID_X)
        assert cn_resident_id_valid(VALID_ID_X.lower())

    @pytest.mark.parametrize(
        "bad",
        [
            "110101199003078516",  # wrong check character
            "110101199013078515",  # month 13
            "110101219003078510",  # born in 2190
            "910101199003078515",  # no province 9
            "11010119900307851",  # 17 characters
        ],
    )
    def test_resident_id_rejects(self, bad: str) -> None:
        assert not cn_resident_id_valid(bad)

    def test_uscc_check_character(self) -> None:
        assert uscc_check_char(VALID_USCC[:17]) == "3"
        assert uscc_valid(VALID_USCC)
        assert not uscc_valid(VALID_USCC[:17] + "4")
        assert not uscc_valid("91350100M000100YI3")  # I is not in the alphabet

    def test_luhn(self) -> None:
        assert luhn_valid(VALID_CARD_19)
        assert luhn_valid("4111111111111111")
        assert not luhn_valid("4111111111111112")
        assert not luhn_valid("4111 1111")

    def test_nhs(self) -> None:
        assert nhs_valid("943 476 5919")
        assert not nhs_valid("943 476 5918")


class TestCnResidentIdRecognizer:
    def test_finds_an_id_written_against_chinese_text(self) -> None:
        assert found(CnResidentIdRecognizer(), f"身份证号{VALID_ID}的用户") == [("CN_RESIDENT_ID", VALID_ID)]

    def test_finds_an_id_ending_in_x(self) -> None:
        assert found(CnResidentIdRecognizer(), f"证件：{VALID_ID_X}。") == [("CN_RESIDENT_ID", VALID_ID_X)]

    def test_ignores_a_bad_check_character_without_a_context_word(self) -> None:
        assert found(CnResidentIdRecognizer(), "流水号110101199003078516的用户") == []

    def test_a_bad_check_character_after_a_context_word_is_still_an_id(self) -> None:
        # A mistyped check digit leaves the birth date and place in clear (eleventh round).
        assert not cn_resident_id_valid("110101199003078516")
        assert found(CnResidentIdRecognizer(), "身份证号：110101199003078516，姓名") == [
            ("CN_RESIDENT_ID", "110101199003078516")
        ]
        # Not a birth date (month 13): not an ID, context or not.
        assert found(CnResidentIdRecognizer(), "身份证号：110101199013078516") == []

    def test_ignores_an_id_inside_a_longer_number(self) -> None:
        assert found(CnResidentIdRecognizer(), f"订单9{VALID_ID}") == []

    def test_reports_a_legacy_15_digit_id_only_with_context(self) -> None:
        assert found(CnResidentIdRecognizer(), "身份证号码：110101900307851") == [
            ("CN_RESIDENT_ID", "110101900307851")
        ]
        assert found(CnResidentIdRecognizer(), "流水号：110101900307851") == []


class TestCnMobileRecognizer:
    @pytest.mark.parametrize(
        "number", ["13812345678", "+86 138 1234 5678", "138-1234-5678", "+8613812345678"]
    )
    def test_finds_mobile_numbers(self, number: str) -> None:
        assert found(CnMobileRecognizer(), f"电话{number}联系") == [("PHONE_NUMBER", number)]

    @pytest.mark.parametrize("text", ["号码12812345678", "编号138123456789", "订单213812345678"])
    def test_ignores_what_is_not_a_mobile(self, text: str) -> None:
        assert found(CnMobileRecognizer(), text) == []

    def test_context_raises_the_score(self) -> None:
        [plain] = CnMobileRecognizer().find(TextView("编号 13812345678"))
        [with_context] = CnMobileRecognizer().find(TextView("手机 13812345678"))
        assert with_context.score > plain.score >= 0.5


class TestCnLandlineRecognizer:
    def test_finds_a_landline_with_context_only(self) -> None:
        assert found(CnLandlineRecognizer(), "座机010-62345678") == [("PHONE_NUMBER", "010-62345678")]
        assert found(CnLandlineRecognizer(), "批次010-62345678") == []


class TestBankCardRecognizer:
    def test_finds_a_19_digit_card_written_against_chinese_text(self) -> None:
        assert found(BankCardRecognizer(), f"卡号{VALID_CARD_19}已冻结") == [("BANK_CARD", VALID_CARD_19)]

    def test_finds_a_grouped_card(self) -> None:
        grouped = "6222 0212 3456 7890 128"
        assert found(BankCardRecognizer(), f"银行卡 {grouped}") == [("BANK_CARD", grouped)]

    def test_ignores_a_bad_luhn_digit(self) -> None:
        assert found(BankCardRecognizer(), "卡号6222021234567890127已冻结") == []

    def test_a_luhn_valid_number_without_context_stays_below_threshold(self) -> None:
        assert found(BankCardRecognizer(), "批次 4000000000000002") == []


class TestCnUsccRecognizer:
    def test_finds_a_code(self) -> None:
        assert found(CnUsccRecognizer(), f"统一社会信用代码{VALID_USCC}") == [("CN_USCC", VALID_USCC)]

    def test_ignores_a_bad_check_character(self) -> None:
        assert found(CnUsccRecognizer(), "统一社会信用代码91350100M000100Y44") == []


class TestChineseNameRecognizer:
    @pytest.mark.parametrize(
        ("text", "name"),
        [
            ("姓名：王小明，性别：男", "王小明"),
            ("联系人张伟电话13812345678", "张伟"),
            ("请张伟明先生到前台", "张伟明"),
            ("李娜女士已签收", "李娜"),
            ("欧阳娜娜老师讲课", "欧阳娜娜"),
            ("请向王明先生问好", "王明"),
            ("记者王芳表示，进展顺利", "王芳"),
            ("转账至何可的账户", "何可"),
            ("Account holder: 罗鸣瀚, card", "罗鸣瀚"),
        ],
    )
    def test_finds_names_with_context(self, text: str, name: str) -> None:
        assert ("PERSON", name) in found(ChineseNameRecognizer(), text)

    @pytest.mark.parametrize(
        "text",
        [
            "他今天很高兴，方法也很多，时间还早。",
            "客户关系管理系统",
            "联系方式见附件",
        ],
    )
    def test_stays_quiet_without_a_name(self, text: str) -> None:
        assert found(ChineseNameRecognizer(), text, threshold=0.0) == []

    def test_a_surname_with_a_form_of_address_names_someone(self) -> None:
        # Eleventh round: "王先生" names a person both sides know (Weibo NER labels 江小姐, 顾老师
        # PERSON); until then this record was kept whole.
        assert found(ChineseNameRecognizer(), "王先生和李女士都到了。") == [
            ("PERSON", "王先生"),
            ("PERSON", "李女士"),
        ]

    def test_finds_a_name_again_where_it_recurs(self) -> None:
        text = "联系人：张伟。张伟的同事也来了。"
        assert found(ChineseNameRecognizer(), text) == [("PERSON", "张伟"), ("PERSON", "张伟")]


class TestScriptNeutralRecognizers:
    def test_email_written_against_chinese_text(self) -> None:
        assert found(EmailRecognizer(), "邮箱zhang.wei@example.cn请回复") == [
            ("EMAIL_ADDRESS", "zhang.wei@example.cn")
        ]

    def test_email_needs_a_public_suffix(self) -> None:
        assert found(EmailRecognizer(), "write to someone@host.notasuffix") == []

    def test_url_stops_at_chinese_text(self) -> None:
        assert found(UrlRecognizer(), "网址https://www.example.cn/about联系我们") == [
            ("URL", "https://www.example.cn/about")
        ]

    def test_bare_host_needs_a_public_suffix(self) -> None:
        assert found(UrlRecognizer(), "see www.sealroom.io, not file.notasuffix") == [
            ("URL", "www.sealroom.io")
        ]

    def test_url_is_not_taken_from_an_email_address(self) -> None:
        assert found(UrlRecognizer(), "mail john@example.com") == []

    def test_phone_written_against_chinese_text(self) -> None:
        assert found(PhoneRecognizer(), "电话+1 212 555 0143联系") == [("PHONE_NUMBER", "+1 212 555 0143")]

    def test_ip_addresses_and_dates_are_not_phones(self) -> None:
        assert found(PhoneRecognizer(), "from 58.49.207.121 on 2023-05-12", threshold=0.0) == []


class TestContext:
    def test_english_context_words_match_inflections(self) -> None:
        view = TextView("Her phones are 13812345678")
        assert view.has_context(15, 26, CnMobileRecognizer.context)

    def test_stop_words_do_not_use_up_the_window(self) -> None:
        view = TextView("my mobile is the one that is 13812345678")
        assert view.has_context(29, 40, CnMobileRecognizer.context)

    def test_chinese_context_words(self) -> None:
        view = TextView("手机：13812345678")
        assert view.has_context(3, 14, CnMobileRecognizer.context)
