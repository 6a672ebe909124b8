"""pytest plugins of the suite (load with -p tests.plugins.<name>)."""
