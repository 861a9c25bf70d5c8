"""Pure-Python twins of the Cython modules: same names, byte-identical output."""
