"""Real test components for imagepatch: a local OCI registry, moto in server mode,
locally made images and buildah builds, plus the pytest fixtures that start them.

Load the fixtures with ``pytest_plugins = ["tests.support.fixtures"]``.
"""
