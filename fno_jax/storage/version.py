"""The installed version of fno-jax, recorded in checkpoints, datasets and bundles."""

import importlib.metadata

__all__ = ["package_version"]


def package_version() -> str:
    """Installed version of fno-jax, or "unknown" when running from an uninstalled tree."""
    try:
        return importlib.metadata.version("fno-jax")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
