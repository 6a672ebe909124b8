"""Chinese names, places and organisations anywhere in a sentence, from a segmenter with word flags.

The context rules of ``names_zh`` find a name where the text announces one
(姓名：, 先生, 转账至 ...); this recognizer finds the rest. jieba cuts the
record into words (``zh_segmenter``), and each word is judged by its
dictionary flag and its shape:

- ``nr`` (person) and ``nrfg`` words that start with a surname, ``nrt``
  (transliterated foreign names), and words the dictionary does not know
  made of a surname and one or two given-name characters -> PERSON;
- ``ns`` (place) words, and runs of them ("北京" "朝阳区") -> LOCATION;
- Han words joined by a middle dot (transliterated foreign names) -> PERSON;
- ``nt`` (organisation) words, and a name-like run of words that ends in an
  organisation word (公司, 集团, 银行, 大学, 医院 ...) -> ORGANIZATION.

Scores sit just above the default threshold (0.5): a context or pattern
match from another recognizer wins an overlap.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Final

from custody.language import HAN_CLASS
from custody.recognizers.base import Candidate, Recognizer, TextView
from custody.recognizers.names_zh import (
    COMPOUND_SURNAMES,
    NON_GIVEN,
    SINGLE_SURNAMES,
    STOP_WORDS,
    TOP_SURNAMES,
)
from custody.recognizers.zh_model import agreement, enabled
from custody.recognizers.zh_segmenter import Word, segment, word_flag, word_frequency

WORLD_PLACES_FILE: Final = Path(__file__).resolve().parent / "data" / "zh_world_places.txt"
ORGANIZATIONS_FILE: Final = Path(__file__).resolve().parent / "data" / "zh_organizations.txt"
PERSON_SCORE: Final = 0.6
UNKNOWN_PERSON_SCORE: Final = 0.55
PLACE_SCORE: Final = 0.6
ORGANIZATION_SCORE: Final = 0.6
# The character tagger (zh_model) vets these types: a span it gives a mean entity probability
# below VETO_BELOW is dropped (chosen on dev: docs/desensitization.md).
VETTED_TYPES: Final = frozenset({"PERSON", "LOCATION"})
VETO_BELOW: Final = 0.35
# How many words before an organisation word may belong to its name.
# A two-character word flagged as a name but this frequent is an ordinary word (王子, 温馨).
FREQUENT_WORD: Final = 100
ORGANIZATION_WORDS_BEFORE: Final = 3
ORGANIZATION_MAX_CHARS: Final = 16

_HAN_ONLY: Final = re.compile(f"[{HAN_CLASS}]+")
# Foreign names are transliterated with a middle dot between their parts: 法比恩·维迪尔.
# Both sides are made of the characters transliteration uses, so that the
# words around the name ("岁的法比恩·维迪尔曾经") stay out of it.
TRANSLITERATION_CHARS: Final = (
    "阿埃艾安昂奥巴拜班邦鲍贝本比彼毕别宾波伯博布查达戴丹道德登迪蒂丁东杜多厄恩法范菲费芬丰弗福富盖甘冈戈格"
    "贡古瓜哈海汉豪赫亨胡华霍基吉加贾杰金卡凯坎康考柯科克肯库夸奎拉莱兰朗劳勒雷蕾里利莉林琳卢鲁伦罗洛马麦曼"
    "梅门蒙米密敏莫默姆穆纳奈南内尼妮宁纽努诺欧帕潘庞佩彭皮珀普奇乔切琼丘萨塞桑瑟森沙莎尚舍圣施什史斯松苏索"
    "塔泰坦汤唐特提图托瓦万旺威韦维温沃乌伍西希锡谢辛休许雅亚扬耶伊因英尤于约扎泽詹朱卓兹佐娅娜丝琪茨尔姆买"
    "提力木热合江古丽"
)
_DOTTED_NAME: Final = re.compile(
    f"[{TRANSLITERATION_CHARS}]{{1,8}}(?:[·•・][{TRANSLITERATION_CHARS}]{{1,8}})+"
)


# A Latin name written before an organisation word in Chinese text (Google公司, Frito-Lay公司,
# IBM中国研究院 aside): the segmenter gives the Latin word no flag, so the suffix rule below does
# not reach it (fifth round, train split). A capital letter opens the name.
_HAS_LATIN: Final = re.compile("[A-Z]")
_LATIN_ORGANIZATION: Final = re.compile(
    "(?<![A-Za-z0-9&.\\-])[A-Z][A-Za-z0-9&.\\-]*(?:[ ][A-Z][A-Za-z0-9&.\\-]*){0,3}"
    "(?:公司|集团|银行|大学|学院|基金会|研究院|研究所|协会|俱乐部|事务所|电视台|出版社|控股|科技)"
)


def _split(*lines: str) -> tuple[str, ...]:
    return tuple(" ".join(lines).split())


ORGANIZATION_SUFFIXES: Final = tuple(
    sorted(
        _split(
            "公司 集团 银行 大学 学院 医院 中学 小学 幼儿园 委员会 协会 学会 研究院 研究所 研究中心 基金会",
            "出版社 报社 杂志社 电视台 广播电台 俱乐部 工作室 事务所 法院 检察院 政府 公安局 派出所 分局",
            "支行 分行 总局 管理局 办公室 联合会 商会 实验室 合作社 酒店 宾馆 饭店 证券 保险 基金 控股 科技",
            "联盟 洋行 电讯 电器 舰队 部队 航空 传媒 影业 党 军 队",
            "社 局 处 署 厅 日报 晚报 周刊 学堂 书院 剧团 剧院 图书馆 博物馆 美术馆 理事会 议会 教会",
            "乐队 乐团 球队 频道 书店 总署 总会 公会 电视台 新闻网 百货 商场 超市 餐厅 旗舰店",
        ),
        key=len,
        reverse=True,
    )
)
# Flags of words that can be part of an organisation's name before its suffix.
_NAME_FLAGS: Final = frozenset({"ns", "nr", "nrt", "nz", "nt", "j", "eng", "", "n", "nrfg"})
# Flags of the proper nouns that make a run of words ending in an organisation word a name.
_PROPER_FLAGS: Final = frozenset({"ns", "nr", "nrt", "nz", "nt", "j", "eng", "", "nrfg"})
_PERSON_FLAGS: Final = frozenset({"nr", "nrfg"})
# Flags of the dictionary's proper nouns (a word made of one of them and a suffix is a name).
_NAMED_FLAGS: Final = frozenset({"ns", "nr", "nrt", "nz", "nt", "j", "nrfg"})
# Measure words, units and the like, which end words such as "余人" or "汤汁", not names.
_NOT_GIVEN: Final = frozenset("人们个些种样点次元件岁汁节")
# Particles, pronouns and function words: never part of a given name, even one the segmenter joined.
_FUNCTION_CHARS: Final = frozenset(
    "的了是在和与我你他她它们这那个不也就都着过吗呢吧啊哦嗯被把将给对从向到说为以及之其或"
)
_PLACE_FLAGS: Final = frozenset({"ns"})
# Flags of words that end in a place suffix without naming a place: verbs, adjectives, adverbs, measures.
_NOT_PLACE_FLAGS: Final = frozenset(
    {"v", "vn", "vd", "a", "ad", "d", "m", "q", "mq", "r", "p", "c", "u", "f"}
)
_GIVEN_FLAGS: Final = frozenset({"nr", "nrfg", "nrt", ""})
# Place words that are everyday nouns far more often than names of places.
PLACE_STOP_WORDS: Final = frozenset(
    _split(
        "东方 西方 南方 北方 中央 天下 海外 国外 国内 内地 大陆 全国 各地 当地 本地 外地 山区 农村 城市 世界",
        "美丽 东西 青春 太阳 长大 台风 太多 二哥 伦理 回国 英雄 神圣 福利 喜庆 拜拜 大街 加盟 新鲜 东南 西南",
        "东北 西北 南北 建国 外国 湖泊 美得 哥哥 拱桥 石桥 午休 爱国 香水 大国 上市 长度 城镇 朝廷 黑洞 入口",
        "平原 吉利 庆典 捉弄 新春 网路 邦联 王国 帝国 海湾 三本 城区 郊区 市区 景区 小区 社区 街道 大道",
    )
)


def _is_surname_word(word: str) -> bool:
    if word[:2] in COMPOUND_SURNAMES:
        return 3 <= len(word) <= 4
    return word[0] in SINGLE_SURNAMES and 2 <= len(word) <= 3


def _plausible_name(word: str, *, joined: bool = False) -> bool:
    """Say whether a word shaped like a name could be one: a surname, then given-name characters.

    ``joined``: a surname and two characters the segmenter's HMM joined into one
    unknown word (樊日行, 张继科); the HMM has already judged them one word, so
    only particles and function words rule the given name out.
    """
    if not _HAN_ONLY.fullmatch(word) or not _is_surname_word(word):
        return False
    if word in STOP_WORDS or word[:2] in STOP_WORDS:
        return False
    given = word[2:] if word[:2] in COMPOUND_SURNAMES else word[1:]
    if joined and len(given) == 2:
        return not any(c in _FUNCTION_CHARS or c in _NOT_GIVEN for c in given)
    return not any(c in NON_GIVEN or c in _NOT_GIVEN for c in given)


def _split_name(surname: Word, given: Word | None) -> tuple[int, float] | None:
    """Join a surname the segmenter cut off its given name ("郭" "志强", "欧阳" "娜娜"): (end, score)."""
    if given is None or not 1 <= len(given.text) <= 2 or given.flag not in _GIVEN_FLAGS:
        return None
    if not (
        surname.text in COMPOUND_SURNAMES or (surname.text in SINGLE_SURNAMES and surname.flag in ("nr", ""))
    ):
        return None
    name = surname.text + given.text
    if not _plausible_name(name):
        return None
    return given.end, PERSON_SCORE if given.flag else UNKNOWN_PERSON_SCORE


def _name_score(word: str, *, known: bool) -> float:
    """Score a word flagged as a person (``known``) or unknown to the dictionary, by its shape.

    The dictionary's ``nr`` flag is noisy on two-character words (王子, 温馨,
    华丽 are flagged as names), so those need a frequent surname and a rare
    word; a two-character word the dictionary does not know needs a frequent
    surname. Measured on the training split (bench/data/devset).
    """
    if not _plausible_name(word, joined=not known and len(word) == 3):
        return 0.0
    compound = word[:2] in COMPOUND_SURNAMES
    given = word[2:] if compound else word[1:]
    top = compound or word[0] in TOP_SURNAMES
    if len(given) >= 2:
        return PERSON_SCORE if known else UNKNOWN_PERSON_SCORE
    if known:
        return PERSON_SCORE if top and word_frequency(word) <= FREQUENT_WORD else 0.0
    return UNKNOWN_PERSON_SCORE if top else 0.0


def _gazetteer(path: Path) -> dict[str, tuple[str, ...]]:
    """Read a list of names (one a line, ``#`` comments) into names by first character, longest first."""
    by_first: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.strip()
        if len(name) >= 2 and not name.startswith("#"):
            by_first.setdefault(name[0], []).append(name)
    return {first: tuple(sorted(names, key=len, reverse=True)) for first, names in by_first.items()}


@lru_cache(maxsize=1)
def world_places() -> dict[str, tuple[str, ...]]:
    """Return the world's countries, regions and large cities (``data/zh_world_places.txt``)."""
    return _gazetteer(WORLD_PLACES_FILE)


@lru_cache(maxsize=1)
def known_organizations() -> dict[str, tuple[str, ...]]:
    """Return well-known organisations named without a suffix (``data/zh_organizations.txt``)."""
    return _gazetteer(ORGANIZATIONS_FILE)


def _listed_at(names: dict[str, tuple[str, ...]], text: str, pos: int) -> int:
    """Return the end of the longest listed name starting at ``pos``, or -1."""
    for name in names.get(text[pos : pos + 1], ()):
        if text.startswith(name, pos):
            return pos + len(name)
    return -1


def _world_place_at(text: str, pos: int) -> int:
    return _listed_at(world_places(), text, pos)


# Words that end the name of a place or a building: "鸟取" "市", "皇后" "码头", "静安" "寺".
PLACE_SUFFIXES: Final = tuple(
    sorted(
        _split(
            "市 区 县 镇 乡 村 州 省 郡 町 街道 岛 群岛 半岛 湖 河 江 山 山脉 峰 湾 港 海峡",
            "峡谷 平原 高原 盆地 沙漠 冰川 运河 水库 寺 庙 殿 站 车站 码头 机场 公园",
            "广场 大厦 体育场 运动场 球场 遗址 故居 铁路 公路 高速公路 隧道 星云 星系",
        ),
        key=len,
        reverse=True,
    )
)
# A word ending like a division or a landmark is a place, whatever its flag says.
_DIVISION_ENDINGS: Final = tuple(_split("省 市 区 县 镇 乡 村 街道 寺 庙 殿 站 码头 机场 公园 广场 大厦"))
# Words of PLACE_SUFFIXES that make a place of the noun before them even when it is a common one.
TOWN_SUFFIXES: Final = frozenset(_split("镇 乡 村 县 街道 街 码头 寺 殿 体育场 机场"))
INSTITUTION_WORDS: Final = frozenset(
    _split("银行 大学 学院 研究所 研究院 医院 中学 小学 俱乐部 委员会 办事处 图书馆 博物馆 集团")
)
_TOWN_NAME_FLAGS: Final = frozenset({"n", "nz", "nr", "ns", "", "j", "nrt"})
# One-character names of countries, peoples and dynasties before 军 (an army): 美军, 日军, 汉军.
_ARMY: Final = re.compile("[美日苏德英法俄意波汉藏中韩朝越蒙清明唐宋元秦楚齐魏吴蜀晋金辽共联盟敌]军")
# The last characters of the suffixes ``_organisations`` reads: a word ending otherwise ends in none.
_SUFFIX_LAST_CHARS: Final = frozenset(x[-1] for x in (*ORGANIZATION_SUFFIXES, *PLACE_SUFFIXES))
# The flags ``_people`` reads a person from (besides a surname word, ``_split_name``).
_PEOPLE_FLAGS: Final = frozenset({"nr", "nrfg", "nrt", ""})
# Translated names without a middle dot (迪斯雷利, 哈里森) are at least this long.
TRANSLITERATION_MIN_CHARS: Final = 3


def _suffix(word: str, suffixes: tuple[str, ...]) -> str:
    """Return the longest of ``suffixes`` that ends ``word`` (the caller knows one does)."""
    return next(s for s in suffixes if word.endswith(s))


def _transliterated(word: str) -> bool:
    """Say whether a word is a foreign name written with the characters transliteration uses."""
    return len(set(word)) >= TRANSLITERATION_MIN_CHARS and all(c in TRANSLITERATION_CHARS for c in word)


class ChineseEntityRecognizer(Recognizer):
    """Chinese people, places and organisations from jieba's segmentation and word flags."""

    name = "ChineseEntityRecognizer"
    entities = ("PERSON", "LOCATION", "ORGANIZATION")
    languages = frozenset({"zh"})
    max_score = PERSON_SCORE

    def __init__(self, vetted: frozenset[str] = VETTED_TYPES, veto: float = VETO_BELOW) -> None:
        # The types whose spans the character tagger (zh_model) vets, and the agreement they need.
        self.vetted = vetted
        self.veto = veto

    def applies(self, view: TextView) -> bool:
        return view.has_han

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        found = self._found(view)
        if self.vetted and found and enabled():
            found = [
                c
                for c in found
                if c.entity_type not in self.vetted or agreement(view.text, c.start, c.end) >= self.veto
            ]
        return found

    def _found(self, view: TextView) -> list[Candidate]:
        words = segment(view.text)
        found: list[Candidate] = []
        found.extend(self._people(words))
        found.extend(
            Candidate(m.start(), m.end(), "PERSON", PERSON_SCORE, self.name)
            for m in _DOTTED_NAME.finditer(view.text)
        )
        found.extend(self._places(words))
        found.extend(self._world_places(view.text, words))
        found.extend(self._organisations(words))
        if _HAS_LATIN.search(view.text):
            found.extend(
                Candidate(m.start(), m.end(), "ORGANIZATION", ORGANIZATION_SCORE, self.name)
                for m in _LATIN_ORGANIZATION.finditer(view.text)
            )
        found.extend(
            Candidate(m.start(), m.end(), "ORGANIZATION", ORGANIZATION_SCORE, self.name)
            for m in _ARMY.finditer(view.text)
        )
        return found

    def _world_places(self, text: str, words: list[Word]) -> list[Candidate]:
        """Listed countries and cities where a word starts (日本首相, 莫斯科 the segmenter calls a name),
        and listed organisations that are whole words (新浪 in 新浪微博, not 中行 in 中行政)."""
        found = []
        ends: set[int] | None = None
        places, organizations = world_places(), known_organizations()
        for w in words:
            # Most words start no listed name: one look-up of their first character each.
            first = text[w.start : w.start + 1]
            if first in places:
                end = _listed_at(places, text, w.start)
                if end > w.start:
                    found.append(Candidate(w.start, end, "LOCATION", PLACE_SCORE, self.name))
                    continue
            if first in organizations:
                end = _listed_at(organizations, text, w.start)
                if ends is None:
                    ends = {x.end for x in words}
                if end in ends:
                    found.append(Candidate(w.start, end, "ORGANIZATION", ORGANIZATION_SCORE, self.name))
        return found

    def _people(self, words: list[Word]) -> list[Candidate]:
        found = []
        for w, nxt, prev in zip(words, [*words[1:], None], [None, *words[:-1]], strict=True):
            if (
                w.flag not in _PEOPLE_FLAGS
                and w.text not in SINGLE_SURNAMES
                and w.text not in COMPOUND_SURNAMES
            ):
                # No rule below can read a person in it (a surname the segmenter cut off its given
                # name is a surname word; every other rule wants one of these flags).
                continue
            if prev is not None and nxt is not None and prev.text == "[" and nxt.text == "]":
                # "[奥特曼]", "[哈哈]": Weibo's emoticons are written as words in brackets.
                continue
            split = _split_name(w, nxt)
            if split:
                found.append(Candidate(w.start, split[0], "PERSON", split[1], self.name))
            elif _world_place_at(w.text, 0) == len(w.text) or w.text.endswith(_DIVISION_ENDINGS):
                # 莫斯科 and 柳林镇 are flagged as names in the dictionary; they are places.
                continue
            elif w.flag == "nrt" and len(w.text) >= 2:
                found.append(Candidate(w.start, w.end, "PERSON", PERSON_SCORE, self.name))
            elif w.flag in ("nr", "") and _transliterated(w.text):
                found.append(Candidate(w.start, w.end, "PERSON", UNKNOWN_PERSON_SCORE, self.name))
            elif w.flag in _PERSON_FLAGS or not w.flag:
                score = _name_score(w.text, known=bool(w.flag))
                if score:
                    found.append(Candidate(w.start, w.end, "PERSON", score, self.name))
        return found

    def _places(self, words: list[Word]) -> list[Candidate]:
        found = []
        run_start = run_end = -1
        for w in [*words, Word(-1, -1, "", "")]:
            if w.flag in _PLACE_FLAGS and w.text not in PLACE_STOP_WORDS and len(w.text) >= 2:
                if run_end == w.start:
                    run_end = w.end
                else:
                    run_start, run_end = w.start, w.end
                continue
            if run_start >= 0:
                found.append(Candidate(run_start, run_end, "LOCATION", PLACE_SCORE, self.name))
            run_start = run_end = -1
        return found

    def _organisations(self, words: list[Word]) -> list[Candidate]:
        """Organisations (``nt`` words, names ending in 公司, 大学 ...) and named places (…市, …码头, …寺)."""
        found = []
        for i, w in enumerate(words):
            if w.flag != "nt" and w.text[-1:] not in _SUFFIX_LAST_CHARS:
                # Ends in no organisation or place suffix (the test below, one set look-up).
                continue
            if w.flag == "nt" and len(w.text) >= 2:
                start = self._extend_left(words, i)
                found.append(Candidate(start, w.end, "ORGANIZATION", ORGANIZATION_SCORE, self.name))
                continue
            if w.text.endswith(ORGANIZATION_SUFFIXES):
                suffix, entity, score = (
                    _suffix(w.text, ORGANIZATION_SUFFIXES),
                    "ORGANIZATION",
                    ORGANIZATION_SCORE,
                )
            elif w.text.endswith(PLACE_SUFFIXES) and w.flag not in _NOT_PLACE_FLAGS and w.flag != "ns":
                # (a word the dictionary already calls a place is ``_places``'s)
                suffix = _suffix(w.text, PLACE_SUFFIXES)
                entity, score = "LOCATION", PLACE_SCORE
            else:
                continue
            start = self._extend_left(words, i)
            if entity == "LOCATION":
                # A place's name opens on a proper noun ("马耳他" "国际" "机场"), not a common one ("水饺").
                start = next(
                    (x.start for x in words[: i + 1] if x.start >= start and x.flag in _PROPER_FLAGS), w.start
                )
            # "土豪公司", "社区学院": a suffix after common nouns only is no one's name.
            proper = (
                any(x.flag in _PROPER_FLAGS for x in words[: i + 1] if x.start >= start)
                or (not w.flag and len(w.text) > len(suffix) + 1)
                # One word made of a proper noun and the suffix: 深圳晚报, 鸟取市 (flagged n or not at all).
                or word_flag(w.text[: -len(suffix)]) in _NAMED_FLAGS
            )
            if (
                not proper
                and w.text in (TOWN_SUFFIXES if entity == "LOCATION" else INSTITUTION_WORDS)
                and i > 0
            ):
                # "玉带" "镇", "皇后" "码头", "汇业" "银行": a two-character noun and a town's, a landmark's
                # or an institution's word on its own.
                before = words[i - 1]
                if (
                    len(before.text) == 2
                    and before.flag in _TOWN_NAME_FLAGS
                    and _HAN_ONLY.fullmatch(before.text)
                ):
                    proper, start = True, before.start
            if proper and w.end - start > len(suffix) + 1:
                found.append(Candidate(start, w.end, entity, score, self.name))
        return found

    @staticmethod
    def _extend_left(words: list[Word], index: int, flags: frozenset[str] = _NAME_FLAGS) -> int:
        """Return where the name ending with ``words[index]`` starts: back over words with these flags."""
        start = words[index].start
        end = words[index].end
        for j in range(index - 1, max(-1, index - 1 - ORGANIZATION_WORDS_BEFORE), -1):
            w = words[j]
            if w.flag not in flags or (not _HAN_ONLY.fullmatch(w.text) and w.flag != "eng"):
                break
            if end - w.start > ORGANIZATION_MAX_CHARS:
                break
            start = w.start
            if w.flag in ("ns", "nt", "nz", "j"):
                # A place or a proper noun opens the name: stop there.
                break
        return start


# A Weibo or WeChat handle: "@" and up to 20 characters of Han, Latin, digits and the
# separators nicknames use, ending at white space, punctuation or the next "@".
# A link glued to the handle ("@朱元冰Ryanhttp://t.cn/…") is not part of it.
_HANDLE: Final = re.compile(f"@((?:(?!https?://)[{HAN_CLASS}A-Za-z0-9_\\-丶·]){{1,20}})")
# Words that follow a handle directly in posts written without spaces ("@严之吟转发微博").
_AFTER_HANDLE: Final = re.compile("转发|回复|评论|微博|分享|说")
# As the English handle recognizer's, so that the longer of two overlapping handles wins.
HANDLE_SCORE: Final = 0.9


class ChineseHandleRecognizer(Recognizer):
    """Handles written in Chinese posts (@王小二, @椰子yuria): a handle identifies a person."""

    name = "ChineseHandleRecognizer"
    entities = ("PERSON",)
    languages = frozenset({"zh"})

    def applies(self, view: TextView) -> bool:
        return view.has_han and "@" in view.text

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        found = []
        for m in _HANDLE.finditer(view.text):
            handle = m.group(1)
            if handle[0].isascii() or not _HAN_ONLY.search(handle):
                # Latin handles are the English recognizer's ("@alice_w或邮件": where would it end?).
                continue
            cut = _AFTER_HANDLE.search(handle, 2)
            end = m.start(1) + (cut.start() if cut else len(handle))
            found.append(Candidate(m.start(), end, "PERSON", HANDLE_SCORE, self.name))
        return found
