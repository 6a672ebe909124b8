"""KNN-Shapley against brute-force Shapley on tiny sets, the aggregates' bounds, the spec block."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from training.runner.data import InputError
from training.runner.spec import SpecError, parse_spec
from training.runner.valuation import (
    aggregates,
    histogram,
    knn_shapley,
    knn_utility,
    label_margins,
    poison_flags,
    read_items,
    self_values,
    split_items,
)


def subset_utility(
    members: tuple[int, ...],
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    k: int,
) -> float:
    """The K-NN classifier's utility on a subset, from its definition (ties broken by index)."""
    if not members:
        return 0.0
    total = 0.0
    for point, target in zip(val_x, val_y, strict=True):
        distances = [(float(((train_x[i] - point) ** 2).sum()), i) for i in members]
        nearest = [i for _d, i in sorted(distances)[:k]]
        total += sum(train_y[i] == target for i in nearest) / k
    return total / len(val_x)


def brute_force_shapley(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    k: int,
    exclude: list[int] | None = None,
) -> np.ndarray:
    """Shapley values by enumerating every subset: sum over S of |S|!(p-|S|-1)!/p! (U(S+i) - U(S)),
    one game per validation point (its players: every training point but `exclude[j]`), averaged."""
    n = len(train_x)
    values = np.zeros(n)
    for j in range(len(val_x)):
        players = [i for i in range(n) if exclude is None or i != exclude[j]]
        p = len(players)
        cache: dict[tuple[int, ...], float] = {}

        def utility(
            members: tuple[int, ...], j: int = j, cache: dict[tuple[int, ...], float] = cache
        ) -> float:
            if members not in cache:
                cache[members] = subset_utility(
                    members, train_x, train_y, val_x[j : j + 1], val_y[j : j + 1], k
                )
            return cache[members]

        for i in players:
            others = [q for q in players if q != i]
            for size in range(p):
                weight = math.factorial(size) * math.factorial(p - size - 1) / math.factorial(p)
                for subset in itertools.combinations(others, size):
                    values[i] += weight * (utility(tuple(sorted((*subset, i)))) - utility(subset))
    return values / len(val_x)


