"""The dashboard's pages, one module each: ``layout(...)`` builds it, ``register(app,
workspace)`` adds its callbacks."""
