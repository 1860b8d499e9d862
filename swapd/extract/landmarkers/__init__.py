"""Landmark plugins: 68 points for a face a detector found (``face_mesh``, the default;
``dlib``, optional; ``detector``: the detector's own points), and the face mesh model's setup."""
