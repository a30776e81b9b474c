"""Benchmark: exact search vs an approximate index (faiss IVF) at 10k, 100k and 1M chunks.

    python benchmarks/retrieval_scale.py [--sizes 10000 100000 1000000] [--out results/cpu/retrieval_scale.json]

Builds synthetic help centres from the real chunk vectors (``ftrag.retrieval_scale.synthetic_vectors``:
mixes of three knowledge-base chunks plus noise, seeded), asks the 147 knowledge questions one at a
time (on one thread), and prints, per size, latency p50/p95, the memory each index added and the ANN's recall@10
against exact search for several ``nprobe`` values. The JSON it writes is what chapters/costs.md
plots. It asserts nothing about time: the figures are for reading. About 5 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path


def main() -> None:
    from ftrag import retrieval_scale as scale

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(scale.SIZES), help="collection sizes")
    parser.add_argument("--out", type=Path, default=scale.RESULTS_FILE, help="where to write the JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import faiss
    import numpy as np
    import pandas as pd

    from ftrag import data, profiles, rag

    started = time.perf_counter()
    profile = profiles.get_profile()
    course = data.load_all()
    rag.configure(profile)
    index = rag.ensure_index(course.kb, rag.DEFAULT_CHUNKING)          # cached by lab 1
    bases = np.array(list(index.index.vector_store.data.embedding_dict.values()), dtype=np.float32)
    queries = scale.unit_rows(np.array([rag.query_embedding(q.question) for q in course.knowledge], np.float32))
    print(f"{len(bases)} knowledge-base chunk vectors ({bases.shape[1]}-d) as bases, {len(queries)} questions; "
          f"faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads on {profiles.cpu_name()}")

    rows = []
    for n in sorted(args.sizes):
        t0 = time.perf_counter()
        vectors = scale.synthetic_vectors(bases, n, seed=args.seed)
        rows += scale.measure(vectors, queries, seed=args.seed)
        del vectors
        print(f"  {n:>9,} chunks measured in {time.perf_counter() - t0:.0f} s", flush=True)

    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    largest = max(args.sizes)
    chosen = scale.chosen_ann(rows, largest)
    exact = next(r for r in rows if r["n"] == largest and r["nprobe"] is None)
    if chosen:
        print(f"\nAt {largest:,} chunks: IVF nprobe={chosen['nprobe']} reaches recall@10 {chosen['recall_at_10']:.3f} "
              f"with p95 {chosen['p95_ms']:.2f} ms, vs {exact['p95_ms']:.1f} ms for exact search")
    else:
        print(f"\nAt {largest:,} chunks no nprobe tried reaches recall@10 {scale.RECALL_TARGET}")
    results = {"date": dt.date.today().isoformat(), "machine": profiles.cpu_name(), "cores": os.cpu_count(),
               "faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(), "dimension": int(bases.shape[1]),
               "queries": len(queries), "seed": args.seed, "recall_target": scale.RECALL_TARGET,
               "seconds": time.perf_counter() - started, "rows": rows}
    print(f"saved to {scale.save(results, args.out)} (total {results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
