"""Chinese addresses: a grammar over the administrative divisions, roads, house and room numbers.

An address is a chain of parts, each directly after the last:

- divisions: provinces, prefectures and counties by their full names
  (``data/zh_divisions.txt``, the National Bureau of Statistics' list) or,
  inside a chain, by their short names (深圳 for 深圳市), and towns, villages
  and districts by their suffixes (…镇, …乡, …村, …街道, …开发区);
- a road: a short name and 路, 街, 大道, 巷, 弄 or 胡同, with its number (…号);
  inside a chain also 道 (高新南七道), unless it ends a common word (知道);
- an estate or building (…小区, …花园, …大厦, …公寓, …里 …) and the parts of a
  flat: 栋, 幢, 座, 单元, 层, 楼, 室, 户, and their numbers (3栋2单元501室).

A chain of divisions alone names a place (LOCATION, ordinary score); a
chain that reaches a road, a house number or a flat is an address (high
score). A short name alone ("南山") is never reported: it is too often a word.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Final

from custody.language import HAN_CLASS
from custody.recognizers.base import Candidate, Recognizer, TextView
from custody.recognizers.names_zh import COMMON_WORD_FREQUENCY

DIVISIONS_FILE: Final = Path(__file__).resolve().parent / "data" / "zh_divisions.txt"
PLACE_SCORE: Final = 0.6
ADDRESS_SCORE: Final = 0.85
_DIVISION_SUFFIXES: Final = (
    "特别行政区",
    "自治区",
    "自治州",
    "自治县",
    "地区",
    "新区",
    "林区",
    "盟",
    "省",
    "市",
    "区",
    "县",
    "旗",
)
_NUM: Final = r"[0-9０-９一二三四五六七八九十百零〇]+"
_ALNUM: Final = r"[0-9０-９A-Za-z一二三四五六七八九十百零〇]+"
_H: Final = f"[{HAN_CLASS}]"
# Characters that end a road's name on the left: the verbs and particles before an address.
_NOT_IN_NAME: Final = frozenset(
    "在住到于是的址：:放寄送往从去近家我你他她们和与及或位请就都也还要把被给离这那条该原上"
)
_NOT_IN_CHAIN: Final = _NOT_IN_NAME - frozenset("和与及家")
_PARTS: Final = re.compile(
    "|".join(
        (
            # towns, villages, streets' committees, development zones
            rf"{_H}{{1,6}}?(?:街道办事处|街道|镇|乡|村委会|村|社区|开发区|高新区|工业园区|工业园|园区|新区)",
            # a road and its number
            rf"{_H}{{1,6}}?(?:大道|大街|路|街|巷|弄|胡同)(?:{_NUM}(?:号院|号楼|号|弄|巷))?",
            # a house number on its own, or a flat
            rf"{_ALNUM}(?:号院|号楼|号|栋|幢|座|单元|层|楼|室|户)"
            rf"(?:{_NUM}(?:室|户|房|号)|{_NUM}(?![0-9０-９一二三四五六七八九十百零〇]|单元|栋|幢|座|层|楼|室|户|号))?",
            rf"{_NUM}-{_NUM}(?:-{_NUM})?(?:室|号)?",
            # sections and phases of long roads and estates (人民南路四段, 二期)
            rf"{_NUM}(?:段|期)",
            # estates and buildings, a Latin name first included (SOHO现代城; tenth round)
            rf"(?:[A-Za-z]{{2,12}})?{_H}{{1,6}}?(?:小区|花园|家园|公寓|大厦|广场|名苑|苑|庭|府|城|湾|园|新村|中心|大楼|写字楼|宿舍)",
            "新村",
            # Beijing's and Shanghai's 里 (花家地北里3号楼, 幸福里): two Han characters at least, no
            # pointing word (门卫那里) nor 家, 心 ... just before 里 (家里), then a number, a non-Han
            # character or the end (eleventh round, from a walk)
            rf"(?:(?![这那哪]){_H}){{1,4}}?(?:(?![这那哪心家手眼梦夜怀屋]){_H})里"
            rf"(?=[0-9０-９一二三四五六七八九十]|[^{HAN_CLASS}]|$)",
        )
    )
)
_HOUSE_NUMBER: Final = re.compile(rf"{_NUM}(?:号|弄|巷|栋|幢|座|单元|层|楼|室|户)|[0-9０-９]")
_HAN_CHAR: Final = re.compile(_H)
# A chain without a division opens on a named road only.
_ROAD: Final = re.compile(rf"{_H}{{1,6}}?(?:大道|大街|路|街|巷|弄|胡同)(?:{_NUM}(?:号院|号楼|号|弄|巷))?")
# Inside a chain, a road may also end in 道 (深圳's 高新南七道, 天津's 成都道, 香港's 轩尼诗道), unless
# its last two characters are a common word (知道, 频道, 报道: at least names_zh's ``COMMON_WORD_FREQUENCY``
# in jieba's dictionary).
_DAO_ROAD: Final = re.compile(rf"({_H}{{1,6}}?道)(?:{_NUM}(?:号院|号楼|号|弄|巷))?")


@lru_cache(maxsize=1)
def divisions() -> tuple[frozenset[str], frozenset[str], int]:
    """Return the full division names, their short names, and the longest name's length."""
    full: set[str] = set()
    for line in DIVISIONS_FILE.read_text(encoding="utf-8").splitlines():
        name = line.strip()
        if name and not name.startswith("#"):
            full.add(name)
    short = set()
    for name in full:
        for suffix in _DIVISION_SUFFIXES:
            if name.endswith(suffix) and len(name) - len(suffix) >= 2:
                short.add(name[: -len(suffix)])
                break
    short -= full
    return frozenset(full), frozenset(short), max(map(len, full))


