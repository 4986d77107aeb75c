"""The local test control plane: Go module pins, the build script and the harness."""
