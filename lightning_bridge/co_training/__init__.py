"""BDLM co-training: the bridge that alternates the two side models over one shared table, its warm start,
its text anchor and its sharded form."""
