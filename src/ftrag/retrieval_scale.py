"""Retrieval at scale: exact search vs an approximate (ANN) index on synthetic help centres of
10 thousand to a million chunks, measured by ``benchmarks/retrieval_scale.py`` (``make bench-retrieval``).

The synthetic chunks are built from the real ones: each is a random mix of three of the knowledge
base's chunk vectors plus a little noise, normalised, so the collection keeps the shape of real
help-centre embeddings (many near-duplicates around a few hundred topics). The queries are the real
knowledge questions' embeddings. Exact search is faiss ``IndexFlatIP`` (every vector is compared,
as llama-index's simple store and embedded Qdrant do); the ANN is faiss ``IndexIVFFlat``, which
clusters the vectors into ``nlist`` cells and compares the query only with the ``nprobe`` nearest
cells. Recall@10 is the share of the exact top 10 that the ANN also returns.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .errors import CourseError
from .paths import REPO_ROOT

SIZES = (10_000, 100_000, 1_000_000)
NPROBES = (1, 4, 16, 64)
RECALL_TARGET = 0.95
RESULTS_FILE = REPO_ROOT / "results" / "cpu" / "retrieval_scale.json"


def unit_rows(x):
    import numpy as np

    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise CourseError("A vector of length zero cannot be normalised; drop it before indexing.")
    return (x / norms).astype(np.float32)


def synthetic_vectors(bases, n: int, *, seed: int = 0, mix: int = 3, noise: float = 0.05,
                      block: int = 100_000):
    """``n`` unit vectors, each a random convex mix of ``mix`` rows of ``bases`` plus Gaussian noise
    of standard deviation ``noise`` per dimension, built ``block`` rows at a time (seeded)."""
    import numpy as np

    bases = unit_rows(np.asarray(bases, dtype=np.float32))
    rng = np.random.default_rng(seed)
    out = np.empty((n, bases.shape[1]), dtype=np.float32)
    for start in range(0, n, block):
        m = min(block, n - start)
        picks = rng.integers(0, len(bases), (m, mix))
        weights = rng.dirichlet(np.ones(mix), m).astype(np.float32)
        x = np.einsum("mk,mkd->md", weights, bases[picks])
        x += noise * rng.standard_normal(x.shape, dtype=np.float32)
        out[start:start + m] = unit_rows(x)
    return out


def exact_index(vectors):
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def ivf_index(vectors, *, nlist: int | None = None, seed: int = 0):
    """faiss IVF with inner product (cosine on unit vectors); ``nlist`` defaults to sqrt(n) cells,
    trained by k-means on at most 40 vectors per cell."""
    import faiss
    import numpy as np

    n, dim = vectors.shape
    nlist = nlist or max(1, int(np.sqrt(n)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(seed).choice(n, min(n, 40 * nlist), replace=False)
    index.cp.seed = seed
    index.train(vectors[np.sort(sample)])
    index.add(vectors)
    return index


def recall_at_k(truth, found, k: int = 10) -> float:
    """Mean share of each row's true top-k ids that the approximate top-k also holds."""
    if len(truth) != len(found) or not len(truth):
        raise CourseError("recall_at_k needs the same, non-zero number of exact and approximate result rows.")
    return float(sum(len(set(t[:k]) & set(f[:k])) / k for t, f in zip(truth, found)) / len(truth))


def single_query_seconds(index, queries, k: int = 10) -> list[float]:
    """Seconds per query, one query at a time on one thread (how a server answers each user while
    its other cores serve other requests), after one warm-up."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.search(queries[:1], k)
        seconds = []
        for q in queries:
            start = time.perf_counter()
            index.search(q[None, :], k)
            seconds.append(time.perf_counter() - start)
    finally:
        faiss.omp_set_num_threads(threads)
    return seconds


def latency_summary(seconds) -> dict[str, float]:
    import numpy as np

    return {"p50_ms": float(np.percentile(seconds, 50) * 1000), "p95_ms": float(np.percentile(seconds, 95) * 1000)}


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def measure(vectors, queries, *, k: int = 10, nprobes=NPROBES, seed: int = 0) -> list[dict]:
    """One row for exact search and one per ``nprobe`` of the IVF index: latency p50/p95, memory the
    index added to the process (MB, resident), build seconds and recall@k against exact search."""
    n = len(vectors)
    rows = []
    before, start = _rss_mb(), time.perf_counter()
    exact = exact_index(vectors)
    exact_build, exact_mb = time.perf_counter() - start, _rss_mb() - before
    truth = exact.search(queries, k)[1]
    rows.append({"n": n, "index": "exact (IndexFlatIP)", "nprobe": None, "recall_at_10": 1.0, "build_s": exact_build,
                 "memory_mb": exact_mb, **latency_summary(single_query_seconds(exact, queries, k))})
    del exact
    before, start = _rss_mb(), time.perf_counter()
    ivf = ivf_index(vectors, seed=seed)
    ivf_build, ivf_mb = time.perf_counter() - start, _rss_mb() - before
    for nprobe in nprobes:
        ivf.nprobe = nprobe
        found = ivf.search(queries, k)[1]
        rows.append({"n": n, "index": f"IVF{ivf.nlist},Flat", "nprobe": nprobe,
                     "recall_at_10": recall_at_k(truth, found, k), "build_s": ivf_build, "memory_mb": ivf_mb,
                     **latency_summary(single_query_seconds(ivf, queries, k))})
    return rows


def chosen_ann(rows: list[dict], n: int, target: float = RECALL_TARGET) -> dict | None:
    """The fastest (smallest nprobe) ANN row at size ``n`` that reaches the recall target."""
    ok = [r for r in rows if r["n"] == n and r["nprobe"] is not None and r["recall_at_10"] >= target]
    return min(ok, key=lambda r: r["nprobe"]) if ok else None


def headline(results: dict) -> dict:
    """The figures a page quotes: at the largest size, exact search's p95 and memory next to the ANN
    setting chosen by :func:`chosen_ann` (or, if none reaches the target, the one with the best recall)."""
    rows = results["rows"]
    n = max(r["n"] for r in rows)
    exact = next(r for r in rows if r["n"] == n and r["nprobe"] is None)
    ann = chosen_ann(rows, n, results["recall_target"]) or max(
        (r for r in rows if r["n"] == n and r["nprobe"] is not None), key=lambda r: r["recall_at_10"])
    return {"scale_n": n, "scale_exact_p95_ms": exact["p95_ms"], "scale_exact_memory_mb": exact["memory_mb"],
            "scale_ann_nprobe": ann["nprobe"], "scale_ann_recall": ann["recall_at_10"],
            "scale_ann_p95_ms": ann["p95_ms"], "scale_ann_memory_mb": ann["memory_mb"],
            "scale_speedup": exact["p95_ms"] / ann["p95_ms"], "scale_date": results["date"],
            "scale_machine": f"{results['cores']}-core {results['machine']}"}


def save(results: dict, path: Path = RESULTS_FILE) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path


def load(path: Path = RESULTS_FILE) -> dict:
    path = Path(path)
    if not path.exists():
        raise CourseError(f"No retrieval benchmark results in {path}; run `make bench-retrieval` (about 5 minutes).")
    return json.loads(path.read_text())
