"""Face detector plugins: ``base`` (the interface and the face record), one module per
detector (``mtcnn``, the default; ``dlib_68``, optional) and ``registry`` (by name)."""
