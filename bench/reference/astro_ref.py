"""Single-process reference of the astronomy pipeline: the same kernels as ``scilens astro``, in a plain loop.

    python -m bench.reference.astro_ref --input DIR --output DIR [--config conf/astro.yaml]

Reads every FITS image under the input, pre-processes and warps each onto
its patches, co-adds every patch and detects its sources, and writes the
same outputs as the Spark job (``coadds/``, ``catalog.parquet``,
``catalog.fits``). Unusable images are skipped with a message. Tests and
``bench/astro.py`` compare the job against it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd

from scilens.astro import pipeline
from scilens.astro.config import AstroConfig
from scilens.core.config import load_config
from scilens.io import fits as fits_io


def run(inputs: str | list[str], output: str | Path, config: AstroConfig | None = None) -> dict:
    """Run the pipeline on ``inputs``; returns per-step seconds and counts, plus the skipped files."""
    config = config or AstroConfig()
    output = Path(output)
    seconds: dict[str, float] = defaultdict(float)
    skipped: dict[str, str] = {}

    def tick(step: str, start: float) -> float:
        now = time.perf_counter()
        seconds[step] += now - start
        return now

    t = time.perf_counter()
    infos = []
    for path in pipeline.input_paths([inputs] if isinstance(inputs, str) else inputs):
        try:
            infos.append(pipeline.scan(path, config.fits))
        except ValueError as exc:
            skipped[path] = str(exc)
    skymap, inside, outside = pipeline.build_skymap(infos, config.skymap)
    skipped.update({i.path: pipeline.outside_message(i, skymap) for i in outside})
    t = tick("scan", t)

    warps = defaultdict(list)
    for info in inside:
        try:
            image = fits_io.read_image(info.path, config.fits)
            t = tick("read", t)
            calibrated = pipeline.prepare(image, config)
            t = tick("preprocess", t)
        except ValueError as exc:
            skipped[info.path] = str(exc)
            continue
        for warp in pipeline.warp_image(calibrated, skymap, config):
            warps[warp.patch].append(warp)
        t = tick("warp", t)

    catalogs = []
    for patch in sorted(warps):
        coadd = pipeline.coadd_patch(warps.pop(patch), skymap, config)
        t = tick("coadd", t)
        pipeline.write_coadd(output, coadd, patch, skymap)
        t = tick("write", t)
        catalogs.append(pipeline.detect_patch(coadd, patch, skymap, config))
        t = tick("detect", t)
    catalog, _ = pipeline.write_run_outputs(pd.concat(catalogs, ignore_index=True) if catalogs else
                                            pd.DataFrame(columns=pipeline.CATALOG_COLUMNS), output, skymap,
                                            [p for p in skymap.patch_names() if pipeline.coadd_path(output, skymap,
                                                                                                    p).exists()])
    tick("write", t)
    return {"seconds": dict(seconds), "images": len(inside) - len(set(skipped) & {i.path for i in inside}),
            "patches": len(catalogs), "sources": len(catalog), "skipped": skipped, "skymap": skymap}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reference.astro_ref", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args(argv)
    config = load_config(AstroConfig, args.config, args.set)
    result = run(args.input, args.output, config)
    for path, reason in result["skipped"].items():
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"{result['images']} images, {result['patches']} patches, {result['sources']} sources; "
          + ", ".join(f"{k} {v:.1f} s" for k, v in result["seconds"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
