"""Chinese personal names: a surname list, anchored by context.

There is no offline Chinese NER model here, and a surname list alone would
flag half of any Chinese text (高兴, 方法, 王国 all start with a surname). So a
name is only reported where the text says a person is named: after a label
(姓名：, 联系人, 收件人, 交接给, 转账至 ...; after 和, 跟, 找 ... only
a frequent surname with common given-name characters), before a title (先生, 女士, 经理, 老师 ...), or,
with a lower score, before a reporting verb (说, 表示 ...) when the given name
is made of common given-name characters; the familiar form (小周, 老王: 小, 老
or 阿 and a frequent surname) where it stands alone, between breaks or before
说. A name found that way is also found where it recurs in the same record.
"""

from __future__ import annotations

import re
from typing import Final

from custody.language import HAN_CLASS
from custody.recognizers.base import Candidate, Recognizer, TextView


def _words(*lines: str) -> tuple[str, ...]:
    return tuple(" ".join(lines).split())


# The most frequent surnames first; TOP_SURNAMES decides ambiguous cases
# such as "向王明先生" (向 is a surname too, but here a preposition).
_SURNAMES_BY_FREQUENCY: Final = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡"
    "余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯"
    "龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章"
    "鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉"
    "骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦"
    "戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄"
    "丛仲虞敖巩明佘池查麻苑迟邝官封谈匡鞠惠荆乐冀郁胥南班储原栗燕楚鄢劳谌奚皮粟冼蔺楼"
    "盘满闻位厉伊仝区郜海阚花权强帅屠豆朴盖练廉禹井祖漆巴丰支卿国狄平计索宣晋相初门云"
    "容敬来扈晁芮都普阙浦戈伏鹿薄邸雍辜羊阿乌母裘亓修邰赫杭况那宿鲜印逯隆茹诸战慕危玉"
    "银亢嵇公哈湛宾戎勾茅利於呼居揭干但尉冶斯元束檀衣信展阴昝智幸奉植衡富尧闭由"
)
SINGLE_SURNAMES: Final = frozenset(_SURNAMES_BY_FREQUENCY)
TOP_SURNAMES: Final = frozenset(_SURNAMES_BY_FREQUENCY[:100]) - frozenset("于向万时文安方高白金石江关成和常")
COMPOUND_SURNAMES: Final = frozenset(
    _words(
        "万俟 上官 东方 东郭 令狐 仲孙 公孙 公羊 单于 南宫 司徒 司空 司马 呼延",
        "夏侯 太史 宇文 完颜 宗政 尉迟 左丘 巫马 慕容 拓跋 梁丘 欧阳 段干 淳于",
        "澹台 濮阳 独孤 申屠 百里 皇甫 端木 第五 羊舌 西门 诸葛 谷梁 赫连 轩辕",
        "钟离 长孙 闻人 闾丘 鲜于",
    )
)
# Characters that do not occur in a given name where these anchors apply:
# particles, pronouns, and the first characters of words that follow names.
NON_GIVEN: Final = frozenset(
    "".join(
        "上下不与个为主之也了事于今介从他以们件任份会住你先其出分到前医去又及叫号名后向吗"
        "吧告员呢和哦啊嗯在址处外女她姓它对将就局工已年很总想我或手打把护指授教日时昨是曾"
        "有来校次没现理由电的着码示科秒称程等答系绍经给联能董表被要认让讲证诉说请负责跟身"
        "过还这道那部都里问院"
    )
)
COMMON_GIVEN: Final = frozenset(
    "".join(
        "一东中丹丽久义乐乾云亚亮仁伟伦佩佳俊信倩健元光兰兵军冬凡凤凯刚利力勇勤华卓博卫厚"
        "可君哲唐喜嘉国坚坤垚士壮夏天奕妍妮姗姣威娅娇娜娟娥娴婉婕婵婷媛嫣子孝学宁宇安宋宏"
        "宙宝家宸富小尧山岚岩岭岳峰峻崇嵘嵩川巧帅帆平广庆康建强彤彩彪德心志忠思怡恒恩悦惠"
        "慈慧成扬振敏敬文斌新旭昊明星春晓晖晨晶智曦月杨杰松林柏柳树根桂桃桥梅梓梦森欢欣正"
        "武毅民永汉江沛河泉泓波泰泽洁洋洪洲浩浪海涛涵淑深淼清源潮澜瀚灵灿炎炜炳烨焱然煌煜"
        "熙燕爱玉玥玲珊珍珠琦琪琳琴瑛瑜瑶瑾璇璐生畅睿磊礼祥福秀秋立竹笑红美翔翠耀聪胜腾航"
        "艳芝芬芳芷芸苗若英茜荣荷莉莎莲莹菁菊菲萍萱蓉蓓蕊蕾薇虎虹诗诚语谐谦豪财贵超越轩辉"
        "辰达远通逸金鑫钢铁铭银锋锐长阳雄雨雪雯霞露青静韧顺颖飞驰骁骏高鸣鸿鹏鹤麟龙"
    )
)
# Surname + character pairs that are ordinary words far more often than names.
STOP_WORDS: Final = frozenset(
    _words(
        "万一 万元 严格 严重 丰富 乐观 于是 任何 任务 但是 位于 位置 余额 信任",
        "信息 信用 元旦 全国 全部 全面 公司 公开 关于 关心 关注 关系 关键 农业",
        "冷静 凌晨 初中 利润 利用 包括 包装 区域 华人 华山 单位 南京 南方 卫生",
        "印象 危险 原则 原因 原来 古代 司机 司法 向前 周一 周三 周二 周五 周六",
        "周四 周围 周年 周日 周期 周末 和平 唐山 商业 商品 国家 国际 夏天 孔雀",
        "孙中山 孙子 季度 安全 安排 安装 安静 宗教 官方 宣传 容易 居民 展示 左右",
        "师范 常用 常见 常规 平台 平均 平安 平时 平等 幸福 应用 应该 强调 成为",
        "成功 成本 成立 房间 支付 支持 文件 文化 文字 文明 文章 方便 方向 方式",
        "方案 方法 方针 方面 时代 时候 时期 时间 明天 明星 明显 明白 明确 晋升",
        "普通 智能 曾经 权利 权限 来自 林芝 查看 查询 梁山 楼下 欧洲 武汉 毕业",
        "毛巾 水平 江山 江湖 沙发 海关 海外 温度 游戏 满意 满足 燕子 王国 由于",
        "申请 白天 白色 皮肤 相信 相关 相同 石头 石油 祖国 程序 程度 童年 符合",
        "简单 管理 纪念 练习 舒服 花园 范围 荣誉 董事 蓝色 解决 解释 计划 计算",
        "许可 许多 谈话 谢谢 费用 路上 路线 车站 车辆 辛苦 边境 那些 都是 金属",
        "金融 金钱 金额 钱包 银行 长江 门口 阳光 陈述 项目 颜色 马上 马克 马来",
        "马路 高中 高于 高价 高兴 高层 高度 高校 高温 高端 高级 高速 黄山 黄河",
        "黄金 黎明 齐全 龙头",
    )
)
_TITLES: Final = _words(
    "总经理 董事长 副总裁 总裁 总监 经理 主任 主管 局长 处长 科长 部长 院长 校长",
    "所长 厂长 站长 行长 社长 组长 班长 队长 村长 镇长 县长 市长 省长 书记",
    "委员 主席 先生 女士 小姐 太太 夫人 老师 教授 博士 医生 医师 大夫 护士",
    "律师 会计 工程师 同学 同志 师傅 阿姨 叔叔 警官 法官 检察官 秘书 助理 老板",
)
_LABELS: Final = _words(
    "紧急联系人 法定代表人 被保险人 主治医生 主治医师 联系人 联络人 收件人",
    "收货人 寄件人 发件人 申请人 负责人 经办人",
    "法人代表 持卡人 开户人 开户名 投保人 受益人 借款人 担保人 委托人 代理人 当事人 监护人 推荐人 介绍人",
    "审批人 审核人 填表人 报告人 举报人 投诉人 出租人 承租人 班主任 主讲人 姓名 名字 患者 病人",
    "户主 签名 签字 户名 乘客 旅客 学生 员工 职工 租客 房东 业主 我叫 名叫",
    "叫做 本人 作者 记者 讲师 客户 甲方 乙方 管理员 请联系 联系",
    # Hand-overs, checks and payments name the person they concern (issue 12).
    "用户 交接给 移交给 转交给 核对 核实 转账至 转账到 转账给 汇款给 打款给 车主 微信加 加微信 cc一下 抄送",
)
# Conjunctions: a name after them only with a frequent surname and given-name characters common in names.
_WEAK_LABELS: Final = _words("和 跟 与 同 给 找 问 让 叫 请")
_VERBS: Final = _words(
    "笑着说 表示 认为 指出 介绍 告诉 强调 透露 回忆 坦言 说 称 问 答",
)
# Possessions that mark the name before "的": "转账至何可的账户".
_POSSESSIONS: Final = _words(
    "账户 帐户 账号 帐号 银行卡 卡号 手机 电话 身份证 邮箱 地址 住址 微信 护照",
    "病历 工资",
)
_FOLLOWERS: Final = (
    _words(
        "电话 手机 身份 住址 地址 邮箱 性别 年龄 出生 籍贯 民族 今天 明天 昨天",
        "现在 已经 正在 负责 联系 拨打 电邮 微信 工号 账号 卡号 学号 投诉 反映",
        "要求 申请 购买 办理 咨询 来电 希望 需要 同意 确认 签收 收到 提出 提交",
        "参加 出席 主持 发言 报告 询问 回答 打电话 发来 发送 入职 离职 毕业 出生",
    )
    + _TITLES
    + _VERBS
)