@lru_cache(maxsize=1)
def _prefixes() -> frozenset[str]:
    """Return the first two characters of every name: most positions in a text start none."""
    full, short, _ = divisions()
    return frozenset(name[:2] for name in full | short)


def _division_at(text: str, pos: int, *, chained: bool) -> int:
    """Return the end of the longest division name at ``pos`` (short names only inside a chain), or -1."""
    if text[pos : pos + 2] not in _prefixes():
        return -1
    full, short, longest = divisions()
    for end in range(min(len(text), pos + longest), pos + 1, -1):
        piece = text[pos:end]
        if piece in full and (len(piece) > 2 or chained or piece.endswith(("省", "市"))):
            return end
        if chained and piece in short:
            return end
    return -1


class ChineseAddressRecognizer(Recognizer):
    """Chinese places and postal addresses: divisions, roads, numbers, buildings and flats."""

    name = "ChineseAddressRecognizer"
    entities = ("LOCATION",)
    languages = frozenset({"zh"})
    max_score = ADDRESS_SCORE

    def applies(self, view: TextView) -> bool:
        return view.has_han

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        found: list[Candidate] = []
        # A chain opens on a division's first two characters or on a road; a text where no road
        # matches anywhere needs ``_chain`` only where a division's name can start (the same spans,
        # sixth round: most positions start neither).
        roads = _ROAD.search(text) is not None
        prefixes = _prefixes()
        pos = 0
        while pos < len(text):
            if not roads and text[pos : pos + 2] not in prefixes:
                pos += 1
                continue
            end, address = self._chain(text, pos)
            if end > pos:
                score = ADDRESS_SCORE if address else PLACE_SCORE
                if score >= min_score:
                    found.append(Candidate(pos, end, "LOCATION", score, self.name))
                pos = end
            else:
                pos += 1
        return found

    def _chain(self, text: str, start: int) -> tuple[int, bool]:
        """Follow a chain of address parts from ``start``: return its end and whether it reached a road."""
        end = _division_at(text, start, chained=False)
        address = False
        if end < 0:
            # A short name opens a chain only when a division or a road follows it ("深圳南山区"), or
            # another short name that is no common word ("成都双流", not "北京朝阳" (朝阳, the morning
            # sun); eleventh round, from a walk).
            short_end = _division_at(text, start, chained=True)
            if short_end > start and (
                _division_at(text, short_end, chained=False) > short_end
                or _ROAD.match(text, short_end)
                or _short_place_at(text, short_end) > short_end
            ):
                end = short_end
        if end < 0:
            # A chain may also open on a road ("长安路88号"), whose name starts after a verb or particle.
            if start > 0 and text[start - 1] not in _NOT_IN_NAME and _HAN_CHAR.match(text, start - 1):
                return start, False
            m = _ROAD.match(text, start)
            if not m or any(c in _NOT_IN_NAME for c in m.group()):
                return start, False
            end, address = m.end(), True
            opened_on_road = True
        else:
            opened_on_road = False
        while end < len(text):
            nxt = _division_at(text, end, chained=True)
            if nxt > end:
                end = nxt
                continue
            m = _PARTS.match(text, end) or _dao_road(text, end)
            # Inside a chain a part may hold any character ("和化大道", "锦绣家园"), but it may not
            # start with a particle or a verb ("北京市的", "长安路88号在").
            if m and m.group()[0] not in _NOT_IN_CHAIN:
                end, address = m.end(), True
                continue
            break
        # Without a division, only a numbered road is an address ("长安路88号", not "不走这几条路"
        # nor "祝您一路走好": the number must be a house's, a flat's or a lane's, not part of a word).
        if opened_on_road and not _HOUSE_NUMBER.search(text, start, end):
            return start, False
        return end, address


def _short_place_at(text: str, pos: int) -> int:
    """The end of a division's short name at ``pos`` that is no common word of jieba's, or -1."""
    from custody.recognizers.zh_segmenter import word_frequency  # jieba, loaded on first use

    end = _division_at(text, pos, chained=True)
    if end <= pos or word_frequency(text[pos:end]) >= COMMON_WORD_FREQUENCY:
        return -1
    return end


def _dao_road(text: str, pos: int) -> re.Match[str] | None:
    """A road ending in 道 at ``pos`` inside a chain (ninth round of issue 12), or None."""
    from custody.recognizers.zh_segmenter import word_frequency  # jieba, loaded on first use

    m = _DAO_ROAD.match(text, pos)
    if m is None or len(m.group(1)) < 3 or word_frequency(m.group(1)[-2:]) >= COMMON_WORD_FREQUENCY:
        return None
    return m
