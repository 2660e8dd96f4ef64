"""The file explorer and cp: listing, reading and writing below a container's root, tar streams of a
tree."""
