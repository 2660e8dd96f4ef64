"""Layer tars: streaming and verifying, entries and xattr rules, unpacking into overlay form, the
layer tree."""
