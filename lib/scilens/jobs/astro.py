"""``scilens astro``: co-add the FITS images of a survey field on a sky map of patches and detect sources.

The abridged LSST pipeline of the dissertation (Ch. 2 §2.2.2): pre-process
each image (background subtraction, bad pixels), warp it onto every patch of
the tract it overlaps, co-add each patch across visits with iterative
3-sigma clipping, and detect sources on each co-add. Outputs:

* ``<output>/coadds/<tract>_<patch>.fits`` -- IMAGE, MASK, VARIANCE, COUNT, with the patch WCS;
* ``<output>/catalog.parquet`` and ``catalog.fits`` -- one row per source, each in one patch only;
* ``<output>/report/`` -- a co-add with its detections, completeness plot (with ``report.truth``), index.html;
* ``<output>/_rejected/`` and ``<output>/manifest.json``.
"""

from __future__ import annotations

import pandas as pd

from scilens.astro.config import AstroConfig
from scilens.core.job import Job, JobContext

__all__ = ["JOB", "AstroConfig", "AstroJob"]


class AstroJob(Job[AstroConfig]):
    """``scilens astro``: FITS visits -> co-adds per patch of a sky map and a source catalog."""

    name = "astro"
    summary = "Co-add FITS images (flux, variance, mask) on a sky map of patches and detect sources."
    config_class = AstroConfig

    def run(self, ctx: JobContext[AstroConfig]) -> int:
        """Scan, co-add and detect the inputs of ``ctx``, then write the run outputs and report."""
        from scilens.astro import pipeline, stages
        from scilens.astro.report import write_report
        from scilens.astro.validate import implausible_images
        from scilens.core.quarantine import rejected_frame, rejection
        from scilens.core.session import arrow_batch_bytes

        config = ctx.config
        spark = ctx.spark
        with ctx.step("list inputs") as step:
            paths = pipeline.input_paths(ctx.inputs, ctx.list_inputs)
            step.counts["files"] = len(paths)
        with ctx.step("scan headers") as step:
            infos, rejected = stages.scan(spark, paths, config)
            step.counts.update(images=len(infos), rejected=len(rejected))
        records = rejected.to_dict("records")
        with ctx.step("check footprints") as step:
            # Before the sky map: one image with a wrong scale or CRVAL would stretch the automatic tract.
            sky = config.skymap
            implausible = implausible_images(infos, sky.scale_tolerance,
                                             sky.centre_tolerance if sky.patches is None else None,
                                             sky.max_radius_deg if sky.center_ra is None else None)
            records += [rejection(i.path, "check footprints", reason) for i, reason in implausible]
            dropped = {i.path for i, _ in implausible}
            infos = [i for i in infos if i.path not in dropped]
            step.counts.update(images=len(infos), rejected=len(implausible))
        if not infos:
            ctx.reject(rejected_frame(spark, records))
            return 0
        with ctx.step("sky map") as step:
            skymap, inside, outside = pipeline.build_skymap(infos, config.skymap)
            records += [rejection(i.path, "skymap", pipeline.outside_message(i, skymap)) for i in outside]
            step.counts.update(patches_x=skymap.patches_x, patches_y=skymap.patches_y, inside=len(inside),
                               outside=len(outside),
                               pixel_scale_mas=round(1000 * skymap.pixel_scale_arcsec))
        touched = sorted({p for i in inside for p in skymap.overlaps(i.footprint_ra, i.footprint_dec)})
        with ctx.step("pre-process, warp, co-add, detect") as step, \
                arrow_batch_bytes(spark, _largest_row_bytes(inside, skymap)):
            timers = stages.StepTimers(spark)
            catalog = pd.DataFrame(columns=pipeline.CATALOG_COLUMNS)
            if inside:
                catalog, failed = stages.coadd_catalog(spark, [i.path for i in inside], skymap, config, ctx.output,
                                                       timers, touched)
                records += failed.to_dict("records")
            coadded = len(inside) - sum(1 for r in records if r["step"] == "preprocess+warp")
            step.counts.update(images=coadded, patches=len(list((ctx.output / "coadds").glob("*.fits"))),
                               sources=len(catalog))
            step.counts.update({f"{k}_task_ms": int(1000 * v) for k, v in timers.as_dict().items()})
        if config.detect.visit_sources and len(catalog):
            with ctx.step("single-visit sources") as step:
                warped = {r["path"] for r in records if r["step"] == "preprocess+warp"}  # rejected once already
                found, failed = stages.visit_sources(spark, [i.path for i in inside if i.path not in warped], catalog,
                                                     config, ctx.output)
                records += failed.to_dict("records")
                step.counts.update(sources=found, rejected=len(failed))
        if records:
            ctx.reject(rejected_frame(spark, records))
        with ctx.step("write catalog") as step:
            # Each image's measured PSF (images.parquet) and each patch's effective PSF (catalog.fits header).
            written = [p.stem.split("_", 1)[1] for p in (ctx.output / "coadds").glob("*.fits")]
            catalog, images = pipeline.write_run_outputs(catalog, ctx.output, skymap, written)
            step.counts.update(sources=len(catalog), psf_measured_images=int(images["psf_measured"].sum()),
                               psf_fallback_images=int((~images["psf_measured"].astype(bool)).sum()),
                               psf_median_fwhm_mas=round(1000 * float(images["psf_fwhm_arcsec"].median()))
                               if len(images) else 0)
        if config.report.enabled and coadded:
            with ctx.step("report") as step:
                summary = {"images co-added": coadded, "images rejected": len(records),
                           "tract": f"{skymap.config.tract}: {skymap.patches_x}x{skymap.patches_y} patches of "
                                    f"{skymap.config.patch_inner_px}+2x{skymap.config.patch_border_px} px at "
                                    f"{skymap.pixel_scale_arcsec}\"/px, centre RA {skymap.center_ra:.5f} "
                                    f"Dec {skymap.center_dec:.5f}",
                           "sources": len(catalog),
                           "steps": ", ".join(f"{s.name} {s.seconds:.1f} s" for s in ctx.manifest.steps)}
                scores = write_report(ctx.output, skymap, catalog, config, summary)
                step.counts.update({k: v for k, v in scores.items() if isinstance(v, int)})
        return coadded


def _largest_row_bytes(images: list, skymap) -> int:
    """Bytes of the biggest row the co-add pass carries.

    That is a warp (an image resampled onto the patch grid, 3 planes of 4
    bytes) or a patch's co-add planes (4 of them).
    """
    import numpy as np
    from astropy.wcs.utils import proj_plane_pixel_scales

    from scilens.io.fits import wcs_from_text

    warp = 0.0
    for info in images:
        scale = float(np.mean(proj_plane_pixel_scales(wcs_from_text(info.wcs_header)))) * 3600.0
        warp = max(warp, info.shape[0] * info.shape[1] * 12 * max(1.0, scale / skymap.pixel_scale_arcsec) ** 2)
    return int(max(warp, skymap.patch_shape[0] * skymap.patch_shape[1] * 14))


JOB = AstroJob
