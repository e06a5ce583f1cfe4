"""Run a conversion on Apache Beam: the same work units, spread over many hosts.

`omni-img data ... --beam="--runner=DataflowRunner --project=P --region=R ..."` sends
the units that are not complete yet through a Beam pipeline (Create -> Reshuffle ->
convert one unit), so any Beam runner (Dataflow, Flink, Spark, or the DirectRunner's
processes on one host) schedules them; omni_img schedules nothing itself. A worker
writes its unit's shard exactly as a local process does (omni_img/data/conversion.py),
so the output is identical and a failed or stopped pipeline resumes the same way:
run it again and only the missing units are converted. Workers write with POSIX
paths, so the data dir must be storage every worker mounts (NFS, Lustre, a GCS FUSE
mount), and every worker needs omni-img installed (`pip install "omni-img[beam]"`).
"""

from __future__ import annotations

import pathlib
import shlex

from omni_img.data import conversion, converted
from omni_img.errors import UserError


class _ConvertUnit:
    """A picklable Beam step: convert one unit of the job, return its kept count."""

    def __init__(self, job: conversion.Job):
        self.job = job

    def __call__(self, unit_index: int) -> int:
        return conversion.convert_unit(self.job, unit_index)["count"]


def run(job: conversion.Job, beam_args: str):
    """Convert the pending units on Beam with `beam_args` (pipeline options, as on a
    command line); returns (index, reused) as conversion.run does."""
    try:
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise UserError('--beam needs Apache Beam: pip install "omni-img[beam]"') from None
    converted.start_dataset(pathlib.Path(job.directory), job.info)
    todo = conversion.pending_units(job)
    reused = len(job.units) - len(todo)
    if todo:
        options = PipelineOptions(shlex.split(beam_args))
        with beam.Pipeline(options=options) as pipeline:
            _ = (
                pipeline
                | "units" >> beam.Create(todo)
                | "spread" >> beam.Reshuffle()  # one unit per bundle, on any worker
                | "convert" >> beam.Map(_ConvertUnit(job))
            )
    missing = conversion.pending_units(job)
    if missing:
        raise UserError(f"the Beam pipeline ended with {len(missing)} units not converted")
    index = converted.write_split_index(pathlib.Path(job.directory), job.split, len(job.units))
    return index, reused
