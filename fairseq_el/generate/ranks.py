"""Which process am I: world size and rank from torchrun or Slurm, and the sharding rule.

Examples go to ranks by ``id % world_size``: the rule depends on neither batch size nor sorting,
so any world size covers every id exactly once, and a resumed run may use another world size.
Ranks coordinate (rendezvous, barrier, small objects) over gloo, CPU tensors, on every device:
torchrun's ``env://`` rendezvous, or for ``srun`` a file store on the shared filesystem beside
the output.
"""

import datetime
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

import torch.distributed as dist

# A rank that finishes early waits at the final barrier for the slowest shard.
TIMEOUT = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    launcher: str = "single"

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owns(self, example_id: int) -> bool:
        return example_id % self.world == self.rank


def from_env(env: Optional[dict] = None) -> Ranks:
    """torchrun (``WORLD_SIZE``/``RANK``), else ``srun`` (``SLURM_STEP_NUM_TASKS``/
    ``SLURM_PROCID``), else one process."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:
        world = int(env["WORLD_SIZE"])
        return Ranks(
            int(env["RANK"]),
            world,
            int(env.get("LOCAL_RANK", 0)),
            int(env.get("LOCAL_WORLD_SIZE", world)),
            "torchrun",
        )
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        world = int(env["SLURM_STEP_NUM_TASKS"])
        local_world = int(env.get("SLURM_STEP_TASKS_PER_NODE", str(world)).split("(")[0])
        return Ranks(
            int(env["SLURM_PROCID"]), world, int(env.get("SLURM_LOCALID", 0)), local_world, "slurm"
        )
    return Ranks()


def rendezvous_file(output: Path, env: Optional[dict] = None) -> Path:
    """The file store ``srun`` tasks meet at: beside the output, one per job step."""
    env = os.environ if env is None else env
    step = f"{env.get('SLURM_JOB_ID', 'job')}.{env.get('SLURM_STEP_ID', 'step')}"
    return output.parent / f".{output.name}.rendezvous-{step}"


def init(ranks: Ranks, output: Path) -> None:
    """Join the process group (gloo) when there is more than one rank."""
    if not ranks.distributed:
        return
    if ranks.launcher == "torchrun":
        dist.init_process_group("gloo", timeout=TIMEOUT)
    else:
        store = rendezvous_file(output)
        dist.init_process_group(
            "gloo",
            init_method=f"file://{store}",
            rank=ranks.rank,
            world_size=ranks.world,
            timeout=TIMEOUT,
        )


def finish(ranks: Ranks, output: Path) -> None:
    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()
    if ranks.launcher == "slurm" and ranks.main:
        rendezvous_file(output).unlink(missing_ok=True)


def broadcast(ranks: Ranks, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ranks.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(ranks: Ranks, obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ranks.distributed:
        return [obj]
    out: List[Any] = [None] * ranks.world
    dist.all_gather_object(out, obj)
    return out


def wait_all(ranks: Ranks, while_waiting: Callable[[], None], poll_seconds: float = 0.5) -> None:
    """Barrier; ``while_waiting`` runs every ``poll_seconds`` until the last rank arrives."""
    if not ranks.distributed:
        return
    work = dist.barrier(async_op=True)
    while not work.is_completed():
        while_waiting()
        time.sleep(poll_seconds)
    work.wait()
