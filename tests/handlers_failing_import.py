"""A handler module whose import fails (its own code raises): a config problem, not a crash."""

raise RuntimeError("this module cannot be imported")