def _alternation(words: tuple[str, ...] | list[str]) -> str:
    return "|".join(sorted(map(re.escape, words), key=len, reverse=True))


_LABEL_RE: Final = re.compile(f"(?:{_alternation(_LABELS)})[:：]?[ \t]?(?:是|为)?[:：]?[ \t]?")
_WEAK_LABEL_RE: Final = re.compile(f"(?:{_alternation(_WEAK_LABELS)})")
_TITLE_RE: Final = re.compile(f"(?:{_alternation(_TITLES)})")
_VERB_RE: Final = re.compile(f"(?:{_alternation(_VERBS)})")
_POSSESSION_RE: Final = re.compile(f"的(?:{_alternation(_POSSESSIONS)})")
_HAN: Final = re.compile(f"[{HAN_CLASS}]")
_HAN_RUN: Final = re.compile(f"[{HAN_CLASS}]{{2,4}}")
# The familiar form of a name, 小/老/阿 and a frequent surname, or 阿 and a common given-name
# character (阿强, 阿信), standing alone: after a break or a word that addresses or points at someone
# (你, 好, 叫, 和, 谢, 告诉, 通知, 提醒, 一下, 的, 技术员, 客服, 组长 ...), before a break, 说 or a word that
# follows names (_FOLLOWERS: 已经, 电话, 先生 ...): "谢谢你，小周！", "老王说", "麻烦转告一下小王，",
# "财务部的老郑。", "技术员小刘已经上门". Tenth round (下告知醒诉谢的员, 阿 + given, _FOLLOWERS): new
# matches train 2 (阿超先生, 小叶同学), dev 1 (阿袁收到), all names.
_FAMILIAR: Final = re.compile(
    f"(?:^|(?<=[^{HAN_CLASS}])|(?<=[你好叫和跟找给问让请下告知醒诉谢的员服长]))"
    f"(?:[小老阿][{''.join(sorted(TOP_SURNAMES))}]|阿[{''.join(sorted(COMMON_GIVEN))}])"
    f"(?=[，。！？、：:,.!?；;\\s]|说|$|{_alternation(_FOLLOWERS)})"
)
# A doubled-character pet name right after a family word ("我女儿朵朵", "儿子乐乐"), unless the pair is a
# common word of jieba's dictionary (天天, 慢慢, 常常: "孩子天天哭"). Tenth round, from a walk: no match
# in train or dev.
# Two characters each: the lookbehind below has one width.
_KIN: Final = _words(
    "女儿 儿子 闺女 老婆 老公 妻子 丈夫 媳妇 宝宝 孩子 侄子 侄女 外甥 孙子 孙女 弟弟 妹妹 哥哥 姐姐 宝贝"
)
_KIN_PET_NAME: Final = re.compile(f"(?<=(?:{_alternation(_KIN)}))([{HAN_CLASS}])\\1")

