"""The image store (blobs, layers, image records), pull, load, and the Images service."""
