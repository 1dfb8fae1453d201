import numpy as np
import pytest

from server.scoring import normalize_rows, similarities, softmax_scores, top_labels


def test_softmax_over_all_labels_sums_to_one_and_orders_like_cosine():
    rng = np.random.default_rng(0)
    labels = normalize_rows(rng.normal(size=(50, 8)))
    emb = normalize_rows(rng.normal(size=(3, 8)))
    sims = similarities(emb, labels)
    scores = softmax_scores(sims, 100.0)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    assert (np.argsort(scores, axis=1) == np.argsort(sims, axis=1)).all()
    np.testing.assert_allclose(sims, emb @ labels.T, atol=1e-6)


def test_top_labels_sorted_bounded_and_filtered():
    names = tuple("abcdef")
    scores = np.array([0.05, 0.4, 0.1, 0.3, 0.1, 0.05])
    sims = np.linspace(0, 1, 6)
    top = top_labels(names, scores, sims, top_k=3, min_score=0.0)
    assert [t["label"] for t in top] == ["b", "d", "c"]
    assert top[0] == {"label": "b", "score": 0.4, "similarity": sims[1], "group": None}
    grouped = top_labels(names, scores, sims, top_k=1, min_score=0.0, groups=("x", "animals", "x", None, None, None))
    assert grouped[0]["group"] == "animals"
    assert [t["label"] for t in top_labels(names, scores, sims, top_k=10, min_score=0.2)] == ["b", "d"]
    assert len(top_labels(names, scores, sims, top_k=100, min_score=0.0)) == 6


def test_softmax_is_stable_for_large_logits():
    scores = softmax_scores(np.array([[1.0, 0.99, -1.0]]), 1000.0)
    assert np.isfinite(scores).all() and abs(scores.sum() - 1) < 1e-9


def test_sigmoid_scores_each_label_on_its_own():
    from server.scoring import Scoring

    sigmoid = Scoring("sigmoid", scale=10.0, bias=-5.0)
    sims = np.array([[0.9, 0.1, 0.5]])
    scores = sigmoid.scores(sims)
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-(10.0 * sims[0] - 5.0))))
    # Adding a label changes nothing for the others, unlike a softmax.
    wider = sigmoid.scores(np.array([[0.9, 0.1, 0.5, 0.95]]))
    assert wider[0, :3] == pytest.approx(scores[0])
    softmax = Scoring("softmax", scale=10.0)
    assert softmax.scores(sims).sum() == pytest.approx(1.0)
    assert softmax.scores(np.array([[0.9, 0.1, 0.5, 0.95]]))[0, 0] < softmax.scores(sims)[0, 0]
    # No overflow warnings at extreme logits.
    assert Scoring("sigmoid", 1e4, -1e4).scores(np.array([[-1.0, 1.0]]))[0].tolist() == pytest.approx([0.0, 0.5])
