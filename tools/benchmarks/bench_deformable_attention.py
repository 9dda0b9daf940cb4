"""Time and peak memory of 3-D multi-scale deformable attention: the fast path against the reference.

Three shapes: ``realistic`` is the encoder of Deformable DETR on a 128³ patch (levels 32³, 16³, 8³, 4³
at strides 4-32, ``Q = ΣXYZ = 37,440`` queries, 8 heads, 4 points, hidden 128, batch 1); ``small`` the
same from a 32³ patch at batch 2; ``decoder`` 300 queries over the realistic levels. Queries sit at voxel
centres of their level and sample a few voxels around them, as after the offset initialisation.
``--queries`` keeps a random subset of the realistic queries (the values keep their full size)::

    python -m tools.benchmarks.bench_deformable_attention [--queries 8192] [--repeats 1] [--threads 1] [--device cpu]

Each row runs in fresh subprocesses that first warm up on a tiny input. Wall and CPU time
(``process_time``, all threads of the subprocess) are each the least of ``repeats`` runs, the least
disturbed by other jobs; on a shared machine CPU time is the steadier of the two. Peak memory on CPU is
measured in a second subprocess: its peak resident set (``getrusage`` ``ru_maxrss``) during one run above
its resident set just before it, with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at 64 KiB so that freed
tensors leave the resident set at once (which slows allocation, hence the separate subprocess for the
times); on CUDA it is ``torch.cuda.max_memory_allocated`` above the allocation before. Prints a markdown
table.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time

import fire
import torch

#: name: (cubic level sizes, batch, queries or None for one per voxel of every level)
SHAPES = {"small": ([8, 4, 2, 1], 2, None), "decoder": ([32, 16, 8, 4], 1, 300), "realistic": ([32, 16, 8, 4], 1, None)}
HEADS, POINTS, HIDDEN = 8, 4, 128


def make_inputs(levels: list[int], batch: int, queries: int | None, device: str, seed: int = 0):
    """Value, spatial shapes, level starts, sampling locations and attention weights for cubic levels."""
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor([[size] * 3 for size in levels])
    level_start_index = torch.cat([torch.zeros(1, dtype=torch.long), spatial_shapes.prod(1).cumsum(0)[:-1]])
    centres = []
    for size in levels:  # every voxel of every level is a query, at its normalised centre
        axis = (torch.arange(size) + 0.5) / size
        centres.append(torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3))
    centres = torch.cat(centres)
    if queries is not None and queries < len(centres):
        centres = centres[torch.randperm(len(centres), generator=generator)[:queries]]
    num_values, num_queries, num_levels = int(spatial_shapes.prod(1).sum()), len(centres), len(levels)
    value = torch.randn(batch, num_values, HEADS, HIDDEN // HEADS, generator=generator)
    offsets = torch.randn(batch, num_queries, HEADS, num_levels, POINTS, 3, generator=generator).mul_(2)
    offsets /= spatial_shapes.view(1, 1, 1, num_levels, 1, 3)
    locations = offsets.add_(centres.view(1, num_queries, 1, 1, 1, 3))
    weights = torch.randn(batch, num_queries, HEADS, num_levels * POINTS, generator=generator).softmax(-1)
    weights = weights.view(batch, num_queries, HEADS, num_levels, POINTS)
    return [tensor.to(device) for tensor in (value, spatial_shapes, level_start_index, locations, weights)]


def _resident_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


def _measure(shape: str, implementation: str, backward: bool, queries: int | None, repeats: int, threads: int,
             device: str, results) -> None:
    from shared.ops.deformable_attention import multi_scale_deformable_attention

    torch.set_num_threads(threads)

    def run(value, spatial_shapes, level_start_index, locations, weights):
        output = multi_scale_deformable_attention(value, spatial_shapes, level_start_index, locations, weights,
                                                  implementation=implementation)
        if backward:
            output.backward(torch.ones_like(output))
        if device == "cuda":
            torch.cuda.synchronize()

    levels, batch, shape_queries = SHAPES[shape]
    inputs = make_inputs(levels, batch, shape_queries or queries, device)
    tiny = make_inputs([2, 1], 1, None, device)  # loads libraries and kernels without touching the peak
    for tensor in (inputs[0], inputs[3], inputs[4], tiny[0], tiny[3], tiny[4]):
        tensor.requires_grad_(backward)
    run(*tiny)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _resident_kib() * 1024
    times, cpu_times = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run(*inputs)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
        if device == "cuda":
            peak = torch.cuda.max_memory_allocated() - before
        elif len(times) == 1:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        inputs[0].grad = inputs[3].grad = inputs[4].grad = None
    results.put((min(times), min(cpu_times), peak, inputs[3].shape[1]))


def _in_subprocess(arguments: tuple, fixed_mmap_threshold: bool) -> tuple[float, float, int, int]:
    if fixed_mmap_threshold:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # read by the child's glibc at start
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_measure, args=(*arguments, results))
    try:
        process.start()
    finally:
        os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
    outcome = results.get()
    process.join()
    return outcome


def measure(shape: str, implementation: str, backward: bool, queries: int | None = None, repeats: int = 2,
            threads: int = 1, device: str = "cpu") -> tuple[float, float, int, int]:
    """``(wall seconds, CPU seconds, peak bytes, queries)`` of one configuration, in fresh subprocesses.

    On CPU the times come from a subprocess with glibc's default allocator settings and the peak from a
    second one with a fixed mmap threshold (which costs page faults on every large allocation).
    """
    arguments = (shape, implementation, backward, queries, repeats, threads, device)
    seconds, cpu_seconds, peak, count = _in_subprocess(arguments, fixed_mmap_threshold=False)
    if device == "cpu":
        peak = _in_subprocess((*arguments[:4], 1, *arguments[5:]), fixed_mmap_threshold=True)[2]
    return seconds, cpu_seconds, peak, count


def benchmark(queries: int | None = None, repeats: int = 1, threads: int = 1, device: str | None = None,
              shapes: tuple[str, ...] = ("small", "decoder", "realistic")) -> None:
    """Print a table: per shape, pass and implementation the time and peak memory."""
    devices = [device] if device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"threads {threads}, repeats {repeats} (fastest shown), heads {HEADS}, points {POINTS}, hidden {HIDDEN}")
    print("| device | shape | Q | pass | implementation | wall (s) | CPU (s) | peak memory (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for device_name in devices:
        for shape in shapes:
            subset = queries if shape == "realistic" else None  # the other shapes fix their queries
            for backward in (False, True):
                for implementation in ("reference", "fast"):
                    seconds, cpu_seconds, peak, count = measure(shape, implementation, backward, subset, repeats,
                                                                threads, device_name)
                    pass_name = "forward+backward" if backward else "forward"
                    print(f"| {device_name} | {shape} | {count} | {pass_name} | {implementation} | {seconds:.3f} "
                          f"| {cpu_seconds:.3f} | {peak / 2**20:.0f} |", flush=True)


if __name__ == "__main__":
    fire.Fire(benchmark)
