"""n2v_jax in napari: dock widgets that train, denoise and export, and a sample image
(`napari.yaml`, found by napari through the `napari.manifest` entry point). An optional
part: it needs napari and a Qt binding (`pip install -e ".[napari]"`); the library never
imports it."""
