"""Build the Chinese half of the desensitization development set, deterministically.

    .venv/bin/python bench/data/devset/build_zh.py --weibo DIR --gsd DIR

``DIR`` is a git checkout (or bare repository) of each source at the commit
named below; the files are read with ``git show COMMIT:PATH``, so nothing is
downloaded here. Writes ``zh-{train,dev,test}.jsonl`` beside this file, one
record a line: ``{"id", "source", "language", "text", "spans": [{"start",
"end", "type"}]}`` with offsets into ``text``.

Sources (see README.md, section "Chinese", for licences):

- ``weibo-ner``: hltcoe/golden-horse, ``data/weiboNER_2nd_conll.*`` (Weibo
  posts, chat style; annotations CC BY-SA 3.0). Named mentions only
  (``*.NAM``); nominal ones (``PER.NOM``: 男友, 老师) name nobody. The posts'
  links (``http://t.cn/...``), which the source does not annotate, are added
  as URL spans by pattern (``WEIBO_URL``), so that masking them is not
  counted against precision.
- ``uner-gsdsimp``: UniversalNER/UNER_Chinese-GSDSIMP, ``zh_gsdsimp-ud-*.iob2``
  (Wikipedia sentences, formal style; CC BY-SA 4.0).
- ``synthetic-ids``: generated here with a fixed seed: resident IDs, mobile
  numbers, bank cards (some failing Luhn), account numbers, passports, licence
  plates, e-mail addresses, postal addresses and dates (DATE_TIME), in varied
  formal and chat phrasing, with distractors (order numbers, amounts) left
  unlabelled.
  Reported separately: it measures the structured identifiers, not names.

Splits are the sources' own published splits, which are by post and by
document; the synthetic records use one seed per split.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT))

from custody.recognizers.checksums import cn_resident_id_check_char, luhn_check_digit  # noqa: E402

WEIBO_COMMIT = "7a73c08e45ed94312af4ef2d97cc35a47d029e99"
GSD_COMMIT = "1f0307599dece7b83f4cba90ce9b63ef37a7b162"
SPLITS = ("train", "dev", "test")
WEIBO_FILES = {"train": "train", "dev": "dev", "test": "test"}
WEIBO_TYPES = {"PER.NAM": "PERSON", "LOC.NAM": "LOCATION", "GPE.NAM": "LOCATION", "ORG.NAM": "ORGANIZATION"}
GSD_TYPES = {"PER": "PERSON", "LOC": "LOCATION", "ORG": "ORGANIZATION"}
# GSD's training split is four times its test split: every third document keeps the file small.
GSD_TRAIN_EVERY = 3
SYNTHETIC_COUNTS = {"train": 240, "dev": 80, "test": 120}
SYNTHETIC_SEEDS = {"train": 1201, "dev": 1202, "test": 1203}

Span = dict[str, object]
Record = dict[str, object]


def git_show(repo: Path, commit: str, path: str) -> str:
    """Return one file of a source snapshot."""
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def bio_spans(tags: list[str], types: dict[str, str]) -> list[Span]:
    """Turn per-character (or per-token) BIO tags into spans of the mapped types."""
    spans: list[Span] = []
    start, kind = -1, ""
    for i, tag in enumerate([*tags, "O"]):
        inside = tag.startswith("I-") and tag[2:] == kind and start >= 0
        if inside:
            continue
        if start >= 0 and kind in types:
            spans.append({"start": start, "end": i, "type": types[kind]})
        start, kind = (i, tag[2:]) if tag.startswith(("B-", "I-")) else (-1, "")
    return spans


WEIBO_URL = re.compile(r"https?://[A-Za-z0-9./_?=&%#-]+")


def weibo(repo: Path, split: str) -> Iterator[Record]:
    """Weibo posts: one character a line (with a segmentation digit), a blank line between posts."""
    text = git_show(repo, WEIBO_COMMIT, f"data/weiboNER_2nd_conll.{WEIBO_FILES[split]}")
    for n, block in enumerate(text.strip("\n").split("\n\n")):
        chars, tags = [], []
        for line in block.splitlines():
            token, tag = line.rsplit("\t", 1) if "\t" in line else line.rsplit(" ", 1)
            chars.append(token[:-1] if token[-1:].isdigit() and len(token) > 1 else token)
            tags.append(tag)
        # Each line is one character; a multi-character token would shift offsets.
        offsets, pos = [], 0
        for c in chars:
            offsets.append(pos)
            pos += len(c)
        spans = []
        for s in bio_spans(tags, WEIBO_TYPES):
            start, end = int(s["start"]), int(s["end"])  # type: ignore[call-overload]
            spans.append(
                {"start": offsets[start], "end": offsets[end - 1] + len(chars[end - 1]), "type": s["type"]}
            )
        post = "".join(chars)
        spans.extend({"start": m.start(), "end": m.end(), "type": "URL"} for m in WEIBO_URL.finditer(post))
        spans.sort(key=lambda s: (s["start"], s["end"]))
        yield {"id": f"weibo-{split}-{n:04d}", "source": "weibo-ner", "text": post, "spans": spans}


def gsd(repo: Path, split: str) -> Iterator[Record]:
    """Wikipedia sentences: ``# text =`` then one token a line; tokens are found in the text in order."""
    content = git_show(repo, GSD_COMMIT, f"zh_gsdsimp-ud-{split}.iob2")
    doc = -1
    for block in content.strip("\n").split("\n\n"):
        lines = block.splitlines()
        if any(line.startswith("# newdoc") for line in lines):
            doc += 1
        if split == "train" and doc % GSD_TRAIN_EVERY:
            continue
        sent_id = next(line.split("=", 1)[1].strip() for line in lines if line.startswith("# sent_id"))
        text = next(line.split("=", 1)[1].strip() for line in lines if line.startswith("# text"))
        bounds, tags, pos = [], [], 0
        for line in lines:
            if line.startswith("#"):
                continue
            fields = line.split("\t")
            at = text.index(fields[1], pos)
            bounds.append((at, at + len(fields[1])))
            tags.append(fields[2])
            pos = at + len(fields[1])
        spans = [
            {"start": bounds[int(s["start"])][0], "end": bounds[int(s["end"]) - 1][1], "type": s["type"]}  # type: ignore[call-overload]
            for s in bio_spans(tags, GSD_TYPES)
        ]
        yield {"id": f"gsd-{sent_id}", "source": "uner-gsdsimp", "text": text, "spans": spans}


