"""A trained run as portable files and the recommendations read back from them without Lightning."""
