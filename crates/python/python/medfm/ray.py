"""medfm on Ray Data: ``map_items`` runs ``medfm.batch.Worker`` as an actor pool (each
actor loads the model once) over a dataset of items. ``python -m medfm.batch`` is the
command; ``medfm.batch.run`` the function.

Each actor reserves ``cpus_per_worker`` CPUs: leave the cluster at least one CPU beyond
``workers * cpus_per_worker`` for Ray Data's own tasks, or the job waits for a CPU forever.
Ray restarts a killed actor and retries its item; the outputs are atomic and keyed, so a
retried item is written once.
"""

from __future__ import annotations

from typing import Iterator


def map_items(
    items: list[str],
    worker_kwargs: dict,
    address: str | None,
    workers: int,
    cpus_per_worker: float,
) -> Iterator[dict]:
    """Rows of ``Worker.process`` (``path``, ``status``, ``kind``, ``reason``,
    ``output``) as the pool gives them."""
    import ray

    from medfm.batch import Worker

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    # Blocks of a few items each: enough for every actor to have work queued, few enough
    # for Ray's scheduler at millions of items (a retried block skips its done items).
    blocks = max(1, min(len(items), 64 * workers))
    dataset = ray.data.from_items([{"path": p} for p in items], override_num_blocks=blocks)
    mapped = dataset.map_batches(
        Worker,
        fn_constructor_kwargs=worker_kwargs,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
        batch_format="numpy",
    )
    yield from mapped.iter_rows()
