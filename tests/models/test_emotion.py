"""The shipped emotion model, the encoder and the prosody rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.emotion import (
    ARTIFACTS,
    CARD,
    EmotionModel,
    EmotionResult,
    NgramVectoriser,
    char_ngrams,
    default_model,
)
from models.encoder import load_encoder
from models.prosody import arousal, fuse
from models.train_emotion import DATA, evaluate, fit_ngrams, folds, load_rows
from portrait.events import Prosody

AGITATED = Prosody(pitch_hz=260, pitch_var=75, energy_db=-8, speech_rate=5.8)
CALM = Prosody(pitch_hz=170, pitch_var=12, energy_db=-33, speech_rate=2.6)


@pytest.fixture(scope="module")
def model() -> EmotionModel:
    return default_model()


def test_encoder_is_normalised_and_crosses_languages() -> None:
    encoder = load_encoder()
    vectors = encoder.encode(["停电了", "The power is out", "我想买一台新电脑"])
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    # the Chinese and English outage sentences are closer than the two Chinese ones
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_clear_messages_in_both_languages(model: EmotionModel) -> None:
    texts = [
        "你们怎么又把我的钱扣错了，气死我了",
        "非常感谢，师傅修得又快又好",
        "请问这个月的账单什么时候出",
        "This is the worst service I have ever had.",
        "Thank you, that was really helpful!",
        "What time do you open on Monday?",
    ]
    labels = [r.label for r in model.predict(texts)]
    assert labels == ["negative", "positive", "neutral"] * 2


def test_results_keep_order_and_scores_are_probabilities(model: EmotionModel) -> None:
    results = model.predict(["好的", "Terrible.", "Great!"] * 3)
    assert len(results) == 9 and model.predict([]) == []
    assert [r.label for r in results[:3]] == [r.label for r in results[3:6]]
    for result in results:
        assert set(result.scores) == {"positive", "neutral", "negative"}
        assert sum(result.scores.values()) == pytest.approx(1.0, abs=1e-3)
        assert -1.0 <= result.valence <= 1.0


def test_shipped_card_holds_what_the_shipped_files_measure() -> None:
    card = json.loads((ARTIFACTS / CARD).read_text(encoding="utf-8"))
    measured = evaluate(EmotionModel())
    sets = {"unseen", "hard_unseen", "hard_unseen_2", "hard_unseen_3", "dev_sample"}
    assert set(measured) == sets
    for name, figures in measured.items():
        assert figures == card["metrics"][name], name
    # the hard set (stance shifts, negation, relief, questions, slang, emoji, mixed)
    hard = measured["hard_unseen"]
    assert hard["accuracy"] >= 0.88 and min(hard["recall"].values()) >= 0.85
    second = measured["hard_unseen_2"]
    assert second["accuracy"] >= 0.90 and min(second["recall"].values()) >= 0.85
    assert second["by_kind"]["relief"] >= 0.8
    # written before the training lines of 2026-12-07: praise in negative-looking words,
    # traditional characters, sarcasm, polite anger, fear, typos
    third = measured["hard_unseen_3"]
    assert third["accuracy"] >= 0.9 and min(third["recall"].values()) >= 0.85
    assert third["by_kind"]["traditional"] >= 0.8
    assert set(hard["by_kind"]) == {
        "stance_shift",
        "negation",
        "relief",
        "question",
        "slang",
        "emoji",
        "mixed",
    }
    for lang in ("zh", "en"):
        # sentences written after the model was built, and the dev sample
        for name in measured:
            assert measured[name][lang]["accuracy"] >= 0.9, (name, lang)
        # cross-validated on the own set (each line predicted without its fold; a fifth
        # of it is now hard lines — sarcasm, stance shifts — so it reads lower than the
        # unseen sets)
        figures = card["metrics"]["held_out"][lang]
        assert figures["accuracy"] >= 0.86 and min(figures["recall"].values()) >= 0.83


def test_folds_are_stratified_and_fixed() -> None:
    rows = load_rows(DATA)
    fold = folds(rows)
    assert fold == folds(rows)
    for k in range(5):
        members = [r for r, f in zip(rows, fold, strict=True) if f == k]
        for lang in ("zh", "en"):
            share = sum(r["lang"] == lang for r in members) / len(members)
            assert abs(share - sum(r["lang"] == lang for r in rows) / len(rows)) < 0.02


def test_runtime_ngram_vectoriser_equals_scikit_learn(tmp_path: Path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = ["又停电了，气死我了", "Thanks a lot!", "thanks, thanks", "停电 停电 again"]
    fitted = TfidfVectorizer(analyzer=char_ngrams, min_df=2, sublinear_tf=True).fit(texts)
    ours = fit_ngrams(texts, tmp_path / "n.json")
    assert NgramVectoriser.load(tmp_path / "n.json").index == ours.index
    probe = ["停电了 thanks", "nothing known ✓", ""]
    assert np.allclose(ours.transform(probe), fitted.transform(probe).toarray(), atol=1e-5)
    hi = [" ", "h", "i", " ", " h", "hi", "i ", " hi", "hi "]
    nihao = [" ", "你", "好", " ", " 你", "你好", "好 ", " 你好", "你好 "]
    assert char_ngrams("Hi  你好") == [*hi, *nihao]


def test_lexicons_rescue_plain_sentiment_words(model: EmotionModel) -> None:
    texts = ["Dreadful.", "Superb!", "体验很差", "质量不错"]
    features = model.lexicons.transform(texts)
    assert features[0, 0] < -0.3 < 0.3 < features[1, 0]  # VADER compound
    assert features[2, 3] < 0 < features[3, 3]  # Chinese review log-odds
    assert not features[:2, 3:].any() and not features[2:, :3].any()
    labels = [r.label for r in model.predict(texts)]
    assert labels == ["negative", "positive", "negative", "positive"]


def result(label: str, negative: float, neutral: float, positive: float) -> EmotionResult:
    return EmotionResult(
        label, {"negative": negative, "neutral": neutral, "positive": positive}, None, None
    )


def test_flat_words_in_an_agitated_voice_read_as_negative() -> None:
    flat = result("neutral", 0.05, 0.85, 0.10)
    assert fuse(flat, AGITATED).label == "negative"
    assert fuse(flat, None) == flat
    assert fuse(flat, Prosody()) == flat  # no usable field: the text decides


def test_a_happy_customer_talking_fast_stays_positive() -> None:
    happy = result("positive", 0.02, 0.05, 0.93)
    assert fuse(happy, AGITATED).label == "positive"


def test_a_calm_voice_softens_a_weak_negative_only() -> None:
    weak = result("negative", 0.45, 0.40, 0.15)
    strong = result("negative", 0.90, 0.05, 0.05)
    assert fuse(weak, CALM).label == "neutral"
    assert fuse(strong, CALM).label == "negative"


def test_arousal_ramps() -> None:
    assert arousal(AGITATED) == pytest.approx(0.91, abs=0.01)
    assert arousal(CALM) == 0.0
    assert arousal(Prosody(speech_rate=4.5)) == pytest.approx(0.5)
    assert arousal(None) is None


def test_cli_jsonl_keeps_order_and_adds_labels(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    rows = [
        {"text": "谢谢你们", "id": 1},
        {"text": "Why is my bill so high?!", "id": 2},
        {"text": "请问营业时间", "id": 3},
    ]
    source.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "cli", "emotion", "--jsonl", str(source)],
        capture_output=True,
        check=True,
        timeout=120,
    )
    out = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [r["id"] for r in out] == [1, 2, 3]
    assert all(r["label"] in {"positive", "neutral", "negative"} and r["scores"] for r in out)


def test_cli_jsonl_reads_stdin_when_given_a_dash() -> None:
    texts = ["Thanks a lot!", "请问营业时间"]
    lines = [json.dumps({"text": t, "id": i}) for i, t in enumerate(texts)]
    done = subprocess.run(
        [sys.executable, "-m", "cli", "emotion", "--jsonl", "-"],
        input=("\n".join(lines) + "\n").encode(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    out = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [(r["id"], r["label"]) for r in out] == [(0, "positive"), (1, "neutral")]


def test_traditional_characters_read_as_the_same_message(model: EmotionModel) -> None:
    from models.emotion import simplified

    traditional, simple = "維修人員很準時，處理得很乾淨", "维修人员很准时，处理得很干净"
    assert simplified(traditional) == simple
    assert simplified("Thanks 👍") == "Thanks 👍"
    pairs = ["網路斷了三天都沒人處理", "网路断了三天都没人处理"]
    first, second = model.predict(pairs)
    assert first.label == second.label == "negative" and first.scores == second.scores
