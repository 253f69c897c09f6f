"""Model architectures, one self-contained file each."""
