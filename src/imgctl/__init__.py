"""imgctl: build, tag, push and verify Docker images from one declarative file."""

__version__ = "0.1.0"