# --- synthetic identifiers ---------------------------------------------------------------

PLATE_PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
ROAD_CHARS = "长安建设人民解放中山和平胜利文化东风光明新华朝阳幸福青年学府滨江迎宾黄河淮海南京北京"
ROAD_SUFFIXES = ("路", "街", "大道", "巷", "中路", "东路", "北街", "南路")
ESTATES = ("阳光花园", "翠苑小区", "锦绣家园", "世纪城", "金色家园", "碧水湾", "新村", "华府")


def resident_id(rng: random.Random) -> str:
    first = f"{rng.randint(1, 6)}{rng.randint(1, 9)}{rng.randint(1000, 9999)}"
    birth = f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    body = first + birth + f"{rng.randint(0, 999):03d}"
    return body + cn_resident_id_check_char(body)


def mobile(rng: random.Random) -> str:
    digits = f"1{rng.choice('3456789')}{rng.randint(0, 9)}{rng.randint(0, 99999999):08d}"
    style = rng.random()
    if style < 0.15:
        return f"{digits[:3]} {digits[3:7]} {digits[7:]}"
    if style < 0.25:
        return f"{digits[:3]}-{digits[3:7]}-{digits[7:]}"
    if style < 0.32:
        return "+86 " + digits
    return digits


def bank_card(rng: random.Random, *, valid: bool) -> str:
    length = rng.choice((16, 19, 19))
    partial = "62" + "".join(rng.choice("0123456789") for _ in range(length - 3))
    check = luhn_check_digit(partial)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    number = partial + check
    if rng.random() < 0.3:
        return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    return number


