"""Sealroom's Chinese recognizers on their own (no spaCy): names, addresses, plates, passports, cards."""

from __future__ import annotations

import pytest

from custody.recognizers import (
    ChineseAddressRecognizer,
    ChineseEntityRecognizer,
    ChineseHandleRecognizer,
    ChineseNameRecognizer,
    CnAccountNumberRecognizer,
    CnDateRecognizer,
    CnLicensePlateRecognizer,
    CnPassportRecognizer,
    Recognizer,
    TextView,
)
from custody.recognizers.checksums import luhn_valid
from custody.recognizers.zh_address import divisions
from custody.recognizers.zh_segmenter import segment

BAD_LUHN_CARD = "6222021234567890127"


def found(recognizer: Recognizer, text: str, threshold: float = 0.5) -> list[tuple[str, str]]:
    """Return (entity type, matched text) for the candidates at or above the threshold."""
    view = TextView(text)
    if not recognizer.applies(view):
        return []
    return [(c.entity_type, text[c.start : c.end]) for c in recognizer.find(view) if c.score >= threshold]


def names(text: str) -> set[str]:
    """Return the names either Chinese name recognizer reports (as the engine runs both)."""
    return {
        value
        for recognizer in (ChineseNameRecognizer(), ChineseEntityRecognizer())
        for kind, value in found(recognizer, text)
        if kind == "PERSON"
    }


