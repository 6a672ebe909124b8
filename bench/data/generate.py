"""Generate the labeled evaluation set for bench/desensitize.py, deterministically.

    .venv/bin/python bench/data/generate.py        # rewrites bench/data/labeled.jsonl

- English: the sentence templates of presidio-evaluator 0.3.2 (MIT,
  templates_en.txt; the package itself pulls in transformers, pandas and
  scikit-learn, so only its templates are used) filled with Faker values.
- Chinese: hand-made templates with valid resident IDs, mobile and landline
  numbers, bank cards, unified social credit codes and names with context,
  identifiers written directly against Chinese characters, and negatives
  (bad check digits, surname-initial words, order numbers) that must not be
  reported.
- Mixed: Chinese text around English names and Latin-script identifiers.

Each line: ``{"id", "language", "text", "spans": [{"start", "end", "entity_type"}]}``.
Types no recognizer claims (street addresses, organisations, ages) are
labeled too, and the bench ignores predictions that fall on them.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

from faker import Faker

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from custody.recognizers.checksums import (  # noqa: E402
    USCC_ALPHABET,
    cn_resident_id_check_char,
    luhn_check_digit,
    nhs_valid,
    uscc_check_char,
)
from custody.recognizers.names_zh import COMMON_GIVEN  # noqa: E402

SEED = 20261128
EN_RECORDS = 320
ZH_ROUNDS = 4
OUTPUT = HERE / "labeled.jsonl"

# Template placeholder -> entity type (None: filled, not labeled).
EN_TYPES = {
    "person": "PERSON",
    "name": "PERSON",
    "name_female": "PERSON",
    "name_male": "PERSON",
    "first_name": "PERSON",
    "first_name_male": "PERSON",
    "first_name_female": "PERSON",
    "first_name_nonbinary": "PERSON",
    "last_name": "PERSON",
    "last_name_male": "PERSON",
    "last_name_female": "PERSON",
    "city": "LOCATION",
    "country": "LOCATION",
    "state": "LOCATION",
    "state_abbr": "LOCATION",
    "address": "STREET_ADDRESS",
    "street_name": "STREET_ADDRESS",
    "building_number": "STREET_ADDRESS",
    "secondary_address": "STREET_ADDRESS",
    "zipcode": "STREET_ADDRESS",
    "postcode": "STREET_ADDRESS",
    "organization": "ORGANIZATION",
    "credit_card_number": "CREDIT_CARD",
    "phone_number": "PHONE_NUMBER",
    "email": "EMAIL_ADDRESS",
    "url": "URL",
    "ip_address": "IP_ADDRESS",
    "iban": "IBAN_CODE",
    "ssn": "US_SSN",
    "us_driver_license": "US_DRIVER_LICENSE",
    "date_time": "DATE_TIME",
    "date_of_birth": "DATE_TIME",
    "year": "DATE_TIME",
    "day_of_week": "DATE_TIME",
    "nationality": "NRP",
    "nation_woman": "NRP",
    "nation_plural": "NRP",
    "age": "AGE",
    "job": None,
    "prefix": None,
    "prefix_male": None,
    "prefix_female": None,
}
NATIONALITIES = ["American", "British", "German", "French", "Mexican", "Indian", "Brazilian", "Canadian"]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁沈"
COMPOUND = ["欧阳", "司马", "上官", "诸葛", "慕容"]
AREAS = ["110101", "310104", "440305", "510107", "330106", "420111", "610113", "320102"]


class Builder:
    """Accumulates text and gold spans while a template is filled."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[dict[str, object]] = []
        self.length = 0

    def add(self, text: str, entity_type: str | None = None) -> None:
        if entity_type:
            self.spans.append(
                {"start": self.length, "end": self.length + len(text), "entity_type": entity_type}
            )
        self.parts.append(text)
        self.length += len(text)

    def record(self, rid: str, language: str) -> dict[str, object]:
        return {"id": rid, "language": language, "text": "".join(self.parts), "spans": self.spans}


def fill(template: str, values: dict[str, tuple[str, str | None]], builder: Builder) -> None:
    cursor = 0
    for m in re.finditer(r"\{\{?(\w+)\}?\}", template):
        builder.add(template[cursor : m.start()])
        value, entity_type = values[m.group(1)]
        builder.add(value, entity_type)
        cursor = m.end()
    builder.add(template[cursor:])


