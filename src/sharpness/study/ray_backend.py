"""Ray backend: one task per unit, spread over a cluster; the driver alone writes the database.

Each unit becomes one Ray task asking for ``resources.num_cpus`` CPUs and
``resources.num_gpus`` GPUs (Ray then sets ``CUDA_VISIBLE_DEVICES`` for it, so
``device: auto`` lands on the GPU it was given). A task catches the unit's own errors
and returns a ``failed`` row; a task whose worker process dies (out of memory, a
killed node) is retried up to ``resources.max_retries`` times by Ray, and recorded as
``failed`` after that. Rows are written by the driver as tasks finish, one
transaction each, so killing the driver loses only the tasks in flight.

The driver reads each model folder once, puts its weights and card in the object store and hands
that one copy to every task of the model: workers need no shared file system, only ``sharpness`` (and
the dataset the cards name, for the measurement's inputs). A factory model (``zoo: {csv: ...}``) is built
by the factory in the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sharpness.study.config import Resources
from sharpness.study.local import compute_unit, failed_row
from sharpness.study.units import Unit
from sharpness.zoo.checkpoint import read_folder


def execute_ray(
    units: list[Unit], write: Callable[[dict[str, Any]], None], resources: Resources, address: str | None = None
) -> None:
    """Compute ``units`` as Ray tasks and ``write`` each row as it arrives.

    Args:
        units: what to compute.
        write: stores one row (called in this process only).
        resources: per-task CPU/GPU request and retries for dead workers.
        address: a running cluster (``"auto"``, ``"ray://host:10001"``, ...); ``None`` uses
            the Ray instance already initialised in this process, or starts a local one.
    """
    from sharpness.ray_tasks import finished, session

    if not units:
        return
    with session(address) as ray:
        task = ray.remote(compute_unit).options(
            num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_retries=resources.max_retries
        )
        shipped: dict[str, Any] = {}  # model folder -> object ref of its content, put once
        for unit in units:
            if unit.ref.folder is not None and unit.ref.folder not in shipped:
                shipped[unit.ref.folder] = ray.put(read_folder(unit.ref.folder))
        pending = {task.remote(unit, shipped.get(unit.ref.folder or "")): unit for unit in units}
        for unit, row, died in finished(pending):
            write(row if died is None else failed_row(unit, died))
