"""Training a zoo on a Ray cluster: one task per model, the driver alone writes the folders.

Each model is one task asking for the grid's ``resources`` (``num_cpus``, ``num_gpus``; Ray sets
``CUDA_VISIBLE_DEVICES`` for it, so ``device: auto`` lands on the GPU it was given). The task trains
and evaluates the model in its worker process and returns the weights (safetensors bytes) and the card,
whose ``provenance`` names the worker's host and pid; the driver writes the folder atomically as each
task finishes. No shared file system is needed: workers read only the dataset, which each node must
hold (or generate, as MNIST-1D is) where the config says; the driver loads it once too, to check it
before any task starts. A model whose training raises is recorded as
failed and the grid goes on; a task whose worker dies is retried ``max_retries`` times, then recorded
as failed. Killing the driver loses only the models in flight; the next run trains what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Content = tuple["bytes | None", dict[str, Any]]
# train(job, cfg, device) -> content, run in a worker (sharpness.zoo.grid.train_model).
Train = Callable[[Any, dict[str, Any], "str | None"], Content]
Finished = Callable[[Any, "Content | None", "str | None"], None]


def _train_task(train: Train, job: Any, cfg: dict[str, Any], device: str | None) -> Content | str:
    """Run in a worker: the model's content, or the text of the error its training raised."""
    try:
        return train(job, cfg, device)
    except Exception as e:  # the model's own failure, reported to the driver as a value
        return f"{type(e).__name__}: {e}"


def train_on_ray(train: Train, todo: list[Any], cfg: dict[str, Any], device: str | None,
                 resources: dict[str, float], address: str | None, finished: Finished, progress: bool = True) -> None:
    """Train the jobs ``todo`` as Ray tasks; ``finished(job, content, error)`` is called here as each ends."""
    from tqdm.auto import tqdm

    from sharpness.ray_tasks import finished as as_finished
    from sharpness.ray_tasks import session

    with session(address) as ray:
        task = ray.remote(_train_task).options(
            name="train_model", num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"],
            max_retries=int(resources["max_retries"]))
        shared = ray.put(cfg)  # one copy of the config in the object store for every task
        pending = {task.remote(train, job, shared, device): job for job in todo}
        with tqdm(total=len(todo), desc=f"zoo {cfg.get('name', '')} (ray)", disable=not progress) as bar:
            for job, out, died in as_finished(pending):
                if died is not None:
                    first = str(died).splitlines()[0] if str(died) else ""
                    finished(job, None, f"{type(died).__name__}: {first}")
                elif isinstance(out, str):
                    finished(job, None, out)
                else:
                    finished(job, out, None)
                bar.update(1)