def en_value(fake: Faker, rng: random.Random, key: str) -> str:
    special: dict[str, Callable[[], object]] = {
        "person": fake.name,
        "name": fake.name,
        "organization": fake.company,
        "ip_address": lambda: fake.ipv4_public() if rng.random() < 0.8 else fake.ipv6(),
        "us_driver_license": lambda: fake.bothify(
            rng.choice(["?#######", "#########", "?##-###-###"])
        ).upper(),
        "nationality": lambda: rng.choice(NATIONALITIES),
        "nation_woman": lambda: rng.choice(NATIONALITIES),
        "nation_plural": lambda: rng.choice(NATIONALITIES) + "s",
        "age": lambda: str(rng.randint(18, 90)),
        "date_of_birth": lambda: fake.date_of_birth().strftime(
            rng.choice(["%m/%d/%Y", "%B %d, %Y", "%Y-%m-%d"])
        ),
        "date_time": lambda: fake.date_time().strftime(
            rng.choice(["%m/%d/%Y %H:%M", "%B %d, %Y", "%Y-%m-%d"])
        ),
        "year": lambda: str(fake.year()),
        "prefix": fake.prefix,
        "iban": fake.iban,
        "url": fake.url,
        "email": fake.email,
    }
    generate: Callable[[], object] = special.get(key) or getattr(fake, key)
    return str(generate())


def english(fake: Faker, rng: random.Random) -> list[dict[str, object]]:
    # The templates write line breaks as a literal backslash-n.
    lines = (HERE / "templates_en.txt").read_text(encoding="utf-8").splitlines()
    templates = [t.replace("\\n", "\n") for t in lines if t]
    out = []
    for index in range(EN_RECORDS):
        template = rng.choice(templates)
        keys = list(dict.fromkeys(re.findall(r"\{\{?(\w+)\}?\}", template)))
        values = {k: (en_value(fake, rng, k), EN_TYPES.get(k)) for k in keys}
        builder = Builder()
        fill(template, values, builder)
        out.append(builder.record(f"en-{index:04d}", "en"))
    # The NHS/phone conflict: North American numbers whose digits pass the NHS check.
    for index in range(12):
        number = nhs_phone(rng)
        builder = Builder()
        fill(
            rng.choice(NHS_PHONE_TEMPLATES),
            {"phone": (number, "PHONE_NUMBER"), "person": (fake.name(), "PERSON")},
            builder,
        )
        out.append(builder.record(f"en-nhs-{index:02d}", "en"))
    return out


NHS_PHONE_TEMPLATES = [
    "Please call {person} at {phone} after 5pm.",
    "You can reach me on {phone}, ask for {person}.",
    "{person} left a voicemail from {phone} this morning.",
]


def nhs_phone(rng: random.Random) -> str:
    while True:
        digits = f"{rng.randint(201, 989)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
        if nhs_valid(digits) and digits[0] in "23456789" and digits[3] in "23456789":
            style = rng.choice(["{a}-{b}-{c}", "({a}) {b}-{c}", "{a}.{b}.{c}"])
            return style.format(a=digits[:3], b=digits[3:6], c=digits[6:])


def zh_name(rng: random.Random) -> str:
    surname = rng.choice(COMPOUND) if rng.random() < 0.06 else rng.choice(SURNAMES)
    given = "".join(rng.choice(sorted(COMMON_GIVEN)) for _ in range(rng.choice([1, 2, 2])))
    return surname + given


def resident_id(rng: random.Random, *, valid: bool = True) -> str:
    born = f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    first17 = rng.choice(AREAS) + born + f"{rng.randint(0, 999):03d}"
    check = cn_resident_id_check_char(first17)
    if not valid:
        check = rng.choice([c for c in "0123456789X" if c != check])
    return first17 + check


def mobile(rng: random.Random) -> str:
    digits = f"1{rng.choice('3456789')}{rng.randint(0, 999999999):09d}"
    style = rng.choice(["plain", "plain", "plain", "+86", "spaced", "dashed"])
    if style == "+86":
        return "+86 " + digits
    if style == "spaced":
        return f"{digits[:3]} {digits[3:7]} {digits[7:]}"
    if style == "dashed":
        return f"{digits[:3]}-{digits[3:7]}-{digits[7:]}"
    return digits


def bank_card(rng: random.Random) -> str:
    length = rng.choice([16, 19])
    partial = rng.choice(["6222", "6228", "6217", "6212", "6230"]) + "".join(
        str(rng.randint(0, 9)) for _ in range(length - 5)
    )
    number = partial + luhn_check_digit(partial)
    if rng.random() < 0.4:
        return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    return number


def uscc(rng: random.Random) -> str:
    body = rng.choice(["91", "92", "12", "52"]) + rng.choice(AREAS)
    body += "".join(rng.choice(USCC_ALPHABET) for _ in range(9))
    return body + uscc_check_char(body)


def landline(rng: random.Random) -> str:
    area = rng.choice(["010", "021", "0755", "020", "028"])
    return f"{area}-{rng.randint(2, 8)}{rng.randint(0, 9999999):07d}"[: len(area) + 9]


