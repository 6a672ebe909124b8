"""Script detection: which records, and which parts of them, the English NER model may see."""

from __future__ import annotations

import pytest

from custody.language import cjk_free_segments, detect_language, has_han, latin_view


class TestDetectLanguage:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Please call John Smith tomorrow.", "en"),
            ("Café au lait with Zoë", "en"),
            ("请联系张伟先生，电话13812345678。", "zh"),
            ("联系人：John Smith，电话13812345678", "mixed"),
            ("邮箱zhang@example.com", "mixed"),
            ("身份证号110101199003078515", "zh"),
            ("Привет, как дела?", "other"),
            ("こんにちは、田中さん", "other"),
            ("13812345678", "other"),
            ("", "other"),
        ],
    )
    def test_says_which_script_a_record_is_written_in(self, text: str, expected: str) -> None:
        assert detect_language(text) == expected

    def test_a_single_latin_letter_in_chinese_text_stays_chinese(self) -> None:
        assert detect_language("身份证号11010119900307851X") == "zh"


class TestLatinView:
    def test_blanks_cjk_characters_and_keeps_offsets(self) -> None:
        text = "客户John Smith在上海，电话：555"
        view = latin_view(text)
        assert len(view) == len(text)
        assert not has_han(view)
        assert view[2:12] == "John Smith"
        assert view.index("555") == text.index("555")

    def test_returns_ascii_text_unchanged(self) -> None:
        text = "Plain English"
        assert latin_view(text) is text


class TestCjkFreeSegments:
    def test_splits_a_span_at_cjk_characters(self) -> None:
        text = "John 和 Mary"
        assert cjk_free_segments(text, 0, len(text)) == [(0, 4), (7, 11)]

    def test_keeps_a_span_without_cjk(self) -> None:
        assert cjk_free_segments("x John Smith", 2, 12) == [(2, 12)]

    def test_drops_pieces_without_letters(self) -> None:
        assert cjk_free_segments("12 上海", 0, 5) == []
