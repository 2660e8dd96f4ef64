"""Layer tars into overlay form: tarstream (decompress, hash and budget on a thread of its
own), tarentry (names, metadata, xattr rules, whiteouts), tree (where an entry's parent is,
by descriptor), unpack (the walk), writepool (small files on a writer thread), forked (a
child process per layer parses and writes while the engine inflates and hashes).
Imports hostfs and below.
"""
