import numpy as np
import pytest

from ftrag import plots, retrieval_scale as scale
from ftrag.errors import CourseError

BASES = np.random.default_rng(1).standard_normal((20, 16)).astype(np.float32)


def test_synthetic_vectors_are_seeded_unit_vectors_near_the_bases():
    a = scale.synthetic_vectors(BASES, 500, seed=3, block=128)
    assert a.shape == (500, 16) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.array_equal(a, scale.synthetic_vectors(BASES, 500, seed=3, block=128))
    assert not np.array_equal(a, scale.synthetic_vectors(BASES, 500, seed=4, block=128))
    # each is a mix of three bases plus small noise: its best base is far closer than a random direction
    best = (a @ scale.unit_rows(BASES).T).max(axis=1)
    assert best.mean() > 0.5


def test_recall_at_k_by_hand():
    assert scale.recall_at_k([[1, 2, 3, 4]], [[4, 3, 9, 8]], k=4) == 0.5
    assert scale.recall_at_k([[1, 2], [5, 6]], [[1, 2], [6, 7]], k=2) == 0.75
    with pytest.raises(CourseError, match="same, non-zero number"):
        scale.recall_at_k([[1]], [], k=1)


def test_ivf_probing_every_cell_is_exact_and_fewer_cells_is_not_better():
    vectors = scale.synthetic_vectors(BASES, 2000, seed=0)
    queries = scale.synthetic_vectors(BASES, 30, seed=9)
    truth = scale.exact_index(vectors).search(queries, 10)[1]
    ivf = scale.ivf_index(vectors, nlist=16)
    ivf.nprobe = 16
    assert scale.recall_at_k(truth, ivf.search(queries, 10)[1]) == 1.0
    ivf.nprobe = 1
    assert scale.recall_at_k(truth, ivf.search(queries, 10)[1]) < 1.0


def test_measure_rows_and_the_chosen_setting():
    vectors = scale.synthetic_vectors(BASES, 3000, seed=0)
    rows = scale.measure(vectors, scale.synthetic_vectors(BASES, 20, seed=5), nprobes=(1, 54))
    assert [r["nprobe"] for r in rows] == [None, 1, 54] and rows[0]["recall_at_10"] == 1.0
    assert all(r["n"] == 3000 and r["p95_ms"] >= r["p50_ms"] > 0 for r in rows)
    assert rows[2]["recall_at_10"] == 1.0          # 54 = every cell of sqrt(3000)
    assert scale.chosen_ann(rows, 3000, target=1.0)["nprobe"] == (1 if rows[1]["recall_at_10"] == 1.0 else 54)
    assert scale.chosen_ann(rows, 999) is None


def test_missing_results_name_the_make_target(tmp_path):
    with pytest.raises(CourseError, match="make bench-retrieval"):
        scale.load(tmp_path / "nothing.json")


def test_plot_reads_saved_results(tmp_path):
    rows = [{"n": n, "index": "x", "nprobe": p, "recall_at_10": r, "build_s": 0.1, "memory_mb": n / 1000,
             "p50_ms": n / 1e4 * (0.1 if p else 1), "p95_ms": n / 1e4 * (0.2 if p else 1.5)}
            for n in (10_000, 100_000) for p, r in ((None, 1.0), (4, 0.97))]
    path = scale.save({"rows": rows, "recall_target": 0.95, "dimension": 384, "machine": "test", "date": "today"},
                      tmp_path / "r.json")
    fig = plots.retrieval_scale(scale.load(path))
    left = fig.axes[0]
    assert [line.get_ydata().tolist() for line in left.lines] == [[1.5, 15.0], [0.2, 2.0]]
    head = scale.headline({**scale.load(path), "cores": 2})
    assert head["scale_n"] == 100_000 and head["scale_ann_nprobe"] == 4
    assert head["scale_speedup"] == pytest.approx(15.0 / 2.0) and head["scale_machine"] == "2-core test"
