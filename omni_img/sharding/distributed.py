"""Joining a multi-process run: `jax.distributed` from flags, the environment, or not at all.

Where the process group comes from, first match wins:

1. explicit flags: `--coordinator HOST:PORT --num_processes N --process_id I`;
2. the same three as environment variables `OMNI_IMG_COORDINATOR`,
   `OMNI_IMG_NUM_PROCESSES`, `OMNI_IMG_PROCESS_ID` (what `launch/local_multiprocess.sh`
   and `launch/gke_jobset.yaml` set);
3. a cluster JAX detects by itself: a SLURM step with more than one task, or a
   multi-host Cloud TPU VM / GKE TPU slice (`TPU_WORKER_HOSTNAMES` lists several hosts,
   or `OMNI_IMG_DISTRIBUTED=auto` asks for detection explicitly);
4. otherwise a single process, and `jax.distributed` is never called.

Failure behaviour: every process sends heartbeats to the coordination service. When
one dies, the service notices within `heartbeat_timeout_s` and every other process
stops with an error naming the missing task, instead of waiting forever in a
collective. On CPU the collectives go through gloo, so N processes on one machine are
a real multi-host run (how the tests exercise it).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from omni_img.errors import UserError

ENV_COORDINATOR = "OMNI_IMG_COORDINATOR"
ENV_NUM_PROCESSES = "OMNI_IMG_NUM_PROCESSES"
ENV_PROCESS_ID = "OMNI_IMG_PROCESS_ID"
ENV_DETECT = "OMNI_IMG_DISTRIBUTED"  # "auto": let JAX detect the cluster
DEFAULT_HEARTBEAT_TIMEOUT_S = 30  # JAX's own default is 100 s
DEFAULT_INIT_TIMEOUT_S = 300


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """How this process joins the run. `source` says where the settings came from:
    "single", "flags", "environment", "slurm" or "tpu"; for the last two JAX reads the
    coordinator, count and id from the cluster itself (they stay None here)."""

    source: str = "single"
    coordinator: str | None = None
    num_processes: int | None = 1
    process_id: int | None = 0

    @property
    def is_distributed(self) -> bool:
        return self.source != "single"


def _int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{name} must be an integer, got {text!r}") from None


def _explicit(source, coordinator, num_processes, process_id) -> ProcessGroup:
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise UserError(
            f"a multi-process run needs coordinator, num_processes and process_id; "
            f"{', '.join(missing)} missing (from {source})"
        )
    if ":" not in coordinator:
        raise UserError(f"coordinator must be HOST:PORT, got {coordinator!r}")
    if num_processes < 1:
        raise UserError(f"num_processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise UserError(f"process_id {process_id} is not in [0, {num_processes})")
    if num_processes == 1:
        return ProcessGroup()
    return ProcessGroup(source, coordinator, num_processes, process_id)


def detect(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> ProcessGroup:
    """The process group of this run (see the module docstring for the order). Pure."""
    env = os.environ if environ is None else environ
    if any(value is not None for value in (coordinator, num_processes, process_id)):
        return _explicit("flags", coordinator, num_processes, process_id)
    if any(name in env for name in (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)):
        count, index = (
            _int(name, env[name]) if name in env else None
            for name in (ENV_NUM_PROCESSES, ENV_PROCESS_ID)
        )
        return _explicit("environment", env.get(ENV_COORDINATOR), count, index)
    slurm_tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")
    if "SLURM_JOB_ID" in env and slurm_tasks and _int("SLURM_NTASKS", slurm_tasks) > 1:
        return ProcessGroup("slurm", None, None, None)
    tpu_hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(tpu_hosts) > 1 or env.get(ENV_DETECT) == "auto":
        return ProcessGroup("tpu", None, None, None)
    return ProcessGroup()


def initialize(
    group: ProcessGroup,
    *,
    heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S,
    initialization_timeout_s: int = DEFAULT_INIT_TIMEOUT_S,
) -> None:
    """Join the run described by `group` (a no-op for a single process).

    Must run before anything touches a JAX backend.
    """
    if not group.is_distributed:
        return
    import jax

    # CPU processes exchange collectives through gloo; the setting only affects the
    # CPU client, so it is harmless on GPU and TPU hosts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=group.coordinator,
        num_processes=group.num_processes,
        process_id=group.process_id,
        initialization_timeout=initialization_timeout_s,
        heartbeat_timeout_seconds=heartbeat_timeout_s,
    )


def split_cpu(num_devices: int) -> None:
    """Ask XLA for `num_devices` CPU devices, for data parallelism over a CPU's cores.

    XLA's CPU backend keeps two cores busier with several devices than with one (the
    tokenizer's train step runs 1.4x faster on 8 than on 1 on a 2-core machine). It
    only affects the CPU platform, so it is harmless where an accelerator is used. Must
    run before JAX starts; a device count already in XLA_FLAGS wins.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if num_devices > 1 and "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={num_devices}"


def add_arguments(parser) -> None:
    """The multi-process flags of `omni-img train` (and any command that joins a run)."""
    parser.add_argument(
        "--cpu_devices",
        type=int,
        default=0,
        help="split a CPU host into this many XLA devices (data parallel over its cores)",
    )
    group = parser.add_argument_group("multi-process (default: single process)")
    group.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    group.add_argument("--num_processes", type=int, default=None)
    group.add_argument("--process_id", type=int, default=None)
    group.add_argument(
        "--heartbeat_timeout",
        type=int,
        default=DEFAULT_HEARTBEAT_TIMEOUT_S,
        help="seconds after which a silent process counts as dead and the run stops",
    )


def initialize_from_args(args) -> ProcessGroup:
    """split_cpu(), then detect() from parsed flags (and the environment), then initialize()."""
    split_cpu(args.cpu_devices)
    group = detect(args.coordinator, args.num_processes, args.process_id)
    initialize(group, heartbeat_timeout_s=args.heartbeat_timeout)
    return group
