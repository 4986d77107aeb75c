"""All I/O lives here: the Kubernetes API, the OCI registry, AWS, builders.

Errors are classified once, at this boundary, as transient, spec or
conflict; nothing above this layer sees a raw HTTP or botocore error.
"""
