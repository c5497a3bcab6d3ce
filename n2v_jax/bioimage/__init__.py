"""bioimage.io model packages of trained workdirs (`export_bioimageio`)."""

from n2v_jax.bioimage.package import export_bioimageio

__all__ = ["export_bioimageio"]