# {placeholder} -> (generator, entity type or None for unlabeled filler)
ZH_TEMPLATES = [
    "姓名：{name}，身份证号：{id}，手机：{mobile}",
    "联系人{name}，电话{mobile}",
    "请{name}先生于明天上午到前台办理手续。",
    "{name}女士的银行卡号为{card}，请核对。",
    "申请人：{name}  证件号码：{id}",
    "公司统一社会信用代码：{uscc}，法定代表人：{name}",
    "身份证号{id}的用户已完成实名认证",
    "电话{mobile}联系{name}经理",
    "卡号{card}已挂失，持卡人{name}。",
    "收件人：{name}，地址：北京市朝阳区建国路88号，电话：{mobile}",
    "{name}老师的邮箱是{email}，有问题可以发邮件。",
    "{name}表示，项目进展顺利。",
    "患者{name}，男，45岁，身份证{id}，联系电话{mobile}。",
    "营业执照（统一社会信用代码）{uscc}",
    "请拨打{landline}或{mobile}咨询。",
    "我叫{name}，我的手机号码是{mobile}。",
    "转账至{name}的账户{card}",
    "{name}说他明天不来了。",
    "订单号{order}已发货，请注意查收。",
    "身份证号码{bad_id}格式有误，请重新填写。",
    "他今天很高兴，方法也很多，时间还早。",
    "王先生和李女士都到了，高度评价了这次活动。",
    "网站{url}上有详细介绍。",
    "服务器IP为{ip}，管理员{name}",
    "{name}（身份证号：{id}）于2023年5月入职。",
    "开户行：中国工商银行，开户名：{name}，账号：{card}",
    "纳税人识别号{uscc}",
    "紧急联系人：{name} {mobile}",
    "邮箱{email}，微信同手机号{mobile}",
    "统一社会信用代码为{uscc}的企业已通过审核。",
    "{name}教授在会上发言。",
    "请联系{name}（{mobile}）",
    "客户{name}投诉称快递未送达。",
    "银行卡{bad_card}无法识别。",
    "我的手机{mobile}，身份证{id}，银行卡{card}。",
]
MIXED_TEMPLATES = [
    "Customer {en_name} 的身份证号是{id}",
    "联系人：{en_name}，Email: {email}",
    "{name} (Tel: {mobile}) will attend the meeting in Beijing.",
    "客户{en_name}在上海的电话是{mobile}",
    "Please send the contract to {name}经理, email {email}.",
    "会议由{en_name}主持，{name}女士做了报告。",
    "Account holder: {name}, card number {card}, ID {id}.",
]


def chinese(fake: Faker, rng: random.Random) -> list[dict[str, object]]:
    generators: dict[str, tuple[Callable[[], object], str | None]] = {
        "name": (lambda: zh_name(rng), "PERSON"),
        "en_name": (fake.name, "PERSON"),
        "id": (lambda: resident_id(rng), "CN_RESIDENT_ID"),
        "bad_id": (lambda: resident_id(rng, valid=False), None),
        "mobile": (lambda: mobile(rng), "PHONE_NUMBER"),
        "landline": (lambda: landline(rng), "PHONE_NUMBER"),
        "card": (lambda: bank_card(rng), "BANK_CARD"),
        "bad_card": (lambda: bad_card(rng), None),
        "uscc": (lambda: uscc(rng), "CN_USCC"),
        "email": (
            lambda: fake.user_name() + "@" + rng.choice(["example.cn", "qq.com", "163.com", "example.com"]),
            "EMAIL_ADDRESS",
        ),
        "url": (
            lambda: rng.choice(
                ["https://www.example.cn/about", "www.sealroom.com.cn", "http://data.example.org/a?b=1"]
            ),
            "URL",
        ),
        "ip": (fake.ipv4_public, "IP_ADDRESS"),
        "order": (lambda: f"{rng.randint(10**17, 10**18 - 1)}", None),
    }
    out = []
    for round_ in range(ZH_ROUNDS):
        for language, templates in (("zh", ZH_TEMPLATES), ("mixed", MIXED_TEMPLATES)):
            for index, template in enumerate(templates):
                keys = list(dict.fromkeys(re.findall(r"\{(\w+)\}", template)))
                values: dict[str, tuple[str, str | None]] = {}
                for key in keys:
                    generate, entity_type = generators[key]
                    values[key] = (str(generate()), entity_type)
                builder = Builder()
                fill(template, values, builder)
                out.append(builder.record(f"{language}-{round_}-{index:02d}", language))
    return out


def bad_card(rng: random.Random) -> str:
    partial = "6222" + "".join(str(rng.randint(0, 9)) for _ in range(11))
    good = luhn_check_digit(partial)
    return partial + str((int(good) + rng.randint(1, 9)) % 10)


def main() -> None:
    rng = random.Random(SEED)
    fake = Faker("en_US")
    fake.seed_instance(SEED)
    records = english(fake, rng) + chinese(fake, rng)
    with OUTPUT.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(records)} records to {OUTPUT}")


if __name__ == "__main__":
    main()