def account(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789") for _ in range(rng.choice((12, 14, 17, 20))))


def passport(rng: random.Random) -> str:
    digits = "".join(rng.choice("0123456789") for _ in range(8))
    kind = rng.random()
    if kind < 0.5:
        return "E" + digits
    if kind < 0.7:
        return "G" + digits
    return "E" + rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") + digits[:7]


def plate(rng: random.Random) -> str:
    head = rng.choice(PLATE_PROVINCES) + rng.choice(PLATE_LETTERS)
    digits = "".join(rng.choice("0123456789") for _ in range(5))
    if rng.random() < 0.25:  # new-energy plates: D or F, then five digits
        tail = rng.choice("DF") + digits
    else:
        # Ordinary serials: five characters, at most two of them letters.
        serial = list(digits)
        for index in rng.sample(range(5), rng.choice((0, 1, 1, 2))):
            serial[index] = rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ")
        tail = "".join(serial)
    return head + (rng.choice(("", "", "·", " ")) + tail)


def email(rng: random.Random) -> str:
    user = rng.choice(("zhang", "li.wei", "xm", "service", "hr2024", "wangfang88", "chen_j"))
    domain = rng.choice(("qq.com", "163.com", "example.cn", "sina.com", "gmail.com"))
    return f"{user}{rng.randint(1, 999)}@{domain}"


def address(rng: random.Random, divisions: list[tuple[str, str, str]]) -> str:
    province, city, county = rng.choice(divisions)
    road = "".join(rng.sample(ROAD_CHARS, 2)) + rng.choice(ROAD_SUFFIXES)
    parts = []
    shape = rng.random()
    if shape < 0.5:
        parts += [province, city, county]
    elif shape < 0.8:
        parts += [city, county]
    else:
        parts += [county]
    parts.append(road + f"{rng.randint(1, 999)}号")
    tail = rng.random()
    if tail < 0.4:
        parts.append(
            f"{rng.choice(ESTATES)}{rng.randint(1, 30)}栋{rng.randint(1, 6)}单元{rng.randint(101, 2808)}室"
        )
    elif tail < 0.7:
        parts.append(f"{rng.randint(1, 20)}幢{rng.randint(101, 1808)}")
    return "".join(parts)


# Each template: text with {kind} slots; the slot's gold type (None: not labelled).
SLOT_TYPES = {
    "id": "ID",
    "mobile": "PHONE_NUMBER",
    "card": "CREDIT_CARD",
    "badcard": "CREDIT_CARD",
    "account": "ID",
    "passport": "ID",
    "plate": "ID",
    "email": "EMAIL_ADDRESS",
    "address": "LOCATION",
    "order": None,
    "amount": None,
    "date": "DATE_TIME",
}
TEMPLATES = (
    "身份证号{id}，请核对。",
    "麻烦把身份证号码发一下，我这边登记：{id}",
    "证件号码：{id}  有效期至2030年",
    "客户手机{mobile}，订单号{order}，金额{amount}元。",
    "有事打我电话{mobile}哈",
    "联系方式：{mobile}（工作日9:00-18:00）",
    "转账到卡号{badcard}就行，户名写我名字",
    "请将款项汇至以下账户：{account}，开户行：工商银行",
    "我的银行卡号是{card}，别发错了",
    "卡号：{badcard} 余额{amount}元",
    "退款原路返回至尾号不详的卡{card}",
    "账号{account}已冻结，请于{date}前联系客服",
    "护照号码{passport}，签发日期{date}",
    "出差要用护照，号码是{passport}，帮我订票",
    "旅客护照：{passport}；航班CA1234",
    "车牌号{plate}的车主请速到前台",
    "昨天{plate}在小区门口违停了",
    "违章车辆：{plate}，地点：{address}",
    "新车上牌了，{plate}，好开心",
    "发邮件到{email}，抄送我",
    "邮箱{email}已注册，验证码已发送",
    "收货地址：{address}，电话{mobile}",
    "我家住在{address}，有空来玩",
    "快递放{address}门卫那里就行",
    "寄到{address}，收件人电话{mobile}",
    "公司地址：{address}",
    "报案地点为{address}，报案时间{date}",
    "订单{order}已发货，预计{date}送达",
    "本月账单金额{amount}元，到期还款日{date}",
    "手机：{mobile} 邮箱：{email} 住址：{address}",
)


def fill(slot: str, rng: random.Random, divisions: list[tuple[str, str, str]]) -> str:
    makers: dict[str, Callable[[], str]] = {
        "id": lambda: resident_id(rng),
        "mobile": lambda: mobile(rng),
        "card": lambda: bank_card(rng, valid=True),
        "badcard": lambda: bank_card(rng, valid=False),
        "account": lambda: account(rng),
        "passport": lambda: passport(rng),
        "plate": lambda: plate(rng),
        "email": lambda: email(rng),
        "address": lambda: address(rng, divisions),
        "order": lambda: f"{rng.randint(2020, 2026)}{rng.randint(10**9, 10**10 - 1)}",
        "amount": lambda: f"{rng.randint(10, 99999)}.{rng.randint(0, 99):02d}",
        "date": lambda: f"{rng.randint(2024, 2027)}年{rng.randint(1, 12)}月{rng.randint(1, 28)}日",
    }
    return makers[slot]()


def synthetic(split: str, divisions: list[tuple[str, str, str]]) -> Iterator[Record]:
    rng = random.Random(SYNTHETIC_SEEDS[split])
    for n in range(SYNTHETIC_COUNTS[split]):
        template = rng.choice(TEMPLATES)
        text, spans, pos = "", [], 0
        for m in re.finditer(r"\{(\w+)\}", template):
            text += template[pos : m.start()]
            value = fill(m.group(1), rng, divisions)
            kind = SLOT_TYPES[m.group(1)]
            if kind:
                spans.append({"start": len(text), "end": len(text) + len(value), "type": kind})
            text += value
            pos = m.end()
        text += template[pos:]
        yield {"id": f"synthetic-{split}-{n:04d}", "source": "synthetic-ids", "text": text, "spans": spans}


def division_triples(repo: Path | None) -> list[tuple[str, str, str]]:
    """(province, prefecture, county) triples; from the shipped name list when no snapshot is given."""
    if repo is None:
        return [
            ("广东省", "深圳市", "南山区"),
            ("浙江省", "杭州市", "西湖区"),
            ("四川省", "成都市", "武侯区"),
        ]
    import csv
    import io

    commit = "57a0aa9cef47169a2eb74cf057b0245052a34e8c"
    read = lambda p: list(csv.DictReader(io.StringIO(git_show(repo, commit, p))))  # noqa: E731
    provinces = {r["code"]: r["name"] for r in read("dist/provinces.csv")}
    cities = {r["code"]: r["name"] for r in read("dist/cities.csv")}
    triples = []
    for r in read("dist/areas.csv"):
        city = cities.get(r["cityCode"], "")
        city = "" if city in ("市辖区", "县") or "直辖" in city else city
        triples.append((provinces[r["provinceCode"]], city, r["name"]))
    return triples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weibo", type=Path, required=True, help="hltcoe/golden-horse snapshot")
    parser.add_argument("--gsd", type=Path, required=True, help="UniversalNER/UNER_Chinese-GSDSIMP snapshot")
    parser.add_argument("--divisions", type=Path, help="modood/Administrative-divisions-of-China snapshot")
    args = parser.parse_args()
    divisions = division_triples(args.divisions)
    for split in SPLITS:
        records = [*weibo(args.weibo, split), *gsd(args.gsd, split), *synthetic(split, divisions)]
        with (HERE / f"zh-{split}.jsonl").open("w", encoding="utf-8") as out:
            for record in records:
                text = str(record["text"])
                for span in record["spans"]:  # type: ignore[attr-defined]
                    assert text[span["start"] : span["end"]].strip(), (record["id"], span)
                line = {"id": record["id"], "source": record["source"], "language": "zh", "text": text}
                line["spans"] = record["spans"]
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
        print(f"zh-{split}.jsonl: {len(records)} records")


if __name__ == "__main__":
    main()
