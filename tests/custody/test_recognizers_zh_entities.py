"""The Chinese entity stages added for issue 12's second pass: each class of miss, with examples written here.

Joined names, transliterated names, listed countries and cities, places and
organisations by their suffix, well-known organisations, armies, and
addresses that need a house number. None of the sentences
comes from the development set.
"""

from __future__ import annotations

from custody.recognizers import (
    ChineseAddressRecognizer,
    ChineseEntityRecognizer,
    ChineseNameRecognizer,
    Recognizer,
    TextView,
)
from custody.recognizers.zh_entities import _plausible_name, known_organizations, world_places


def found(recognizer: Recognizer, text: str, threshold: float = 0.5) -> set[tuple[str, str]]:
    """Return (entity type, matched text) for the candidates at or above the threshold."""
    view = TextView(text)
    if not recognizer.applies(view):
        return set()
    return {(c.entity_type, text[c.start : c.end]) for c in recognizer.find(view) if c.score >= threshold}


def entities(text: str) -> set[tuple[str, str]]:
    return found(ChineseEntityRecognizer(), text)


class TestNames:
    def test_a_name_the_segmenter_joined_keeps_a_given_character_the_anchored_rules_refuse(self) -> None:
        # 日 is never a given-name character after a label, but the segmenter's HMM joined 邓日辉 itself.
        assert ("PERSON", "邓日辉") in entities("会上，邓日辉提出了新的方案")

    def test_a_joined_word_with_a_particle_is_no_name(self) -> None:
        assert _plausible_name("邓日辉", joined=True)
        assert not _plausible_name("邓日辉")  # 日 alone is no given-name character
        assert not _plausible_name("邓的辉", joined=True)
        assert not _plausible_name("邓们好", joined=True)

    def test_a_transliterated_name_without_a_dot(self) -> None:
        assert ("PERSON", "迪斯雷利") in entities("迪斯雷利计划减轻关税")

    def test_a_given_name_before_a_title_is_kept_instead(self) -> None:
        result = found(ChineseNameRecognizer(), "王明先生来了")
        assert ("PERSON", "王明") in result
        assert ("PERSON", "明先生") not in result


class TestWorldPlaces:
    def test_a_country_the_dictionary_calls_a_person_is_a_place(self) -> None:
        result = entities("他们去年搬到了爱尔兰")
        assert ("LOCATION", "爱尔兰") in result
        assert ("PERSON", "爱尔兰") not in result

    def test_a_country_at_the_start_of_a_longer_word(self) -> None:
        assert ("LOCATION", "日本") in entities("日本首相昨天发表讲话")

    def test_the_list_loads_and_skips_comments(self) -> None:
        places = world_places()
        assert "莫斯科" in places["莫"]
        assert not any(name.startswith("#") for names in places.values() for name in names)


class TestSuffixes:
    def test_a_place_by_its_suffix(self) -> None:
        assert ("LOCATION", "杉浦区") in entities("后来她搬到杉浦区")

    def test_a_common_word_ending_like_a_place_is_not_one(self) -> None:
        assert not entities("她买了一根接地线")
        assert not entities("这台电脑很好用")

    def test_a_newspaper_made_of_a_city_and_a_suffix(self) -> None:
        assert ("ORGANIZATION", "深圳晚报") in entities("他在深圳晚报工作多年")

    def test_a_village_named_by_a_common_noun(self) -> None:
        # The segmenter cuts 石门 (a noun) from 村: the village's own word makes it a place.
        assert ("LOCATION", "石门村") in entities("她老家在石门村")
        assert not entities("这个镇很小")

    def test_a_place_the_dictionary_calls_a_person_is_only_a_place(self) -> None:
        result = entities("游客来到了白云寺")
        assert ("LOCATION", "白云寺") in result
        assert ("PERSON", "白云寺") not in result

    def test_a_bank_named_by_a_common_noun(self) -> None:
        assert ("ORGANIZATION", "汇业银行") in entities("她在汇业银行上班")
        assert not entities("他在这家银行上班")

    def test_a_place_opens_on_a_proper_noun_not_on_the_nouns_before_it(self) -> None:
        spans = {v for k, v in entities("买了水饺之后去了金沙码头") if k == "LOCATION"}
        assert "金沙码头" in spans
        assert not any("水饺" in v for v in spans)

    def test_an_emoticon_in_brackets_is_no_name(self) -> None:
        assert not {v for k, v in entities("有点小不爽[奥特曼]") if k == "PERSON"}

    def test_an_army_by_its_country(self) -> None:
        assert ("ORGANIZATION", "英军") in entities("英军在海岸登陆")


class TestKnownOrganizations:
    def test_companies_named_without_a_suffix(self) -> None:
        result = entities("我在腾讯上班，朋友在百度")
        assert {("ORGANIZATION", "腾讯"), ("ORGANIZATION", "百度")} <= result

    def test_only_whole_words(self) -> None:
        # 网易 inside 上网易懂 (上网 / 易懂) is no word of its own.
        assert "网易" in known_organizations()["网"]
        assert ("ORGANIZATION", "网易") not in entities("上网易懂")


class TestAddresses:
    def test_a_road_without_a_division_needs_a_house_number(self) -> None:
        assert found(ChineseAddressRecognizer(), "祝您一路顺风") == set()
        assert found(ChineseAddressRecognizer(), "猫要到第三周走路才稳") == set()

    def test_a_numbered_road_is_still_an_address(self) -> None:
        assert ("LOCATION", "长安路88号") in found(ChineseAddressRecognizer(), "请寄到长安路88号")
        assert ("LOCATION", "人民路三号") in found(ChineseAddressRecognizer(), "住在人民路三号")
