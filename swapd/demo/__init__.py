"""The demo's synthetic people, clip and workspace: swapd's own procedural faces, no photos.

``identity`` (seeded looks; ``DEMO_A``, ``DEMO_B``), ``head`` (3D pose and camera), ``colours``,
``canvas`` and ``painter`` (``render_face``: a face with exact landmarks), ``face_sets``
(faceswap-format aligned PNGs), ``clip`` (a talking, turning video with audio) and ``workspace``
(what ``swapd demo`` writes). Only the demo, the tests and the benchmarks import this package
(and the ``swapd demo`` command, lazily): nothing the service runs depends on it.
"""
