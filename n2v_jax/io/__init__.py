"""Files on disk, without JAX: TIFF and OME-Zarr images, axes, channel fields, outputs
written atomically, locks."""