# A frequent surname and a form of address with no given name (物业的宋女士, 找王老师): the writer's
# way of naming someone both know, labelled PERSON whole by Weibo NER (江小姐, 顾老师). After a break
# or a word that points at someone, as the familiar form above. Eleventh round, from a walk.
_ADDRESSED: Final = _words(
    "先生 女士 小姐 太太 夫人 老师 医生 大夫 护士 律师 师傅 阿姨 叔叔 警官 经理 老板 同学"
)
_SURNAME_TITLE: Final = re.compile(
    f"(?:^|(?<=[^{HAN_CLASS}])|(?<=[你好叫和跟找给问让请下告知醒诉谢的员服长位向对是系]))"
    f"[{''.join(sorted(TOP_SURNAMES))}](?:{_alternation(_ADDRESSED)})"
)
# A nickname after its label ("昵称：追风少年", "网名叫小鱼儿"), and what the writer asks to be called
# ("叫我小鱼就行"). Eleventh round, from a walk.
_NICKNAME: Final = re.compile(
    r"(?:(?:昵称|网名|花名|微信名|微信昵称|游戏名|艺名)(?:是|叫|为)?[：:]?[ \t]*"
    r"([^\s，。、,;；！!？?：:]{1,16})"
    f"|叫我([{HAN_CLASS}]{{1,3}}?)(?=就行|就好|就可以|好了))"
)
LABEL_SCORE: Final = 0.85
TITLE_SCORE: Final = 0.85
VERB_SCORE: Final = 0.6
POSSESSION_SCORE: Final = 0.7
STANDALONE_SCORE: Final = 0.7
FAMILIAR_SCORE: Final = 0.6
# A two-character word at least this frequent in jieba's dictionary ends a name before it.
COMMON_WORD_FREQUENCY: Final = 100