class TestKnnShapley:
    @pytest.mark.parametrize(
        ("n", "k", "seed"), [(1, 1, 0), (4, 1, 1), (6, 3, 2), (8, 2, 3), (10, 5, 4), (9, 12, 5)]
    )
    def test_agrees_with_brute_force_and_is_efficient(self, n: int, k: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        train_x, val_x = rng.normal(size=(n, 3)), rng.normal(size=(5, 3))
        train_y, val_y = rng.integers(0, 2, size=n), rng.integers(0, 2, size=5)
        exact = brute_force_shapley(train_x, train_y, val_x, val_y, k)
        fast = knn_shapley(train_x, train_y, val_x, val_y, k, chunk=2)
        assert np.allclose(fast, exact, atol=1e-5)
        full = subset_utility(tuple(range(n)), train_x, train_y, val_x, val_y, k)
        assert fast.sum() == pytest.approx(full, abs=1e-5)
        assert knn_utility(train_x, train_y, val_x, val_y, k) == pytest.approx(full, abs=1e-6)

    @pytest.mark.parametrize(("n", "k"), [(2, 1), (7, 3), (9, 2)])
    def test_leave_self_out_agrees_with_brute_force(self, n: int, k: int) -> None:
        rng = np.random.default_rng(n)
        x, y = rng.normal(size=(n, 2)), rng.integers(0, 2, size=n)
        x[1] = x[0]  # a duplicate: the excluded point must go, not its twin
        chosen = np.array([0, n - 1])
        exact = brute_force_shapley(x, y, x[chosen], y[chosen], k, exclude=chosen.tolist())
        fast = knn_shapley(x, y, x[chosen], y[chosen], k, exclude=chosen)
        assert np.allclose(fast, exact, atol=1e-5)
        assert self_values(x, y, k, limit=n, seed=0).shape == (n,)

    def test_a_mislabelled_point_beside_the_validation_point_is_worth_less_than_nothing(self) -> None:
        train_x = np.array([[0.0], [0.1], [5.0]])
        values = knn_shapley(train_x, np.array([1, 0, 1]), np.array([[0.05]]), np.array([1]), 1)
        assert values[1] < 0 < values[0]

    def test_refuses_mismatched_shapes(self) -> None:
        with pytest.raises(ValueError, match="shapes"):
            knn_shapley(np.zeros((3, 2)), np.zeros(2), np.zeros((1, 2)), np.zeros(1), 1)
        with pytest.raises(ValueError, match="k >= 1"):
            knn_shapley(np.zeros((3, 2)), np.zeros(3), np.zeros((1, 2)), np.zeros(1), 0)


class TestAggregates:
    def test_small_groups_fold_into_other_and_tiny_remainders_stay_in_totals(self) -> None:
        values = np.linspace(-1, 1, 100) / 100
        groups = ["A"] * 60 + ["B"] * 25 + ["C"] * 10 + ["D"] * 5
        result = aggregates(values, groups, min_group=20)
        assert set(result["groups"]) == {"A", "B"} and result["suppressed_records"] == 15
        result = aggregates(values, groups, min_group=10)
        assert set(result["groups"]) == {"A", "B", "C"} and result["suppressed_records"] == 5
        assert result["summary"]["count"] == 100
        assert result["groups"]["A"]["count"] == 60

    def test_every_histogram_bin_holds_at_least_the_minimum(self) -> None:
        values = np.concatenate([np.random.default_rng(0).normal(size=200), [40.0]])
        bins = histogram(values, bins=20, min_group=20)
        assert sum(b["count"] for b in bins) == 201
        assert min(b["count"] for b in bins) >= 20
        assert len(bins) > 1

    def test_refuses_fewer_records_than_the_minimum(self) -> None:
        with pytest.raises(InputError, match="at least 20"):
            aggregates(np.zeros(5), ["A"] * 5, min_group=20)


class TestPoisonFlags:
    def test_flags_records_over_the_margin(self) -> None:
        margins = np.array([0.3, 0.01, -0.4, 0.05, 0.06])
        assert poison_flags(margins, margin=0.04).tolist() == [0, 3, 4]
        assert poison_flags(margins, margin=0.06).tolist() == [0]

    def test_label_margins_see_a_flipped_point(self) -> None:
        # Two tight clusters on the unit circle; point 3 sits in cluster A with label B.
        angles = np.array([0.0, 0.05, 0.1, 0.15, 1.5, 1.55, 1.6, 1.65])
        x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
        margins = label_margins(x, y, 2)
        assert margins[3] > 0.5 and (margins[[0, 1, 2, 4, 5, 6, 7]] < 0).all()
        # Chunked the same as whole.
        assert np.allclose(label_margins(x, y, 2, chunk=3), margins)

    def test_a_record_alone_in_its_label_has_no_own_neighbours(self) -> None:
        x = np.eye(3)
        margins = label_margins(x, np.array([0, 0, 1]), 5)
        assert margins[2] == pytest.approx(0.0 - (-1.0))  # others at cosine 0; no own label: -1


class TestItems:
    def test_reads_labels_groups_and_splits(self) -> None:
        lines = [
            b'{"text": "a", "label": "x", "group": "C1", "id": "r1"}\n',
            b'{"text": "b", "label": "y", "split": "validation"}\n',
        ]
        train, validation = split_items(read_items(lines), 0.5, 0)
        assert [(i.id, i.group) for i in train] == [("r1", "C1")] and validation[0].text == "b"

    @pytest.mark.parametrize(
        ("line", "detail"),
        [
            (b'{"text": "secret words"}', "line 1: valuation needs a string 'label'"),
            (b'{"text": "secret words", "label": "x", "split": "test"}', "line 1: 'split' must be"),
            (b"secret words", "line 1 is not valid JSON"),
        ],
    )
    def test_errors_name_the_line_never_the_text(self, line: bytes, detail: str) -> None:
        with pytest.raises(InputError) as error:
            read_items([line])
        assert error.value.detail.startswith(detail) and "secret" not in error.value.detail

    def test_a_holdout_needs_training_records_left(self) -> None:
        with pytest.raises(InputError, match="training records and validation"):
            split_items(read_items([b'{"text": "a", "label": "x"}']), 0.2, 0)


class TestSpec:
    BASE = {"kind": "builtin", "name": "all-minilm-l6-v2"}

    def test_defaults_and_bounds(self) -> None:
        spec = parse_spec({"template": "valuation", "base": self.BASE, "hyperparameters": {}})
        assert spec.valuation is not None and spec.valuation.k == 5 and spec.valuation.min_group == 20
        with pytest.raises(SpecError) as error:
            parse_spec(
                {"template": "valuation", "base": self.BASE, "hyperparameters": {}, "valuation": {"k": 0}}
            )
        assert error.value.field == "valuation.k"

    def test_training_fields_and_other_templates_are_refused(self) -> None:
        with pytest.raises(SpecError) as error:
            parse_spec({"template": "valuation", "base": self.BASE, "hyperparameters": {"epochs": 2}})
        assert error.value.field == "hyperparameters.epochs"
        hp = {
            "learning_rate": 1e-3,
            "epochs": 1,
            "batch_size": 4,
            "max_seq_len": 16,
            "seed": 0,
            "precision": "fp32",
        }
        with pytest.raises(SpecError) as error:
            parse_spec(
                {
                    "template": "causal_lm",
                    "base": {"kind": "builtin", "name": "gpt2-tiny"},
                    "hyperparameters": hp,
                    "valuation": {},
                }
            )
        assert error.value.field == "valuation"
