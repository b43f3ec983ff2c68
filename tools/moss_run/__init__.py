"""Glue for the main job (tools/run.py): Hydra configs to a Lightning predict loop over a prompt set.

Scripts stay thin: ``tools/run.py`` only calls :func:`moss_run.app.run`. Models, dispatch, attention and
measurement live in the packages; this module wires them (datasets, the LightningModule, the writer, W&B).
"""