def _is_given_char(char: str) -> bool:
    return _HAN.match(char) is not None and char not in NON_GIVEN


def _starts_word(text: str, pos: int) -> bool:
    """Say whether a common two-character word starts at ``pos`` (王明核对: 核对 is no part of the name)."""
    from custody.recognizers.zh_segmenter import word_frequency  # jieba, loaded on first use

    word = text[pos : pos + 2]
    return len(word) == 2 and word_frequency(word) >= COMMON_WORD_FREQUENCY


def _surname_at(text: str, pos: int) -> int:
    """Return the length of the surname starting at ``pos`` (2 compound, 1 single, 0 none)."""
    if text[pos : pos + 2] in COMPOUND_SURNAMES:
        return 2
    return 1 if pos < len(text) and text[pos] in SINGLE_SURNAMES else 0


class ChineseNameRecognizer(Recognizer):
    """Chinese personal names: a surname and one or two given-name characters, anchored by context."""

    name = "ChineseNameRecognizer"
    entities = ("PERSON",)
    languages = frozenset({"zh"})

    def applies(self, view: TextView) -> bool:
        return view.has_han

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        names: dict[tuple[int, int], float] = {}
        for m in _LABEL_RE.finditer(text):
            self._keep(names, text, self._after_label(text, m.end()), LABEL_SCORE)
        for m in _WEAK_LABEL_RE.finditer(text):
            span = self._after_label(text, m.end())
            if span and self._common_name(text[span[0] : span[1]]):
                self._keep(names, text, span, VERB_SCORE)
        for m in _TITLE_RE.finditer(text):
            self._keep(names, text, self._before(text, m.start(), common_only=False), TITLE_SCORE)
        for m in _VERB_RE.finditer(text):
            self._keep(names, text, self._before(text, m.start(), common_only=True), VERB_SCORE)
        for m in _POSSESSION_RE.finditer(text):
            self._keep(names, text, self._before(text, m.start(), common_only=True), POSSESSION_SCORE)
        for m in _FAMILIAR.finditer(text):
            self._keep(names, text, (m.start(), m.end()), FAMILIAR_SCORE)
        for m in _SURNAME_TITLE.finditer(text):
            self._keep(names, text, (m.start(), m.end()), FAMILIAR_SCORE)
        for m in _NICKNAME.finditer(text):
            group = 1 if m.group(1) is not None else 2
            self._keep(names, text, (m.start(group), m.end(group)), LABEL_SCORE)
        for m in _KIN_PET_NAME.finditer(text):
            if not _starts_word(text, m.start()):
                self._keep(names, text, (m.start(), m.end()), FAMILIAR_SCORE)
        for m in _HAN_RUN.finditer(text):
            if self._standalone(text, m.start(), m.end()):
                self._keep(names, text, (m.start(), m.end()), STANDALONE_SCORE)
        self._recurrences(text, names)
        return [Candidate(s, e, "PERSON", score, self.name) for (s, e), score in names.items()]

    @staticmethod
    def _keep(
        names: dict[tuple[int, int], float], text: str, span: tuple[int, int] | None, score: float
    ) -> None:
        if span is None:
            return
        start, end = span
        if text[start:end] in STOP_WORDS or text[start : start + 2] in STOP_WORDS:
            return
        names[span] = max(score, names.get(span, 0.0))

    @staticmethod
    def _common_name(name: str) -> bool:
        """Say whether a name is made of a frequent surname and common given-name characters."""
        surname = 2 if name[:2] in COMPOUND_SURNAMES else 1
        top = surname == 2 or name[0] in TOP_SURNAMES
        return top and len(name) > surname and all(c in COMMON_GIVEN for c in name[surname:])

    @staticmethod
    def _after_label(text: str, pos: int) -> tuple[int, int] | None:
        surname = _surname_at(text, pos)
        if not surname:
            return None
        first = pos + surname
        if first >= len(text) or not _is_given_char(text[first]):
            return None
        second = first + 1
        two = (
            second < len(text)
            and _is_given_char(text[second])
            and not text.startswith(_FOLLOWERS, second)
            and not text.startswith(_FOLLOWERS, first)
            and not _starts_word(text, second)
        )
        return (pos, second + 1) if two else (pos, second)

    @staticmethod
    def _before(text: str, end: int, *, common_only: bool) -> tuple[int, int] | None:
        """Find the name that ends where a title or verb starts, preferring frequent surnames."""
        best: tuple[tuple[int, int, int], tuple[int, int]] | None = None
        for given in (2, 1):
            given_start = end - given
            if given_start < 1 or not all(_is_given_char(c) for c in text[given_start:end]):
                continue
            if common_only and not all(c in COMMON_GIVEN for c in text[given_start:end]):
                continue
            for surname in (2, 1):
                start = given_start - surname
                if start < 0 or _surname_at(text, start) != surname:
                    continue
                top = surname == 2 or text[start] in TOP_SURNAMES
                if common_only and not top:
                    continue
                # "和李女士", "向王明先生": a rare surname before a frequent one is a word, not a name.
                if not top and text[given_start] in TOP_SURNAMES:
                    continue
                rank = (surname, int(top), given)
                if best is None or rank > best[0]:
                    best = (rank, (start, end))
        return best[1] if best else None

    @staticmethod
    def _standalone(text: str, start: int, end: int) -> bool:
        """Say whether a Han run standing alone ("罗鸣瀚, card number ...", "张伟、李娜") is a whole name."""
        if (start > 0 and _HAN.match(text[start - 1])) or (end < len(text) and _HAN.match(text[end])):
            return False
        surname = _surname_at(text, start)
        if not surname or not 1 <= end - start - surname <= 2:
            return False
        if surname == 1 and text[start] not in TOP_SURNAMES:
            return False
        return all(c in COMMON_GIVEN for c in text[start + surname : end])

    @staticmethod
    def _recurrences(text: str, names: dict[tuple[int, int], float]) -> None:
        for (start, end), score in list(names.items()):
            name = text[start:end]
            at = text.find(name)
            while at != -1:
                span = (at, at + len(name))
                if span not in names:
                    names[span] = score
                at = text.find(name, at + 1)
