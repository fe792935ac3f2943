"""Optimisation passes on the IR: each a plain function IR -> IR."""