class TestSegmenter:
    def test_offsets_cover_the_text_and_words_carry_flags(self) -> None:
        text = "张伟在北京大学读书"
        words = segment(text)
        assert "".join(w.text for w in words) == text
        assert all(text[w.start : w.end] == w.text for w in words)
        assert ("北京大学", "nt") in {(w.text, w.flag) for w in words}

    def test_writes_no_cache_file(
        self, tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import tempfile

        from custody.recognizers import zh_segmenter

        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        monkeypatch.setattr(zh_segmenter, "_STATE", {})
        assert segment("李娜") != []
        assert list(tmp_path.iterdir()) == []  # type: ignore[attr-defined]


class TestChineseNames:
    @pytest.mark.parametrize(
        ("text", "name"),
        [
            ("用户王建国反馈订单未到", "王建国"),
            ("请和王明核对一下金额", "王明"),
            ("这项工作已交接给李娜了", "李娜"),
            ("麻烦核对张伟的身份信息", "张伟"),
            ("款项转账至刘洋的账户", "刘洋"),
            ("已转账到陈静名下", "陈静"),
            ("请核实赵磊的订单", "赵磊"),
            ("车主孙丽请挪车", "孙丽"),
            ("你微信加周杰，他会拉你进群", "周杰"),
            ("这事cc一下黄晓明", "黄晓明"),
        ],
    )
    def test_finds_names_after_context_words(self, text: str, name: str) -> None:
        assert name in names(text)

    @pytest.mark.parametrize(
        ("text", "name"),
        [
            ("昨天郭志强在会上提了三个问题", "郭志强"),
            ("这个方案是欧阳娜娜负责的", "欧阳娜娜"),
            ("据说马云当年也被拒绝过很多次", "马云"),
        ],
    )
    def test_finds_names_mid_sentence(self, text: str, name: str) -> None:
        assert name in names(text)

    @pytest.mark.parametrize(
        ("text", "name"),
        [
            ("谢谢你，小周！", "小周"),
            ("老王说他下周回来", "老王"),
            ("阿陈，快来看", "阿陈"),
            ("你好小李。", "小李"),
            # Tenth round: after 一下, 告诉, 通知, 谢谢.
            ("麻烦转告一下小王，明天不用来了。", "小王"),
            ("谢谢小张！", "小张"),
            ("这件事你问一下财务部的老郑。", "老郑"),
            ("技术员小刘已经上门维修过了。", "小刘"),  # before a word that follows names
            ("麻烦帮我联系一下售后的阿强。", "阿强"),  # 阿 and a common given-name character
            # Eleventh round: after 客服 and a title ending in 长.
            ("客服小王：您好，请问您的订单号是多少？", "小王"),
            ("组长老李说今天加班", "老李"),
            # A frequent surname and a form of address alone; a nickname after its label or 叫我.
            ("电话找物业的宋女士。", "宋女士"),
            ("请联系王老师", "王老师"),
            ("昵称：追风少年，真实姓名：杨帆", "追风少年"),
            ("叫我小鱼就行", "小鱼"),
            # A doubled-character pet name after a family word.
            ("这是我女儿朵朵的学籍信息。", "朵朵"),
            ("儿子乐乐今年上小学", "乐乐"),
        ],
    )
    def test_finds_the_familiar_form_standing_alone(self, text: str, name: str) -> None:
        assert name in names(text)

    @pytest.mark.parametrize(
        "text",
        [
            "小张家口很冷",
            "老李子树",
            "我们小区很安静",
            "老师好，小心路滑",
            "阿姨已经到了",
            "我们的小区已经很安静",
        ],
    )
    def test_the_familiar_form_inside_a_word_is_not_a_name(self, text: str) -> None:
        assert not {n for n in names(text) if n[0] in "小老阿"}

    @pytest.mark.parametrize("text", ["感谢老师的教导", "林林总总", "数学老师这么多", "叫我吃饭。"])
    def test_a_form_of_address_after_another_word_is_not_a_name(self, text: str) -> None:
        assert names(text) == set()

    @pytest.mark.parametrize("text", ["孩子天天哭，怎么办？", "宝宝慢慢长大了。", "我女儿常常生病"])
    def test_a_doubled_common_word_after_a_family_word_is_not_a_name(self, text: str) -> None:
        assert names(text) == set()

    @pytest.mark.parametrize(
        "text",
        [
            "我们的方法很简单，高兴就好",
            "王国的历史很长",
            "今天天气很温馨，大家都很开心",
            "和平发展是时代主题",
            "用户管理后台已上线",
            "请核实身份后办理",
        ],
    )
    def test_does_not_tag_common_words(self, text: str) -> None:
        assert names(text) == set()


class TestChineseEntities:
    def test_finds_places_and_organisations(self) -> None:
        text = "他毕业于北京大学，后来在中国工商银行上海分行工作"
        result = found(ChineseEntityRecognizer(), text)
        assert ("ORGANIZATION", "北京大学") in result
        assert any(kind == "ORGANIZATION" and "工商银行" in value for kind, value in result)

    def test_finds_an_organisation_by_its_suffix(self) -> None:
        text = "合同由深圳市腾飞科技有限公司签署"
        assert any(
            kind == "ORGANIZATION" and value.endswith("有限公司") and "腾飞" in value
            for kind, value in found(ChineseEntityRecognizer(), text)
        )

    def test_a_place_word_that_is_an_ordinary_word_is_not_a_place(self) -> None:
        assert found(ChineseEntityRecognizer(), "爱情一旦依附太多的理由") == []


class TestChineseAddressRecognizer:
    @pytest.mark.parametrize(
        ("text", "address"),
        [
            (
                "收货地址：广东省深圳市南山区科技园路1号腾讯大厦3栋2单元501室，电话",
                "广东省深圳市南山区科技园路1号腾讯大厦3栋2单元501室",
            ),
            ("寄到深圳南山区科技园路1号", "深圳南山区科技园路1号"),
            ("我家住在长安路88号3栋2单元501室，有空来玩", "长安路88号3栋2单元501室"),
            ("浙江省杭州市西湖区文三路90号", "浙江省杭州市西湖区文三路90号"),
            ("应该是成都市武侯区人民南路四段11号", "成都市武侯区人民南路四段11号"),
            (
                "快递放黑龙江省双鸭山市岭东区和化大道726号12幢1046门卫那里",
                "黑龙江省双鸭山市岭东区和化大道726号12幢1046",
            ),
            ("报案地点为江苏省盐城市射阳县阳平中路996号", "江苏省盐城市射阳县阳平中路996号"),
            # Inside a chain, a road may end in 道 (ninth round).
            ("公司在深圳市南山区科技园南区高新南七道", "深圳市南山区科技园南区高新南七道"),
            # A building with a Latin name first (tenth round).
            ("收件地址：北京市朝阳区建国路88号SOHO现代城A座1502", "北京市朝阳区建国路88号SOHO现代城A座1502"),
            # Beijing's 里 estates inside a chain (eleventh round).
            ("住址：北京市朝阳区望京街道花家地北里3号楼", "北京市朝阳区望京街道花家地北里3号楼"),
            # Two short names, the second no common word (eleventh round).
            ("我和我爸妈住在成都双流，过年回去", "成都双流"),
        ],
    )
    def test_finds_addresses(self, text: str, address: str) -> None:
        assert ("LOCATION", address) in found(ChineseAddressRecognizer(), text)

    @pytest.mark.parametrize("text", ["北京市朝阳区这里", "北京市朝阳区的邻里关系"])
    def test_li_after_a_particle_or_inside_a_word_is_no_estate(self, text: str) -> None:
        assert [text[c.start : c.end] for c in ChineseAddressRecognizer().find(TextView(text))] == [
            "北京市朝阳区"
        ]

    @pytest.mark.parametrize("text", ["我在北京市知道了这件事", "深圳市频道", "深圳市南山区南道"])
    def test_a_common_word_or_a_one_character_name_ending_in_dao_is_no_road(self, text: str) -> None:
        assert [c.score for c in ChineseAddressRecognizer().find(TextView(text))] == [0.6]

    def test_a_division_alone_is_a_place(self) -> None:
        candidates = ChineseAddressRecognizer().find(TextView("他来自四川省成都市"))
        assert [(c.entity_type, c.score) for c in candidates] == [("LOCATION", 0.6)]

    @pytest.mark.parametrize(
        "text", ["不走这几条路就没路走了", "退款原路返回", "南山很高", "电话138-1234-5678"]
    )
    def test_ignores_roads_without_numbers_and_short_names_alone(self, text: str) -> None:
        assert found(ChineseAddressRecognizer(), text) == []

    def test_ships_the_division_list(self) -> None:
        full, short, _ = divisions()
        assert {"广东省", "深圳市", "南山区", "香港特别行政区"} <= full
        assert "深圳" in short
        assert len(full) > 3000


class TestCnLicensePlateRecognizer:
    @pytest.mark.parametrize("plate", ["京A12345", "粤B·D12345", "沪AD12345", "苏E 5F8K2", "川A1234学"])
    def test_finds_plates(self, plate: str) -> None:
        assert found(CnLicensePlateRecognizer(), f"车牌号{plate}的车主请到前台") == [("LICENSE_PLATE", plate)]

    def test_finds_a_plate_without_a_context_word(self) -> None:
        assert found(CnLicensePlateRecognizer(), "昨天京N8M123在门口违停") == [("LICENSE_PLATE", "京N8M123")]

    @pytest.mark.parametrize("text", ["京AB股份", "型号京ABCDE", "编号X12345"])
    def test_ignores_what_is_not_a_plate(self, text: str) -> None:
        assert found(CnLicensePlateRecognizer(), text) == []


class TestCnPassportRecognizer:
    @pytest.mark.parametrize("number", ["E12345678", "G87654321", "EA1234567"])
    def test_finds_chinese_passports(self, number: str) -> None:
        assert found(CnPassportRecognizer(), f"护照号码{number}，签发日期") == [("PASSPORT", number)]
        assert found(CnPassportRecognizer(), f"编号{number}") == [("PASSPORT", number)]

    def test_other_formats_need_a_passport_word(self) -> None:
        assert found(CnPassportRecognizer(), "旅客护照：K1234567；航班") == [("PASSPORT", "K1234567")]
        assert found(CnPassportRecognizer(), "型号K1234567") == []


class TestCnAccountNumberRecognizer:
    def test_a_card_number_after_a_card_word_is_found_whatever_its_checksum(self) -> None:
        assert not luhn_valid(BAD_LUHN_CARD)
        assert found(CnAccountNumberRecognizer(), f"转账到卡号{BAD_LUHN_CARD}就行") == [
            ("BANK_CARD", BAD_LUHN_CARD)
        ]

    def test_a_grouped_card_number_after_a_card_word(self) -> None:
        grouped = "6222 0212 3456 7890 127"
        assert found(CnAccountNumberRecognizer(), f"我的银行卡号是{grouped}，别发错了") == [
            ("BANK_CARD", grouped)
        ]

    def test_an_account_number_after_an_account_word(self) -> None:
        assert found(CnAccountNumberRecognizer(), "请汇至以下账户：110234567890，开户行：工商银行") == [
            ("ID_NUMBER", "110234567890")
        ]

    @pytest.mark.parametrize(
        ("text", "number"),
        [
            ("我的工号是A0031927，我的领导是蒋凡。", "A0031927"),
            ("学号：2021013344", "2021013344"),
            ("病历号 00482913 的患者", "00482913"),
        ],
    )
    def test_a_staff_student_or_patient_number_after_its_word(self, text: str, number: str) -> None:
        assert found(CnAccountNumberRecognizer(), text) == [("ID_NUMBER", number)]

    @pytest.mark.parametrize("text", ["加我微信，QQ号是384756291，备注一下", "我的qq:10001"])
    def test_a_qq_number(self, text: str) -> None:
        assert [t for t, _ in found(CnAccountNumberRecognizer(), text)] == ["ID_NUMBER"]

    @pytest.mark.parametrize("text", ["QQ2024年的活动", "QQ音乐12345首歌"])
    def test_qq_without_a_number_of_its_own(self, text: str) -> None:
        assert found(CnAccountNumberRecognizer(), text) == []

    @pytest.mark.parametrize("text", ["工号后三位是123", "学号还没发", "会员号AB12"])
    def test_a_short_or_absent_number_after_an_id_word_is_not_one(self, text: str) -> None:
        assert found(CnAccountNumberRecognizer(), text) == []

    @pytest.mark.parametrize(
        "text", [f"订单号{BAD_LUHN_CARD}", "卡号后四位1234", "账号已冻结，请于2025年3月1日前联系", "卡券20元"]
    )
    def test_ignores_numbers_without_a_card_or_account_word(self, text: str) -> None:
        assert found(CnAccountNumberRecognizer(), text) == []


class TestTransliteratedNamesAndHandles:
    def test_finds_a_foreign_name_with_a_middle_dot_without_the_words_around_it(self) -> None:
        text = "年仅20岁的法比恩·维迪尔曾经来到中国"
        assert ("PERSON", "法比恩·维迪尔") in found(ChineseEntityRecognizer(), text)

    def test_finds_chinese_handles_up_to_the_next_handle_or_verb(self) -> None:
        text = "@天煞孤星鱼@金山的蒙蒙100@严之吟转发微博"
        assert found(ChineseHandleRecognizer(), text) == [
            ("PERSON", "@天煞孤星鱼"),
            ("PERSON", "@金山的蒙蒙100"),
            ("PERSON", "@严之吟"),
        ]

    def test_leaves_latin_handles_and_e_mail_addresses_alone(self) -> None:
        assert found(ChineseHandleRecognizer(), "联系@alice_w或邮件zhang@qq.com") == []


class TestCnDateRecognizer:
    @pytest.mark.parametrize(
        "date", ["2027年10月21日", "3月5号", "二〇二四年五月一日", "2001-03-05", "十二月三十一日"]
    )
    def test_finds_dates(self, date: str) -> None:
        assert found(CnDateRecognizer(), f"请于{date}前联系") == [("DATE_TIME", date)]

    @pytest.mark.parametrize("text", ["1956年成立", "第3月份", "订单2001-13-05"])
    def test_a_year_alone_or_an_impossible_date_is_not_a_date(self, text: str) -> None:
        assert found(CnDateRecognizer(), text) == []
